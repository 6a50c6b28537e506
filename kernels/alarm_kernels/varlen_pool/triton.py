"""Triton varlen pooling: one program per tile of (output windows x features).

Each program maps its output rows to sequences by a vectorised binary search over ``cu_y`` (a run-time
loop of ``ceil(log2 N)`` steps), then walks the frames of its windows in a run-time loop bounded by the
longest window of the tile (masked past each sequence's end, so a partial last window averages or maxes
only the frames present). ``ratio`` and the number of sequences are run-time arguments: no new compile
per ratio or batch size, and a huge ratio costs nothing at compile time. The backward uses the same
tiling: every input frame belongs to exactly one window, so each grad_x element is written once (no
atomics, deterministic). Loads are cast to fp32 at once; results round to the storage dtype at the store.
"""
from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .._utils import DefaultConfig, empty_output, triton_autotune
from .reference import pooled_cu_seqlens

_CONFIGS = [
    triton.Config({"BLOCK_T": 32, "BLOCK_D": 128}, num_warps=4),
    triton.Config({"BLOCK_T": 4, "BLOCK_D": 512}, num_warps=4),
    triton.Config({"BLOCK_T": 8, "BLOCK_D": 256}, num_warps=4),
    triton.Config({"BLOCK_T": 2, "BLOCK_D": 1024}, num_warps=4),
    triton.Config({"BLOCK_T": 8, "BLOCK_D": 1024}, num_warps=8),
]
# fixed configs (ALARM_KERNELS_AUTOTUNE=0): narrow features take tall tiles; otherwise 256-wide column tiles,
# which divide the model's widths (768, 1024, 1280, 2560) without a masked remainder
_DEFAULTS = (DefaultConfig(0, max_width=128), DefaultConfig(2))


@triton.jit
def _windows(cu_x_ptr, cu_y_ptr, total_y, n_seq, ratio, n_iter, BLOCK_T: tl.constexpr):
    """Rows of this program's tile, their validity, first input frame, frame count per window and the
    largest frame count of the tile."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < total_y
    rows_c = tl.minimum(rows, total_y - 1)
    lo = tl.zeros_like(rows_c)
    hi = tl.zeros_like(rows_c) + (n_seq - 1)
    for _ in range(n_iter):  # last sequence s with cu_y[s] <= row
        mid = (lo + hi + 1) // 2
        go = tl.load(cu_y_ptr + mid) <= rows_c
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid - 1)
    x_start = tl.load(cu_x_ptr + lo)
    local = (rows_c - tl.load(cu_y_ptr + lo)).to(tl.int64) * ratio
    count = tl.minimum(tl.load(cu_x_ptr + lo + 1) - x_start - local, ratio).to(tl.int32)
    count = tl.where(row_ok, count, 0)
    return rows, row_ok, x_start + local, count, tl.max(count, 0)


@triton_autotune(configs=_CONFIGS, key=["D", "MAX"], defaults=_DEFAULTS, width_arg="D")
@triton.jit
def _pool_fwd_kernel(
    x_ptr, y_ptr, cu_x_ptr, cu_y_ptr, total_y, n_seq, D, ratio, n_iter,
    MAX: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows, row_ok, first, count, longest = _windows(cu_x_ptr, cu_y_ptr, total_y, n_seq, ratio, n_iter, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    if MAX:
        acc = tl.full((BLOCK_T, BLOCK_D), float("-inf"), tl.float32)
    else:
        acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for r in range(longest):
        ok = (r < count)[:, None] & col_ok[None, :]
        v = tl.load(x_ptr + (first + r)[:, None] * D + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        if MAX:
            # NaN propagates like the reference's amax (tl.maximum's default drops it)
            acc = tl.where(ok, tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL), acc)
        else:
            acc += v
    if not MAX:
        acc = acc / count.to(tl.float32)[:, None]
    mask = row_ok[:, None] & col_ok[None, :]
    tl.store(y_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton_autotune(configs=_CONFIGS, key=["D", "MAX"], defaults=_DEFAULTS, width_arg="D")
@triton.jit
def _pool_bwd_kernel(
    gy_ptr, x_ptr, y_ptr, gx_ptr, cu_x_ptr, cu_y_ptr, total_y, n_seq, D, ratio, n_iter,
    MAX: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Mean: every frame of a window gets grad / count. Max: frames equal to the window max share the
    window's gradient evenly; the others get 0."""
    rows, row_ok, first, count, longest = _windows(cu_x_ptr, cu_y_ptr, total_y, n_seq, ratio, n_iter, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    out_off = rows.to(tl.int64)[:, None] * D + cols[None, :]
    mask = row_ok[:, None] & col_ok[None, :]
    g = tl.load(gy_ptr + out_off, mask=mask, other=0.0).to(tl.float32)
    if MAX:
        y = tl.load(y_ptr + out_off, mask=mask, other=0.0).to(tl.float32)
        ties = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
        for r in range(longest):
            ok = (r < count)[:, None] & col_ok[None, :]
            v = tl.load(x_ptr + (first + r)[:, None] * D + cols[None, :], mask=ok, other=0.0)
            ties += tl.where(ok & (v.to(tl.float32) == y), 1.0, 0.0)
        g = g / tl.maximum(ties, 1.0)
    else:
        g = g / count.to(tl.float32)[:, None]
    for r in range(longest):
        ok = (r < count)[:, None] & col_ok[None, :]
        in_off = (first + r)[:, None] * D + cols[None, :]
        if MAX:
            v = tl.load(x_ptr + in_off, mask=ok, other=0.0).to(tl.float32)
            out = tl.where(v == y, g, 0.0)
        else:
            out = g
        tl.store(gx_ptr + in_off, out.to(gx_ptr.dtype.element_ty), mask=ok)


def _grid(total_y: int, d: int):
    return lambda meta: (triton.cdiv(total_y, meta["BLOCK_T"]), triton.cdiv(d, meta["BLOCK_D"]))


def forward(x: Tensor, cu_seqlens: Tensor, ratio: int, mode: str, total_y: int = -1):
    """x ``[total, D]`` (fp32/fp16/bf16) -> (y ``[sum ceil(L_i/ratio), D]``, int32 cu_y); ``total_y`` as in
    the reference."""
    cu_y = pooled_cu_seqlens(cu_seqlens, ratio)
    total_y, d = (int(cu_y[-1]) if total_y < 0 else total_y), x.shape[1]
    y = empty_output((total_y, d), x.dtype, x.device)
    if total_y > 0 and d > 0:
        n_seq = cu_seqlens.numel() - 1
        _pool_fwd_kernel[_grid(total_y, d)](
            x, y, cu_seqlens, cu_y, total_y, n_seq, d, ratio, max(1, n_seq.bit_length()), MAX=mode == "max",
        )
    return y, cu_y


def backward(grad_y, x, y, cu_seqlens, cu_y, ratio: int, mode: str):
    """grad_x ``[total, D]`` in x's dtype (same rule as :func:`reference.backward`)."""
    total_y, d = y.shape
    grad_x = empty_output(x.shape, x.dtype, x.device)
    if total_y > 0 and d > 0:
        n_seq = cu_seqlens.numel() - 1
        _pool_bwd_kernel[_grid(total_y, d)](
            grad_y, x, y, grad_x, cu_seqlens, cu_y, total_y, n_seq, d, ratio, max(1, n_seq.bit_length()),
            MAX=mode == "max",
        )
    return grad_x

"""Triton varlen conv1d: implicit-GEMM forward, phase-split transposed-conv implicit-GEMM ``grad_x``, token-reduction
``grad_w`` (with ``grad_b`` fused), and a fused GELU-derivative pass.

Layout: x ``[total, C_in]`` and y ``[total_y, C_out]`` channels-last packed; the weight is re-laid out
once per call as ``[k, C_in, C_out]`` (forward) / ``[k, C_out, C_in]`` (grad_x) so every GEMM operand
tile is a contiguous row block. Each program maps its rows to sequences by a vectorised binary search
over the offsets (``cu_y`` for output tokens, ``cu_seqlens`` for input frames); a tap that falls outside
its sequence (the zero padding) is a masked load. GEMM operands stay in the storage dtype (fp16/bf16
tensor cores; fp32 uses exact "ieee" dots) with fp32 accumulation; epilogues run in fp32 and round once
at the store. No atomics: every output element is written by exactly one program (deterministic).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._utils import DefaultConfig, empty_output, triton_autotune
from .reference import conv_cu_seqlens, phase_offsets

_SQRT_HALF = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


def _gemm_configs(names):
    bm, bn, bk = names
    shapes = [(64, 64, 64, 4, 3), (128, 128, 32, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 128, 64, 8, 3)]
    return [triton.Config({bm: m, bn: n, bk: k}, num_warps=w, num_stages=s) for m, n, k, w, s in shapes]


# fixed configs (ALARM_KERNELS_AUTOTUNE=0): the largest tiles (128 x 128, 8 warps; 96 KiB of shared memory)
# for fp16/bf16 on sm_80+ with at least 128 output channels, else the smallest (fp32 "ieee" dots unroll
# into FMA chains; small channel counts would leave most of a large tile masked)
_GEMM_DEFAULTS = (
    DefaultConfig(0, max_width=127),
    DefaultConfig(4, dtypes=(torch.float16, torch.bfloat16), min_capability=80),
    DefaultConfig(0),
)
_DW_DEFAULTS = (
    DefaultConfig(0, max_width=127),
    DefaultConfig(3, dtypes=(torch.float16, torch.bfloat16), min_capability=80),
    DefaultConfig(0),
)


@triton.jit
def _find_seq(cu, idx, n_seq, n_iter):
    """Vectorised binary search: the last s in [0, n_seq) with cu[s] <= idx (the sequence holding idx);
    ``n_iter = bit_length(n_seq)`` steps, a run-time bound (no recompile per batch size)."""
    lo = tl.zeros_like(idx)
    hi = tl.zeros_like(idx) + (n_seq - 1)
    for _ in range(n_iter):
        mid = (lo + hi + 1) // 2
        go = tl.load(cu + mid) <= idx
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid - 1)
    return lo


@triton_autotune(
    configs=_gemm_configs(("BLOCK_M", "BLOCK_N", "BLOCK_K")), key=["C_IN", "C_OUT"], defaults=_GEMM_DEFAULTS,
    width_arg="C_OUT",
)
@triton.jit
def _fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, pre_ptr, cu_x_ptr, cu_y_ptr, total_y, n_seq, n_iter, C_IN, C_OUT,
    K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr,
    HAS_BIAS: tl.constexpr, GELU: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < total_y
    rows_c = tl.minimum(rows, total_y - 1)
    seq = _find_seq(cu_y_ptr, rows_c, n_seq, n_iter)
    x_start = tl.load(cu_x_ptr + seq)
    length = tl.load(cu_x_ptr + seq + 1) - x_start
    base = (rows_c - tl.load(cu_y_ptr + seq)) * STRIDE - PAD
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < C_OUT
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for j in tl.static_range(K):
        pos = base + j
        ok = row_ok & (pos >= 0) & (pos < length)
        x_rows = (x_start + pos).to(tl.int64) * C_IN
        for c0 in range(0, C_IN, BLOCK_K):
            ck = c0 + tl.arange(0, BLOCK_K)
            ck_ok = ck < C_IN
            a = tl.load(x_ptr + x_rows[:, None] + ck[None, :], mask=ok[:, None] & ck_ok[None, :], other=0.0)
            w_rows = (j * C_IN + ck).to(tl.int64) * C_OUT
            b = tl.load(w_ptr + w_rows[:, None] + cols[None, :], mask=ck_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out_off = rows.to(tl.int64)[:, None] * C_OUT + cols[None, :]
    out_mask = row_ok[:, None] & col_ok[None, :]
    if GELU:
        tl.store(pre_ptr + out_off, acc.to(pre_ptr.dtype.element_ty), mask=out_mask)
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * _SQRT_HALF))
    tl.store(y_ptr + out_off, acc.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton_autotune(
    configs=_gemm_configs(("BLOCK_M", "BLOCK_N", "BLOCK_K")), key=["C_IN", "C_OUT"], defaults=_GEMM_DEFAULTS,
    width_arg="C_IN",
)
@triton.jit
def _dx_kernel(
    g_ptr, w_ptr, dx_ptr, cu_x_ptr, cu_y_ptr, cu_ph_ptr, n_seq, n_iter, C_IN, C_OUT,
    K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_x[i, ci] = sum_{j, co} grad_pre[t, co] * w[j, co, ci] over taps j with t*STRIDE - PAD + j = i.

    Input frames are split by phase ph = (i_local + PAD) % STRIDE (program axis 2): a frame of phase ph
    is reached only by taps j = ph, ph + STRIDE, ..., so no tile multiplies by taps that cannot hit it
    (a strided conv's transposed GEMM does 1/STRIDE of the dense work). ``cu_ph [STRIDE, n_seq + 1]``
    holds each phase's per-sequence frame offsets."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    ph = tl.program_id(2)
    cu_ph = cu_ph_ptr + ph * (n_seq + 1)
    ph_total = tl.load(cu_ph + n_seq)
    if pid_m * BLOCK_M >= ph_total:
        return
    q = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = q < ph_total
    q_c = tl.minimum(q, ph_total - 1)
    seq = _find_seq(cu_ph, q_c, n_seq, n_iter)
    first = ((ph - PAD) % STRIDE + STRIDE) % STRIDE
    local = first + (q_c - tl.load(cu_ph + seq)) * STRIDE
    rows = tl.load(cu_x_ptr + seq) + local
    y_start = tl.load(cu_y_ptr + seq)
    out_len = tl.load(cu_y_ptr + seq + 1) - y_start
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < C_IN
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for jj in tl.static_range((K + STRIDE - 1) // STRIDE):
        j = ph + jj * STRIDE
        num = local + PAD - j
        t = num // STRIDE
        ok = row_ok & (j < K) & (num >= 0) & (t < out_len)
        g_rows = (y_start + t).to(tl.int64) * C_OUT
        for c0 in range(0, C_OUT, BLOCK_K):
            ck = c0 + tl.arange(0, BLOCK_K)
            ck_ok = ck < C_OUT
            a = tl.load(g_ptr + g_rows[:, None] + ck[None, :], mask=ok[:, None] & ck_ok[None, :], other=0.0)
            w_rows = (j * C_OUT + ck).to(tl.int64) * C_IN
            b = tl.load(
                w_ptr + w_rows[:, None] + cols[None, :], mask=(ck_ok & (j < K))[:, None] & col_ok[None, :], other=0.0
            )
            acc = tl.dot(a, b, acc, input_precision=DOT_PREC)
    out_off = rows.to(tl.int64)[:, None] * C_IN + cols[None, :]
    tl.store(dx_ptr + out_off, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton_autotune(
    configs=[
        triton.Config({"BLOCK_CO": 64, "BLOCK_CI": 64, "BLOCK_T": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_CO": 128, "BLOCK_CI": 64, "BLOCK_T": 32}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_CO": 64, "BLOCK_CI": 128, "BLOCK_T": 32}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_CO": 128, "BLOCK_CI": 128, "BLOCK_T": 32}, num_warps=8, num_stages=3),
    ],
    key=["C_IN", "C_OUT"],
    defaults=_DW_DEFAULTS,
    width_arg="C_OUT",
)
@triton.jit
def _dw_kernel(
    g_ptr, x_ptr, dw_ptr, db_ptr, row_map_ptr, total_y, rows_per_split, C_IN, C_OUT,
    K: tl.constexpr, DOT_PREC: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Split-K weight gradient: program (co tile, ci tile, split * K + j) sums, over the output tokens t of its
    split, grad_pre[t, co] * x[first[t] + j, ci] into fp32 partials ``dw [splits, K, C_out, C_in]``; programs
    with ci tile 0 and j = 0 also write ``db [splits, C_out]`` = sum_t grad_pre. ``row_map [3, total_y]``
    holds per token the input frame of tap 0 and its sequence's bounds (precomputed: no search in the loop).
    The caller sums the partials over splits in a fixed order (deterministic, no atomics)."""
    pid_co = tl.program_id(0)
    pid_ci = tl.program_id(1)
    split = tl.program_id(2) // K
    j = tl.program_id(2) % K
    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = co < C_OUT
    ci = pid_ci * BLOCK_CI + tl.arange(0, BLOCK_CI)
    ci_ok = ci < C_IN
    acc = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    db = tl.zeros((BLOCK_CO,), dtype=tl.float32)
    t_begin = split * rows_per_split
    t_end = tl.minimum(t_begin + rows_per_split, total_y)
    for t0 in range(t_begin, t_end, BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        row_ok = rows < t_end
        src = tl.load(row_map_ptr + rows, mask=row_ok, other=0) + j
        lo = tl.load(row_map_ptr + total_y + rows, mask=row_ok, other=0)
        hi = tl.load(row_map_ptr + 2 * total_y + rows, mask=row_ok, other=0)
        ok = row_ok & (src >= lo) & (src < hi)
        g = tl.load(
            g_ptr + rows.to(tl.int64)[:, None] * C_OUT + co[None, :], mask=row_ok[:, None] & co_ok[None, :], other=0.0
        )
        xv = tl.load(
            x_ptr + src.to(tl.int64)[:, None] * C_IN + ci[None, :], mask=ok[:, None] & ci_ok[None, :], other=0.0,
        )
        acc = tl.dot(tl.trans(g), xv, acc, input_precision=DOT_PREC)
        db += tl.sum(g.to(tl.float32), axis=0)
    dw_off = ((split * K + j) * C_OUT + co.to(tl.int64))[:, None] * C_IN + ci[None, :]
    tl.store(dw_ptr + dw_off, acc, mask=co_ok[:, None] & ci_ok[None, :])
    tl.store(db_ptr + split * C_OUT + co, db, mask=co_ok & (pid_ci == 0) & (j == 0))


@triton.jit
def _gelu_grad_kernel(gy_ptr, pre_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """grad_pre = grad_y * (Phi(z) + z * phi(z)), z the saved pre-activation."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gy = tl.load(gy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(pre_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    d = 0.5 * (1.0 + tl.math.erf(z * _SQRT_HALF)) + z * tl.exp(-0.5 * z * z) * _INV_SQRT_2PI
    tl.store(out_ptr + offs, (gy * d).to(out_ptr.dtype.element_ty), mask=mask)


def _n_iter(n_seq: int) -> int:
    return max(1, int(n_seq).bit_length())


def _dot_prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


# split-K of the weight gradient: about this many output tokens per split, at most this many splits, and fp32
# partials of at most this many bytes (the partials are [splits, k, C_out, C_in])
_DW_TOKENS_PER_SPLIT = 2048
_DW_MAX_SPLITS = 16
_DW_PARTIAL_BYTES = 128 * 2**20


def dw_splits(total_y: int, weight_numel: int) -> int:
    """Number of token splits of the weight-gradient reduction (enough programs to fill a GPU when the weight
    is small and the batch long; bounded partial memory)."""
    by_tokens = triton.cdiv(total_y, _DW_TOKENS_PER_SPLIT)
    by_memory = max(1, _DW_PARTIAL_BYTES // (4 * max(1, weight_numel)))
    return max(1, min(by_tokens, by_memory, _DW_MAX_SPLITS))


def row_map(cu_seqlens: Tensor, cu_y: Tensor, total_y: int, stride: int, padding: int) -> Tensor:
    """int32 ``[3, total_y]``: per output token, the input frame of tap 0 (may lie outside its sequence) and its
    sequence's first and past-the-end frames. Device ops only (no host sync: ``total_y`` is given)."""
    n_seq = cu_y.numel() - 1
    out_len = (cu_y[1:] - cu_y[:-1]).long()
    seq = torch.repeat_interleave(torch.arange(n_seq, device=cu_y.device), out_len, output_size=total_y)
    t = torch.arange(total_y, device=cu_y.device)
    lo = cu_seqlens[:-1].long()[seq]
    first = lo + (t - cu_y[:-1].long()[seq]) * stride - padding
    return torch.stack([first, lo, cu_seqlens[1:].long()[seq]]).to(torch.int32)


def forward(
    x: Tensor, cu_seqlens: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int, activation: str,
    total_y: int = -1, max_len: int = -1,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`reference.forward`: ``(y [total_y, C_out], cu_y, pre)``, pre the saved
    pre-activation for GELU (empty ``[0, C_out]`` otherwise). x, weight, bias fp32/fp16/bf16. ``total_y``: the
    output token count when known on the host (-1: read it); ``max_len`` is unused."""
    c_out, c_in, k = weight.shape
    cu_y = conv_cu_seqlens(cu_seqlens, k, stride, padding)
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    gelu = activation == "gelu"
    y = empty_output((total_y, c_out), x.dtype, x.device)
    pre = empty_output((total_y if gelu else 0, c_out), x.dtype, x.device)
    if total_y == 0:
        return y, cu_y, pre
    n_seq = cu_seqlens.numel() - 1
    w_t = weight.permute(2, 1, 0).contiguous()  # [k, C_in, C_out]
    grid = lambda meta: (triton.cdiv(total_y, meta["BLOCK_M"]), triton.cdiv(c_out, meta["BLOCK_N"]))  # noqa: E731
    _fwd_kernel[grid](
        x, w_t, bias if bias is not None else w_t, y, pre if gelu else y, cu_seqlens, cu_y, total_y, n_seq,
        _n_iter(n_seq), c_in, c_out, K=k, STRIDE=stride, PAD=padding, HAS_BIAS=bias is not None, GELU=gelu,
        DOT_PREC=_dot_prec(x.dtype),
    )
    return y, cu_y, pre


def backward(
    grad_y: Tensor,
    x: Tensor,
    cu_seqlens: Tensor,
    cu_y: Tensor,
    weight: Tensor,
    pre: Tensor,
    stride: int,
    padding: int,
    activation: str,
    need_dx: bool,
    need_dw: bool,
    max_len: int = -1,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`reference.backward`: ``(grad_x, grad_w, grad_b)``; grad_x / grad_w are
    empty (first dim 0) when not requested. GELU uses the saved pre-activation (no recompute). grad_w is a
    deterministic split-K reduction (:func:`dw_splits`). No host sync."""
    c_out, c_in, k = weight.shape
    total, total_y = x.shape[0], grad_y.shape[0]
    n_seq = cu_seqlens.numel() - 1
    grad_x = empty_output((total if need_dx else 0, c_in), x.dtype, x.device)
    grad_w = empty_output((c_out if need_dw else 0, c_in, k), x.dtype, x.device)
    grad_b = empty_output((c_out,), x.dtype, x.device)
    if total_y == 0:
        grad_x.zero_()
        grad_w.zero_()
        grad_b.zero_()
        return grad_x, grad_w, grad_b
    grad_pre = grad_y
    if activation == "gelu":
        grad_pre = torch.empty_like(grad_y)
        n = grad_y.numel()
        _gelu_grad_kernel[(triton.cdiv(n, 1024),)](grad_y, pre, grad_pre, n, BLOCK=1024)
    prec = _dot_prec(x.dtype)
    if need_dx:
        w_t = weight.permute(2, 0, 1).contiguous()  # [k, C_out, C_in]
        rows_per_phase = min(total, total // stride + n_seq)  # upper bound; surplus programs exit at once
        grid = lambda meta: (  # noqa: E731
            triton.cdiv(rows_per_phase, meta["BLOCK_M"]), triton.cdiv(c_in, meta["BLOCK_N"]), stride
        )
        _dx_kernel[grid](
            grad_pre, w_t, grad_x, cu_seqlens, cu_y, phase_offsets(cu_seqlens, stride, padding), n_seq,
            _n_iter(n_seq), c_in, c_out, K=k, STRIDE=stride, PAD=padding, DOT_PREC=prec,
        )
    if need_dw and c_in > 0:  # c_in == 0: empty grid, grad_b would never be written
        splits = dw_splits(total_y, weight.numel())
        rows_per_split = triton.cdiv(total_y, splits)
        partial_w = torch.empty((splits, k, c_out, c_in), dtype=torch.float32, device=x.device)
        partial_b = torch.empty((splits, c_out), dtype=torch.float32, device=x.device)
        grid = lambda meta: (  # noqa: E731
            triton.cdiv(c_out, meta["BLOCK_CO"]), triton.cdiv(c_in, meta["BLOCK_CI"]), splits * k
        )
        _dw_kernel[grid](
            grad_pre, x, partial_w, partial_b, row_map(cu_seqlens, cu_y, total_y, stride, padding), total_y,
            rows_per_split, c_in, c_out, K=k, DOT_PREC=prec,
        )
        grad_w.copy_(partial_w.sum(0).permute(1, 2, 0))  # [k, C_out, C_in] -> [C_out, C_in, k], fixed order
        grad_b.copy_(partial_b.sum(0))
    else:
        grad_b.copy_(grad_pre.sum(0, dtype=torch.float32))
    return grad_x, grad_w, grad_b

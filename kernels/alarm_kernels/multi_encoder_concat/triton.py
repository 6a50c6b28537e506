"""Triton multi-encoder concatenation and fused concatenation + projection.

The E streams (and their offsets) travel as tuples of pointers, one kernel argument each. An output row
finds its sequence by a binary search over ``cu_y`` (``ceil(log2 N)`` gathered loads of a tiny array),
then row ``cu_e[i] + pos`` of stream e, or zeros when ``pos`` is past that stream's length.

* concat: grid (row blocks, feature blocks); each program copies its tile of every stream (bandwidth).
* concat + projection: one GEMM ``y = concat @ W^T + b`` whose K loop walks the streams' segments of
  ``W``'s columns, gathering A's rows straight from each stream (never materializing the concatenation).
  Operands stay in the storage dtype for ``tl.dot`` (fp16/bf16 tensor cores, fp32 with IEEE precision),
  accumulation is fp32.
* backward: a per-stream map (stream row -> output row) drives gathers of ``grad_y``:
  ``grad_stream_e = grad_C[map_e, seg_e]`` with ``grad_C = grad_y`` (concat) or ``grad_y @ W_e`` (a
  gathered GEMM), ``grad_W[:, seg_e] = grad_y[map_e]^T @ stream_e`` (K = the stream's rows) and
  ``grad_b = column sums of grad_y`` (row splits, then a pass over the fp32 partials). No atomics:
  every output element is written by one program (deterministic).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._utils import DefaultConfig, empty_output, triton_autotune

_COPY_CONFIGS = [
    triton.Config({"BLOCK_M": 16, "BLOCK_D": 256}, num_warps=4),
    triton.Config({"BLOCK_M": 8, "BLOCK_D": 512}, num_warps=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_D": 256}, num_warps=8),
    triton.Config({"BLOCK_M": 4, "BLOCK_D": 1024}, num_warps=4),
]
_GEMM_CONFIGS = [
    triton.Config({"BM": 64, "BN": 64, "BK": 32}, num_warps=4, num_stages=3),
    triton.Config({"BM": 128, "BN": 128, "BK": 64}, num_warps=8, num_stages=3),
    triton.Config({"BM": 128, "BN": 256, "BK": 64}, num_warps=8, num_stages=3),
    triton.Config({"BM": 128, "BN": 64, "BK": 64}, num_warps=4, num_stages=4),
    triton.Config({"BM": 64, "BN": 128, "BK": 64}, num_warps=4, num_stages=4),
]
# fixed configs (ALARM_KERNELS_AUTOTUNE=0). Copies: 16 x 256 tiles (256 divides 768, 1024 and 1280).
# GEMMs: 128 x 128 x 64 tiles, 8 warps, 3 stages in fp16/bf16 on sm_80+ (96 KiB of shared memory);
# 64 x 64 x 32 otherwise (fp32 "ieee" dots unroll into FMA chains; older devices have less shared memory)
_COPY_DEFAULTS = (DefaultConfig(0),)
_GEMM_DEFAULTS = (DefaultConfig(1, dtypes=(torch.float16, torch.bfloat16), min_capability=80), DefaultConfig(0))


@triton.jit
def _find_seq(cu_ptr, rows, n_seq, n_iter):
    """Sequence index of each row: the largest i < n_seq with ``cu[i] <= row`` (binary search)."""
    lo = tl.zeros_like(rows)
    hi = lo + n_seq
    for _ in range(n_iter):
        mid = (lo + hi) // 2
        go = tl.load(cu_ptr + mid) <= rows
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid)
    return lo


@triton.jit
def _tile_ids(m, n, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of this program on a 1-D grid, GROUP_M row tiles at a time (L2 reuse of B)."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(m, BM)
    tiles_n = tl.cdiv(n, BN)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % group_m, (pid % per_group) // group_m


@triton.jit
def _output_cu_kernel(cus, cu_y_ptr, n_seq, BLOCK: tl.constexpr):
    """cu_y[0] = 0, cu_y[i + 1] = sum_{j <= i} max_e len_{e,j} (one program)."""
    i = tl.arange(0, BLOCK)
    ok = i < n_seq
    longest = tl.zeros([BLOCK], dtype=tl.int32)
    for e in tl.static_range(len(cus)):
        n_e = tl.load(cus[e] + i + 1, mask=ok, other=0) - tl.load(cus[e] + i, mask=ok, other=0)
        longest = tl.maximum(longest, n_e)
    tl.store(cu_y_ptr + i + 1, tl.cumsum(longest, 0), mask=ok)
    tl.store(cu_y_ptr + i, tl.zeros([BLOCK], dtype=tl.int32), mask=i == 0)


@triton_autotune(configs=_COPY_CONFIGS, key=["d_total"], defaults=_COPY_DEFAULTS)
@triton.jit
def _concat_fwd_kernel(
    streams, cus, widths, col_offsets, cu_y_ptr, out_ptr, total_y, d_total, n_seq, n_iter,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < total_y
    seq = _find_seq(cu_y_ptr, rows, n_seq, n_iter)
    pos = rows - tl.load(cu_y_ptr + seq)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    out_rows = out_ptr + rows.to(tl.int64)[:, None] * d_total
    for e in tl.static_range(len(streams)):
        start = tl.load(cus[e] + seq)
        valid = row_ok & (pos < tl.load(cus[e] + seq + 1) - start)
        col_ok = cols < widths[e]
        src = (start + pos).to(tl.int64)
        mask = valid[:, None] & col_ok[None, :]
        x = tl.load(streams[e] + src[:, None] * widths[e] + cols[None, :], mask=mask, other=0.0)
        tl.store(out_rows + col_offsets[e] + cols[None, :], x, mask=row_ok[:, None] & col_ok[None, :])


@triton_autotune(configs=_GEMM_CONFIGS, key=["d_total", "d_out"], defaults=_GEMM_DEFAULTS)
@triton.jit
def _concat_linear_fwd_kernel(
    streams, cus, widths, col_offsets, cu_y_ptr, w_ptr, b_ptr, out_ptr, total_y, d_total, d_out, n_seq, n_iter,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    GROUP_M: tl.constexpr = 8,
):
    pid_m, pid_n = _tile_ids(total_y, d_out, BM, BN, GROUP_M)
    rows = pid_m * BM + tl.arange(0, BM)
    row_ok = rows < total_y
    seq = _find_seq(cu_y_ptr, rows, n_seq, n_iter)
    pos = rows - tl.load(cu_y_ptr + seq)
    ns = pid_n * BN + tl.arange(0, BN)
    n_ok = ns < d_out
    ks = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for e in tl.static_range(len(streams)):
        start = tl.load(cus[e] + seq)
        valid = row_ok & (pos < tl.load(cus[e] + seq + 1) - start)
        src = (start + pos).to(tl.int64)
        a_ptrs = streams[e] + src[:, None] * widths[e] + ks[None, :]
        b_ptrs = w_ptr + ns.to(tl.int64)[None, :] * d_total + col_offsets[e] + ks[:, None]
        for k0 in range(0, widths[e], BK):
            k_ok = k0 + ks < widths[e]
            a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
            a_ptrs += BK
            b_ptrs += BK
    if HAS_BIAS:
        acc += tl.load(b_ptr + ns, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + rows.to(tl.int64)[:, None] * d_out + ns[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _row_map_kernel(cu_e_ptr, cu_y_ptr, map_ptr, total_e, n_seq, n_iter, BLOCK: tl.constexpr):
    """map[s] = output row of stream row s = cu_y[i] + s - cu_e[i], i the sequence of s."""
    s = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = s < total_e
    seq = _find_seq(cu_e_ptr, s, n_seq, n_iter)
    r = tl.load(cu_y_ptr + seq) + s - tl.load(cu_e_ptr + seq)
    tl.store(map_ptr + s, r, mask=ok)


@triton_autotune(configs=_COPY_CONFIGS, key=["width", "d_total"], defaults=_COPY_DEFAULTS)
@triton.jit
def _gather_cols_kernel(
    src_ptr, map_ptr, out_ptr, total_e, width, d_total, col_offset, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr
):
    """out[s, :] = src[map[s], col_offset : col_offset + width] (concat backward)."""
    s = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    s_ok = s < total_e
    r = tl.load(map_ptr + s, mask=s_ok, other=0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = s_ok[:, None] & (cols < width)[None, :]
    g = tl.load(src_ptr + r[:, None] * d_total + col_offset + cols[None, :], mask=mask)
    tl.store(out_ptr + s.to(tl.int64)[:, None] * width + cols[None, :], g, mask=mask)


@triton_autotune(configs=_GEMM_CONFIGS, key=["width", "d_out", "d_total"], defaults=_GEMM_DEFAULTS)
@triton.jit
def _grad_stream_kernel(
    gy_ptr, map_ptr, w_ptr, out_ptr, total_e, width, d_out, d_total, col_offset,
    PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr = 8,
):
    """out[s, n] = sum_k grad_y[map[s], k] * W[k, col_offset + n]."""
    pid_m, pid_n = _tile_ids(total_e, width, BM, BN, GROUP_M)
    s = pid_m * BM + tl.arange(0, BM)
    s_ok = s < total_e
    r = tl.load(map_ptr + s, mask=s_ok, other=0).to(tl.int64)
    ns = pid_n * BN + tl.arange(0, BN)
    n_ok = ns < width
    ks = tl.arange(0, BK)
    a_ptrs = gy_ptr + r[:, None] * d_out + ks[None, :]
    b_ptrs = w_ptr + ks.to(tl.int64)[:, None] * d_total + col_offset + ns[None, :]
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, d_out, BK):
        k_ok = k0 + ks < d_out
        a = tl.load(a_ptrs, mask=s_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BK
        b_ptrs += BK * d_total
    out = out_ptr + s.to(tl.int64)[:, None] * width + ns[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=s_ok[:, None] & n_ok[None, :])


@triton_autotune(configs=_GEMM_CONFIGS, key=["width", "d_out", "d_total"], defaults=_GEMM_DEFAULTS)
@triton.jit
def _grad_weight_kernel(
    gy_ptr, map_ptr, x_ptr, gw_ptr, total_e, width, d_out, d_total, col_offset,
    PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr = 8,
):
    """gw[m, col_offset + n] = sum_s grad_y[map[s], m] * x[s, n] (K = the stream's rows)."""
    pid_m, pid_n = _tile_ids(d_out, width, BM, BN, GROUP_M)
    ms = pid_m * BM + tl.arange(0, BM)
    m_ok = ms < d_out
    ns = pid_n * BN + tl.arange(0, BN)
    n_ok = ns < width
    ks = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, total_e, BK):
        s = k0 + ks
        s_ok = s < total_e
        r = tl.load(map_ptr + s, mask=s_ok, other=0).to(tl.int64)
        a = tl.load(gy_ptr + r[None, :] * d_out + ms[:, None], mask=m_ok[:, None] & s_ok[None, :], other=0.0)
        b_ptrs = x_ptr + s.to(tl.int64)[:, None] * width + ns[None, :]
        b = tl.load(b_ptrs, mask=s_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    out = gw_ptr + ms.to(tl.int64)[:, None] * d_total + col_offset + ns[None, :]
    tl.store(out, acc.to(gw_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _column_sum_kernel(
    x_ptr, out_ptr, n_rows, n_cols, rows_per_split, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr
):
    """out[split, c] = sum of x[r, c] over the rows of this split (fp32 accumulation, fixed order)."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < n_cols
    first = tl.program_id(1) * rows_per_split
    last = tl.minimum(first + rows_per_split, n_rows)
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for r0 in range(first, last, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        mask = (r < last)[:, None] & c_ok[None, :]
        acc += tl.load(x_ptr + r.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out = out_ptr + tl.program_id(1).to(tl.int64) * n_cols + cols
    tl.store(out, tl.sum(acc, 0).to(out_ptr.dtype.element_ty), mask=c_ok)


def _column_sum(x: Tensor, out: Tensor) -> None:
    """out ``[C]`` = column sums of x ``[R, C]``: row splits into fp32 partials, then one more pass over them."""
    n_rows, n_cols = x.shape
    block_c, block_r = 128, 32
    splits = max(1, min(64, triton.cdiv(n_rows, 256)))
    rows_per_split = triton.cdiv(max(n_rows, 1), splits)
    partials = torch.empty(splits, n_cols, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n_cols, block_c), splits)
    _column_sum_kernel[grid](x, partials, n_rows, n_cols, rows_per_split, BLOCK_R=block_r, BLOCK_C=block_c)
    _column_sum_kernel[(grid[0], 1)](partials, out, splits, n_cols, splits, BLOCK_R=block_r, BLOCK_C=block_c)


def _n_iter(n_seq: int) -> int:
    """Binary-search steps that pin a row among n_seq >= 1 sequences: ceil(log2(n_seq))."""
    return (n_seq - 1).bit_length()


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _offsets(widths: Sequence[int]) -> Tuple[int, ...]:
    out, acc = [], 0
    for w in widths:
        out.append(acc)
        acc += w
    return tuple(out)


def output_offsets(cu_seqlens: Sequence[Tensor]) -> Tensor:
    """int32 ``[N+1]`` output offsets (``L_i = max_e len_{e,i}``) in one launch."""
    cu_y = torch.empty_like(cu_seqlens[0])
    n_seq = cu_y.shape[0] - 1
    if n_seq == 0:
        return cu_y.zero_()
    _output_cu_kernel[(1,)](tuple(cu_seqlens), cu_y, n_seq, BLOCK=triton.next_power_of_2(n_seq))
    return cu_y


def forward(
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    total_y: int = -1,
) -> Tuple[Tensor, Tensor]:
    """Contiguous streams ``[total_e, D_e]`` (fp32/fp16/bf16), int32 offsets -> (y, cu_y) as in the
    reference; ``total_y`` (-1: read from the device) as in ``reference.forward``."""
    cu_y = output_offsets(cu_seqlens)
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    n_seq = cu_y.shape[0] - 1
    widths = tuple(x.shape[1] for x in streams)
    d_total = sum(widths)
    first = streams[0]
    if weight is None:
        y = empty_output((total_y, d_total), first.dtype, first.device)
        if total_y and d_total:
            grid = lambda meta: (  # noqa: E731
                triton.cdiv(total_y, meta["BLOCK_M"]), triton.cdiv(max(widths), meta["BLOCK_D"])
            )
            _concat_fwd_kernel[grid](
                tuple(streams), tuple(cu_seqlens), widths, _offsets(widths), cu_y, y, total_y, d_total,
                n_seq, _n_iter(n_seq),
            )
        return y, cu_y
    d_out = weight.shape[0]
    y = empty_output((total_y, d_out), first.dtype, first.device)
    if total_y and d_out:
        grid = lambda meta: (triton.cdiv(total_y, meta["BM"]) * triton.cdiv(d_out, meta["BN"]),)  # noqa: E731
        _concat_linear_fwd_kernel[grid](
            tuple(streams), tuple(cu_seqlens), widths, _offsets(widths), cu_y, weight,
            bias if bias is not None else weight, y, total_y, d_total, d_out, n_seq, _n_iter(n_seq),
            HAS_BIAS=bias is not None, PRECISION=_precision(first.dtype),
        )
    return y, cu_y


def _row_map(cu_e: Tensor, cu_y: Tensor, total_e: int) -> Tensor:
    """int32 ``[total_e]``: output row of each stream row."""
    out = torch.empty(total_e, dtype=torch.int32, device=cu_e.device)
    if total_e:
        n_seq = cu_e.shape[0] - 1
        _row_map_kernel[(triton.cdiv(total_e, 1024),)](cu_e, cu_y, out, total_e, n_seq, _n_iter(n_seq), BLOCK=1024)
    return out


def backward(
    grad_y: Tensor,
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    cu_y: Tensor,
    weight: Optional[Tensor],
    stream_grads: Sequence[bool],
    need_weight_grad: bool,
    need_bias_grad: bool,
) -> List[Tensor]:
    """Same list layout as ``reference.backward``: requested stream grads, then grad_weight, grad_bias."""
    widths = [x.shape[1] for x in streams]
    offsets = _offsets(widths)
    d_total = sum(widths)
    need_maps = any(stream_grads) or need_weight_grad
    maps = [_row_map(cu, cu_y, x.shape[0]) if need_maps else None for x, cu in zip(streams, cu_seqlens, strict=True)]
    grads: List[Tensor] = []
    for e, (x, needed) in enumerate(zip(streams, stream_grads, strict=True)):
        if not needed:
            continue
        total_e, width = x.shape
        g = empty_output((total_e, width), x.dtype, x.device)
        if total_e and width:
            if weight is None:
                grid = lambda meta, total_e=total_e, width=width: (  # noqa: E731
                    triton.cdiv(total_e, meta["BLOCK_M"]), triton.cdiv(width, meta["BLOCK_D"])
                )
                _gather_cols_kernel[grid](grad_y, maps[e], g, total_e, width, d_total, offsets[e])
            else:
                d_out = weight.shape[0]
                grid = lambda meta, total_e=total_e, width=width: (  # noqa: E731
                    triton.cdiv(total_e, meta["BM"]) * triton.cdiv(width, meta["BN"]),
                )
                _grad_stream_kernel[grid](
                    grad_y, maps[e], weight, g, total_e, width, d_out, d_total, offsets[e],
                    PRECISION=_precision(x.dtype),
                )
        grads.append(g)
    if need_weight_grad:
        d_out = weight.shape[0]
        gw = empty_output(weight.shape, weight.dtype, weight.device)
        for e, x in enumerate(streams):
            total_e, width = x.shape
            if width == 0 or d_out == 0:
                continue
            grid = lambda meta, width=width: (triton.cdiv(d_out, meta["BM"]) * triton.cdiv(width, meta["BN"]),)  # noqa: E731
            _grad_weight_kernel[grid](
                grad_y, maps[e], x, gw, total_e, width, d_out, d_total, offsets[e], PRECISION=_precision(x.dtype)
            )
        grads.append(gw)
    if need_bias_grad:
        d_out = grad_y.shape[1]
        gb = empty_output((d_out,), grad_y.dtype, grad_y.device)
        if d_out:
            _column_sum(grad_y, gb)
        grads.append(gb)
    return grads

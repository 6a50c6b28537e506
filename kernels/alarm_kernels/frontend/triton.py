"""Triton front ends: framing kernel -> ``torch.fft.rfft`` (cuFFT) -> fused power / mel / floor / log kernel -> a
per-piece finishing kernel (Whisper's clamp and scaling into ``[N, M, T]``, or w2v-BERT's normalisation and
stacking).

- ``_frames_kernel``: one program per tile of frames x columns. Each frame finds its piece by a binary search over
  the frame offsets, maps its sample positions by the edge rule of :mod:`.framing` (zeros, Kaldi's mirror, or the
  centred STFT's mirror), gathers them, removes the frame's mean, applies pre-emphasis (a second, shifted gather)
  and the window, and writes the frame zero padded to ``n_fft``: one pass over the samples, no per-piece copies.
  It computes in its output's dtype: fp32, or fp64 where the front end's reference computes in float64.
- ``_mel_kernel``: a tile of frames reads the interleaved complex spectrum, squares it (or takes its magnitude) in
  fp32 and multiplies it with the filterbank by ``tl.dot`` in fp32 (``"ieee"``: no TF32), then floors and takes
  the log; with ``PEAK`` it also folds each frame's maximum into its piece's maximum (``atomic_max``: order-free,
  so deterministic).
- ``_whisper_finish_kernel``: ``(max(v, peak - 8) + 4) / 4`` written transposed into ``[N, M, T]``; frames past a
  piece's computed ones take the all-zero frame's value.
- ``_normalize_stack_kernel``: one program per (piece, band block): mean and variance (two passes, fp64
  accumulators, ddof=1), then the normalised frames written in stacked pairs.

Sizes that change per batch (frame counts, pieces, lengths) are run-time arguments; block widths derived from the
FFT size and the number of bands are constexprs (a handful of compiles).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._utils import DefaultConfig, empty_output, triton_autotune
from .filters import on_device, window
from .framing import Framing, MelSpec, offsets_of

_EDGE_CODES = {"snip": 0, "reflect": 1, "center": 2}
_LOG_CODES = {None: 0, "ln": 1, "log10": 2}
_INV_LN10 = tl.constexpr(0.43429448190325176)  # 1 / ln(10)

_FRAME_CONFIGS = [
    triton.Config({"BLOCK_F": 16}, num_warps=4),
    triton.Config({"BLOCK_F": 8}, num_warps=4),
    triton.Config({"BLOCK_F": 32}, num_warps=8),
]
_MEL_CONFIGS = [
    triton.Config({"BLOCK_F": 64, "BLOCK_K": 32}, num_warps=4),
    triton.Config({"BLOCK_F": 32, "BLOCK_K": 32}, num_warps=4),
    triton.Config({"BLOCK_F": 64, "BLOCK_K": 64}, num_warps=8),
    triton.Config({"BLOCK_F": 128, "BLOCK_K": 32}, num_warps=8),
]
_FINISH_CONFIGS = [
    triton.Config({"BLOCK_T": 64}, num_warps=4),
    triton.Config({"BLOCK_T": 32}, num_warps=4),
    triton.Config({"BLOCK_T": 128}, num_warps=8),
]
_NORM_CONFIGS = [
    triton.Config({"BLOCK_T": 128, "BLOCK_M": 16}, num_warps=4),
    triton.Config({"BLOCK_T": 64, "BLOCK_M": 32}, num_warps=4),
    triton.Config({"BLOCK_T": 256, "BLOCK_M": 16}, num_warps=8),
]
_DEFAULTS = (DefaultConfig(0),)


@triton.jit
def _piece_of(rows, cu_ptr, n_seq, n_iter):
    """For each (clamped, valid) row: the last piece ``s`` with ``cu[s] <= row`` (binary search over ``cu``)."""
    lo = tl.zeros_like(rows)
    hi = tl.zeros_like(rows) + (n_seq - 1)
    for _ in range(n_iter):
        mid = (lo + hi + 1) // 2
        go = tl.load(cu_ptr + mid) <= rows
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid - 1)
    return lo


@triton.jit
def _gather(x_ptr, base, n, p, ok, row, dtype, EDGES: tl.constexpr):
    """Samples at piece positions ``p`` (``[BF, BW]``) by the edge rule: 0 zeros outside, 1 Kaldi's mirror (edge
    repeated), 2 the centred STFT's mirror (edge not repeated, mirrored again at ``row`` when ``row > 0``)."""
    if EDGES == 1:
        period = tl.maximum(2 * n, 1)
        q = p % period
        q = tl.where(q < 0, q + period, q)
        q = tl.where(q >= n, period - 1 - q, q)
    elif EDGES == 2:
        q = tl.abs(p)
        q = tl.where((row > 0) & (q >= row), 2 * (row - 1) - q, q)
    else:
        q = p
    inside = (q >= 0) & (q < n)
    return tl.load(x_ptr + base + tl.where(inside, q, 0), mask=ok & inside, other=0.0).to(dtype)


@triton_autotune(configs=_FRAME_CONFIGS, key=["BLOCK_W", "EDGES"], defaults=_DEFAULTS)
@triton.jit
def _frames_kernel(
    x_ptr, cu_x_ptr, cu_f_ptr, win_ptr, coef_ptr, out_ptr, total_frames, n_seq, n_iter, first, shift, row, win,
    n_fft, EDGES: tl.constexpr, DC: tl.constexpr, PRE: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Computes in the output's dtype (fp32, or fp64 for an exact spectrum); ``coef_ptr``: the pre-emphasis
    coefficient in that dtype (a scalar argument would be rounded to fp32)."""
    dtype = out_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_F + tl.arange(0, BLOCK_F)
    row_ok = rows < total_frames
    rows_c = tl.minimum(rows, total_frames - 1)
    s = _piece_of(rows_c, cu_f_ptr, n_seq, n_iter)
    k = rows_c - tl.load(cu_f_ptr + s)
    base = tl.load(cu_x_ptr + s).to(tl.int64)
    n = tl.load(cu_x_ptr + s + 1) - tl.load(cu_x_ptr + s)
    cols = tl.arange(0, BLOCK_W)
    in_win = cols < win
    ok = row_ok[:, None] & in_win[None, :]
    p = (first + k * shift)[:, None] + cols[None, :]
    v = _gather(x_ptr, base[:, None], n[:, None], p, ok, row, dtype, EDGES)
    mean = tl.zeros_like(rows_c).to(dtype)
    if DC:
        mean = tl.sum(v, 1) / win
    y = v - mean[:, None]
    if PRE:  # Kaldi: y[j] -= c * y[j - 1], y[0] -= c * y[0]
        prev = _gather(x_ptr, base[:, None], n[:, None], p - (cols > 0).to(tl.int32)[None, :], ok, row, dtype, EDGES)
        y = y - tl.load(coef_ptr) * (prev - mean[:, None])
    w = tl.load(win_ptr + cols, mask=in_win, other=0.0)
    y = tl.where(ok, y * w[None, :], 0.0)
    out = out_ptr + rows.to(tl.int64)[:, None] * n_fft + cols[None, :]
    tl.store(out, y, mask=row_ok[:, None] & (cols < n_fft)[None, :])


@triton_autotune(configs=_MEL_CONFIGS, key=["n_freq", "BLOCK_M"], defaults=_DEFAULTS)
@triton.jit
def _mel_kernel(
    spec_ptr, bank_ptr, out_ptr, peak_ptr, cu_f_ptr, total_frames, n_seq, n_iter, n_freq, n_mels, floor, floor_log,
    LOG: tl.constexpr, POWER: tl.constexpr, PEAK: tl.constexpr, ROUND: tl.constexpr, BLOCK_F: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_F + tl.arange(0, BLOCK_F)
    row_ok = rows < total_frames
    mels = tl.arange(0, BLOCK_M)
    mel_ok = mels < n_mels
    acc = tl.zeros((BLOCK_F, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, n_freq, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < n_freq
        at = spec_ptr + (rows.to(tl.int64)[:, None] * n_freq + ks[None, :]) * 2
        m = row_ok[:, None] & k_ok[None, :]
        re = tl.load(at, mask=m, other=0.0)
        im = tl.load(at + 1, mask=m, other=0.0)
        if ROUND:  # the spectrum rounded to complex64, as SeamlessM4TFeatureExtractor stores it
            re = re.to(tl.float32).to(re.dtype)
            im = im.to(tl.float32).to(im.dtype)
        p = re * re + im * im  # in the spectrum's dtype (fp64 for an exact spectrum), then fp32
        if not POWER:
            p = tl.sqrt(p)
        p = p.to(tl.float32)
        b = tl.load(bank_ptr + ks[:, None] * n_mels + mels[None, :], mask=k_ok[:, None] & mel_ok[None, :], other=0.0)
        acc += tl.dot(p, b, input_precision="ieee")
    if LOG != 0:
        acc = tl.log(tl.maximum(acc, floor))
        if LOG == 2:
            acc = acc * _INV_LN10
        acc = tl.maximum(acc, floor_log)  # an all-zero frame's value is the least any frame can take
    ok = row_ok[:, None] & mel_ok[None, :]
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * n_mels + mels[None, :], acc, mask=ok)
    if PEAK:
        s = _piece_of(tl.minimum(rows, total_frames - 1), cu_f_ptr, n_seq, n_iter)
        tl.atomic_max(peak_ptr + s, tl.max(tl.where(ok, acc, floor_log), 1), mask=row_ok)


@triton_autotune(configs=_FINISH_CONFIGS, key=["BLOCK_M"], defaults=_DEFAULTS)
@triton.jit
def _whisper_finish_kernel(mel_ptr, peak_ptr, cu_f_ptr, out_ptr, n_mels, n_frames, floor_log,
                           BLOCK_T: tl.constexpr, BLOCK_M: tl.constexpr):
    s = tl.program_id(0)
    ts = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    mels = tl.arange(0, BLOCK_M)
    first = tl.load(cu_f_ptr + s)
    count = tl.load(cu_f_ptr + s + 1) - first
    peak = tl.load(peak_ptr + s)
    mel_ok = mels < n_mels
    v = tl.load(mel_ptr + (first + ts).to(tl.int64)[:, None] * n_mels + mels[None, :],
                mask=(ts < count)[:, None] & mel_ok[None, :], other=floor_log)
    y = (tl.maximum(v, peak - 8.0) + 4.0) / 4.0
    out = out_ptr + s.to(tl.int64) * n_mels * n_frames + mels[None, :] * n_frames + ts[:, None]
    tl.store(out, y, mask=(ts < n_frames)[:, None] & mel_ok[None, :])


@triton_autotune(configs=_NORM_CONFIGS, key=["n_mels"], defaults=_DEFAULTS)
@triton.jit
def _normalize_stack_kernel(mel_ptr, cu_f_ptr, cu_o_ptr, out_ptr, n_mels, eps, STRIDE: tl.constexpr,
                            BLOCK_T: tl.constexpr, BLOCK_M: tl.constexpr):
    s = tl.program_id(0)
    mels = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mel_ok = mels < n_mels
    first = tl.load(cu_f_ptr + s)
    count = tl.load(cu_f_ptr + s + 1) - first
    out_first = tl.load(cu_o_ptr + s).to(tl.int64)
    total = tl.zeros((BLOCK_M,), dtype=tl.float64)  # sums over thousands of frames: fp64 accumulators
    for t0 in range(0, count, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        v = tl.load(mel_ptr + (first + ts).to(tl.int64)[:, None] * n_mels + mels[None, :],
                    mask=(ts < count)[:, None] & mel_ok[None, :], other=0.0)
        total += tl.sum(v.to(tl.float64), 0)
    mean = total / tl.maximum(count, 1).to(tl.float64)  # a piece of < 2 frames yields no row
    squares = tl.zeros((BLOCK_M,), dtype=tl.float64)
    for t0 in range(0, count, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        m = (ts < count)[:, None] & mel_ok[None, :]
        v = tl.load(mel_ptr + (first + ts).to(tl.int64)[:, None] * n_mels + mels[None, :], mask=m, other=0.0)
        d = tl.where(m, v.to(tl.float64) - mean[None, :], 0.0)
        squares += tl.sum(d * d, 0)
    scale = 1.0 / tl.sqrt(squares / tl.maximum(count - 1, 1).to(tl.float64) + eps)
    kept = count // STRIDE * STRIDE
    for t0 in range(0, kept, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        m = (ts < kept)[:, None] & mel_ok[None, :]
        v = tl.load(mel_ptr + (first + ts).to(tl.int64)[:, None] * n_mels + mels[None, :], mask=m, other=0.0)
        y = ((v.to(tl.float64) - mean[None, :]) * scale[None, :]).to(tl.float32)
        out = out_ptr + (out_first + ts // STRIDE)[:, None] * (STRIDE * n_mels) + ((ts % STRIDE) * n_mels)[:, None] \
            + mels[None, :]
        tl.store(out, y, mask=m)


def _search_steps(n_seq: int) -> int:
    return max(1, n_seq.bit_length())


def _mel(x: Tensor, cu_x: Tensor, counts: Sequence[int], framing: Framing, spec: MelSpec, floor_log: float,
         peak: Optional[Tensor]):
    """(packed mel ``[F, M]`` fp32, int32 frame offsets ``[N+1]`` on x's device); frames, FFT and spectrum in
    ``spec.fft_dtype`` (default fp32), the filterbank product and the log in fp32."""
    cu_f = torch.tensor(offsets_of(counts), dtype=torch.int32, device=x.device)
    total, n_seq = sum(counts), len(counts)
    n_mels = spec.n_mels
    mel = empty_output((total, n_mels), torch.float32, x.device)
    if total == 0:
        return mel, cu_f
    n_fft, dtype = framing.n_fft, spec.fft_dtype or torch.float32
    frames = empty_output((total, n_fft), dtype, x.device)
    w = on_device(window(framing.window, framing.win, framing.blackman_coeff), dtype, x.device)
    coef = torch.tensor([framing.preemphasis], dtype=dtype, device=x.device)
    _frames_kernel[lambda meta: (triton.cdiv(total, meta["BLOCK_F"]),)](
        x, cu_x, cu_f, w, coef, frames, total, n_seq, _search_steps(n_seq), framing.first, framing.shift,
        framing.row or 0, framing.win, n_fft, EDGES=_EDGE_CODES[framing.edges], DC=framing.remove_dc,
        PRE=framing.preemphasis != 0.0, BLOCK_W=triton.next_power_of_2(n_fft),
    )
    spectrum = torch.view_as_real(torch.fft.rfft(frames))
    bank = on_device(spec.bank, torch.float32, x.device, spec.scale)
    _mel_kernel[lambda meta: (triton.cdiv(total, meta["BLOCK_F"]),)](
        spectrum, bank, mel, peak if peak is not None else mel, cu_f, total, n_seq, _search_steps(n_seq),
        spectrum.shape[1], n_mels, float(spec.floor), float(floor_log), LOG=_LOG_CODES[spec.log],
        POWER=spec.use_power, PEAK=peak is not None, ROUND=spec.round_spectrum and dtype == torch.float64,
        BLOCK_M=max(16, triton.next_power_of_2(n_mels)),
    )
    return mel, cu_f


def log_mel_frames(x: Tensor, cu_x: Tensor, offsets: Sequence[int], counts: Sequence[int], framing: Framing,
                   spec: MelSpec) -> Tensor:
    """Same contract as :func:`.reference.log_mel_frames` (fp32 waveforms; the product and log in fp32)."""
    return _mel(x, cu_x, counts, framing, spec, float("-inf"), None)[0]


def normalize_stack(mel: Tensor, counts: Sequence[int], stride: int, eps: float) -> Tensor:
    """Same contract as :func:`.reference.normalize_stack` (fp32; fp64 statistics)."""
    n_mels = mel.shape[1]
    stacked = [c // stride for c in counts]
    out = empty_output((sum(stacked), stride * n_mels), torch.float32, mel.device)
    if out.shape[0] == 0:
        return out
    cu_f = torch.tensor(offsets_of(counts), dtype=torch.int32, device=mel.device)
    cu_o = torch.tensor(offsets_of(stacked), dtype=torch.int32, device=mel.device)
    _normalize_stack_kernel[lambda meta: (len(counts), triton.cdiv(n_mels, meta["BLOCK_M"]))](
        mel, cu_f, cu_o, out, n_mels, float(eps), STRIDE=stride,
    )
    return out


def whisper(x: Tensor, cu_x: Tensor, offsets: Sequence[int], counts: Sequence[int], framing: Framing, spec: MelSpec,
            floor_log: float, n_frames: int) -> Tensor:
    """Same contract as :func:`.reference.whisper` (fp32 waveforms)."""
    n, n_mels = len(counts), spec.n_mels
    peak = torch.full((n,), floor_log, dtype=torch.float32, device=x.device)
    mel, cu_f = _mel(x, cu_x, counts, framing, spec, floor_log, peak)
    out = empty_output((n, n_mels, n_frames), torch.float32, x.device)
    if n and n_frames:
        _whisper_finish_kernel[lambda meta: (n, triton.cdiv(n_frames, meta["BLOCK_T"]))](
            mel, peak, cu_f, out, n_mels, n_frames, float(floor_log), BLOCK_M=max(16, triton.next_power_of_2(n_mels)),
        )
    return out

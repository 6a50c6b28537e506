"""Vectorised PyTorch front ends: the CPU default (``backend="reference"``) and the float64 oracle.

No per-frame Python: each piece's samples (with its edges, :mod:`.framing`) are cut into frames by one strided
view, all frames of the batch are conditioned together, transformed by one batched ``torch.fft.rfft`` (pocketfft
or MKL on CPU, cuFFT on CUDA tensors) and mapped to mel bands by one matmul with the cached filterbank. Loops run
over pieces only (a few small edge gathers each). On CPU tensors w2v-BERT's exact path runs its spectrum-to-log
steps and its normalisation with NumPy, the extractor's own arithmetic (see :func:`log_mel_frames`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .filters import on_device, window
from .framing import Framing, MelSpec


def _edge_values(piece: Tensor, positions: Tensor, framing: Framing) -> Tensor:
    """Values of the positions outside the piece (and any inside), by the framing's edge rule."""
    n = piece.numel()
    if framing.edges == "reflect":
        q = positions % (2 * n)
        return piece[torch.where(q >= n, 2 * n - 1 - q, q)]
    q = positions
    if framing.edges == "center":
        q = q.abs()
        if framing.row is not None:
            q = torch.where(q >= framing.row, 2 * (framing.row - 1) - q, q)
    inside = (q >= 0) & (q < n)
    if n == 0:
        return piece.new_zeros(positions.shape)
    return torch.where(inside, piece[q.clamp(0, n - 1)], piece.new_zeros(()))


def _piece_parts(piece: Tensor, frames: int, framing: Framing) -> List[Tensor]:
    """The samples a piece's frames cover, edges included, as consecutive parts: ``(frames - 1) * shift + win`` of
    them, then zeros up to a multiple of ``shift`` (so that the next piece's frames start on a row of the batch's
    strided view)."""
    start = framing.first
    end = start + (frames - 1) * framing.shift + framing.win
    a = min(max(start, 0), end)  # the part inside the piece is [a, b)
    b = max(min(end, piece.numel()), a)
    parts = [piece[a:b]]
    if start < a:
        parts.insert(0, _edge_values(piece, torch.arange(start, a, device=piece.device), framing))
    if b < end:
        parts.append(_edge_values(piece, torch.arange(b, end, device=piece.device), framing))
    spare = -(end - start) % framing.shift
    if spare:
        parts.append(piece.new_zeros(spare))
    return parts


def frames(x: Tensor, offsets: Sequence[int], counts: Sequence[int], framing: Framing,
           dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """Packed waveform ``[total]`` -> (conditioned frames ``[R, n_fft]`` in ``dtype`` (default x's), int64
    ``[sum counts]`` rows that are the pieces' frames in order; the other ``R - sum counts`` rows lie between
    pieces and are to be dropped).

    All pieces' samples go into one buffer with each piece starting at a multiple of ``shift``, so one strided view
    holds every frame. Pre-emphasis runs once on that buffer (a frame's first sample is fixed afterwards, Kaldi uses
    it as its own predecessor); DC removal subtracts ``(1 - c) * mean`` (the mean of the frame before pre-emphasis).
    """
    win, shift, n_fft = framing.win, framing.shift, framing.n_fft
    dtype = dtype or x.dtype
    pieces = [(x[a:b], c) for a, b, c in zip(offsets[:-1], offsets[1:], counts, strict=True) if c > 0]
    if not pieces:
        return x.new_zeros(0, n_fft, dtype=dtype), torch.zeros(0, dtype=torch.int64, device=x.device)
    parts = [_piece_parts(p, c, framing) for p, c in pieces]
    sizes = [sum(q.numel() for q in ps) for ps in parts]
    first_rows = [0]
    for size in sizes[:-1]:
        first_rows.append(first_rows[-1] + size // shift)
    rows = torch.cat([torch.arange(r, r + c, device=x.device) for r, (_, c) in zip(first_rows, pieces, strict=True)])
    buf = torch.empty(sum(sizes), dtype=dtype, device=x.device)  # one copy of the samples, in the FFT's dtype
    at = 0
    for q in (q for ps in parts for q in ps):
        buf[at:at + q.numel()] = q
        at += q.numel()
    c = framing.preemphasis
    source = buf
    if c:
        source = torch.empty_like(buf)
        torch.sub(buf[1:], buf[:-1], alpha=c, out=source[1:])
        source[:1] = buf[:1]
    view = source.unfold(0, win, shift)
    w = on_device(window(framing.window, win, framing.blackman_coeff), dtype, x.device)
    out = buf.new_empty(view.shape[0], n_fft)
    out[:, win:] = 0.0
    mean = buf.unfold(0, win, shift).mean(dim=1) if framing.remove_dc else None
    if mean is not None:
        torch.sub(view, mean[:, None], alpha=1.0 - c, out=out[:, :win])
        out[:, :win].mul_(w)
    else:
        torch.mul(view, w, out=out[:, :win])
    if c:  # a frame's first sample is its own predecessor
        first = buf[::shift][: view.shape[0]]
        out[:, 0] = (1.0 - c) * (first if mean is None else first - mean) * w[0]
    return out, rows


def log_mel_frames(x: Tensor, cu_x: Tensor, offsets: Sequence[int], counts: Sequence[int], framing: Framing,
                   mel: MelSpec) -> Tensor:
    """Packed waveform ``x`` (offsets: ``cu_x`` on its device, ``offsets`` on the host) -> packed mel energies
    ``[sum counts, n_mels]`` in x's dtype, computed in ``mel.fft_dtype`` (default x's) up to the log.

    With ``mel.round_spectrum`` on CPU tensors the spectrum onwards is SeamlessM4TFeatureExtractor's own arithmetic
    in NumPy (rfft in float64 stored as complex64, ``np.abs(., dtype=float64) ** 2``, float64 product and log), which
    reproduces its log-mel bit for bit (and runs 2-3x faster than torch's float64 CPU kernels for the same steps)."""
    dtype = mel.fft_dtype or x.dtype
    conditioned, rows = frames(x, offsets, counts, framing, dtype)
    bank = on_device(mel.bank, dtype, x.device, mel.scale)
    if mel.round_spectrum and dtype == torch.float64 and x.device.type == "cpu":
        spectrum = np.fft.rfft(conditioned.numpy()).astype(np.complex64)
        power = np.abs(spectrum, dtype=np.float64) ** (2.0 if mel.use_power else 1.0)
        out = torch.from_numpy(power @ bank.numpy())[rows]
    else:
        spec = torch.fft.rfft(conditioned)
        if mel.round_spectrum:  # components rounded to float32, squared and summed in the FFT's dtype
            parts = torch.view_as_real(spec).to(torch.float32).to(dtype).square_()
            power = parts[..., 0] + parts[..., 1]
        else:
            power = torch.addcmul(spec.real.square(), spec.imag, spec.imag)
        if not mel.use_power:
            power = power.sqrt_()
        out = (power @ bank)[rows]
    if mel.log is not None:
        out = out.clamp_(min=mel.floor)
        out = out.log_() if mel.log == "ln" else out.log10_()
    return out.to(x.dtype)


def _piece_index(counts: Sequence[int], device) -> Tensor:
    counts_t = torch.tensor(counts, dtype=torch.int64, device=device)
    return torch.repeat_interleave(torch.arange(len(counts), device=device), counts_t), counts_t


def whisper(x: Tensor, cu_x: Tensor, offsets: Sequence[int], counts: Sequence[int], framing: Framing, spec: MelSpec,
            floor_log: float, n_frames: int) -> Tensor:
    """Whisper's log-mel ``[N, M, n_frames]``: the log10 mel of each piece's ``count`` frames, frames past them at
    ``floor_log`` (an all-zero frame's value), then per piece ``(max(v, max_piece - 8) + 4) / 4``."""
    mel = log_mel_frames(x, cu_x, offsets, counts, framing, spec)
    n, m = len(counts), mel.shape[1]
    piece, counts_t = _piece_index(counts, mel.device)
    peak = mel.new_full((n,), floor_log)
    if mel.shape[0]:
        peak = peak.scatter_reduce(0, piece, mel.amax(dim=1), reduce="amax")
    out = mel.new_full((n, n_frames, m), floor_log)
    local = torch.arange(mel.shape[0], device=mel.device) - (torch.cumsum(counts_t, 0) - counts_t)[piece]
    keep = local < n_frames
    out[piece[keep], local[keep]] = mel[keep]
    out = (torch.maximum(out, peak[:, None, None] - 8.0) + 4.0) / 4.0
    return out.transpose(1, 2).contiguous()


def normalize_stack(mel: Tensor, counts: Sequence[int], stride: int, eps: float) -> Tensor:
    """Packed features ``[sum counts, M]`` -> ``[sum (count // stride), stride * M]``: each piece normalised per band
    over its frames (mean, variance with ddof=1, ``(v - mean) / sqrt(var + eps)``), then every ``stride`` consecutive
    frames concatenated (a trailing partial group is dropped).

    On CPU tensors each piece is normalised by NumPy's own reductions in mel's dtype on a column-major copy: the
    arithmetic of SeamlessM4TFeatureExtractor, whose float32 rounding (pairwise sums per band) this reproduces
    bit for bit. Elsewhere the statistics are float64 (index sums on the device), the result in mel's dtype."""
    m = mel.shape[1]
    if mel.device.type == "cpu":
        parts = []
        for piece in torch.split(mel, list(counts)):
            kept = piece.shape[0] // stride * stride
            if kept:
                v = np.asfortranarray(piece.numpy())
                y = (v - np.expand_dims(v.mean(0), 0)) / np.sqrt(np.expand_dims(v.var(0, ddof=1), 0) + eps)
                parts.append(torch.from_numpy(np.ascontiguousarray(y[:kept])).reshape(-1, stride * m))
        return torch.cat(parts) if parts else mel.new_zeros(0, stride * m)
    n = len(counts)
    piece, counts_t = _piece_index(counts, mel.device)
    wide = mel.double()  # the statistics in float64 (sums over thousands of frames)
    mean = wide.new_zeros(n, m).index_add_(0, piece, wide) / counts_t.clamp(min=1)[:, None]
    dev = wide - mean[piece]
    var = wide.new_zeros(n, m).index_add_(0, piece, dev * dev) / (counts_t - 1)[:, None]
    y = (dev / torch.sqrt(var[piece] + eps)).to(mel.dtype)
    local = torch.arange(mel.shape[0], device=mel.device) - (torch.cumsum(counts_t, 0) - counts_t)[piece]
    keep = local < (counts_t // stride * stride)[piece]
    return y[keep].reshape(-1, stride * m)

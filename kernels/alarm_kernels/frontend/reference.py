"""Vectorised PyTorch front ends: the CPU default (``backend="reference"``) and the float64 oracle.

No per-frame Python: each piece's samples (with its edges, :mod:`.framing`) are cut into frames by one strided
view, all frames of the batch are conditioned together, transformed by one batched ``torch.fft.rfft`` (pocketfft
or MKL on CPU, cuFFT on CUDA tensors) and mapped to mel bands by one matmul with the cached filterbank. Loops run
over pieces only (a few small edge gathers each).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .filters import on_device, window
from .framing import Framing


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


def _piece_samples(piece: Tensor, frames: int, framing: Framing) -> Tensor:
    """The samples a piece's frames cover, edges included: ``(frames - 1) * shift + win`` of them, zero padded to a
    multiple of ``shift`` (so that the next piece's frames start on a row of the batch's strided view)."""
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
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def frames(x: Tensor, offsets: Sequence[int], counts: Sequence[int], framing: Framing) -> Tuple[Tensor, Tensor]:
    """Packed waveform ``[total]`` -> (conditioned frames ``[R, n_fft]``, int64 ``[sum counts]`` rows that are the
    pieces' frames in order; the other ``R - sum counts`` rows lie between pieces and are to be dropped).

    All pieces' samples go into one buffer with each piece starting at a multiple of ``shift``, so one strided view
    holds every frame. Pre-emphasis runs once on that buffer (a frame's first sample is fixed afterwards, Kaldi uses
    it as its own predecessor); DC removal subtracts ``(1 - c) * mean`` (the mean of the frame before pre-emphasis).
    """
    win, shift, n_fft = framing.win, framing.shift, framing.n_fft
    pieces = [(x[a:b], c) for a, b, c in zip(offsets[:-1], offsets[1:], counts, strict=True) if c > 0]
    if not pieces:
        return x.new_zeros(0, n_fft), torch.zeros(0, dtype=torch.int64, device=x.device)
    segments = [_piece_samples(p, c, framing) for p, c in pieces]
    first_rows = [0]
    for s in segments[:-1]:
        first_rows.append(first_rows[-1] + s.numel() // shift)
    rows = torch.cat([torch.arange(r, r + c, device=x.device) for r, (_, c) in zip(first_rows, pieces, strict=True)])
    buf = torch.cat(segments) if len(segments) > 1 else segments[0]
    c = framing.preemphasis
    source = buf
    if c:
        source = torch.empty_like(buf)
        torch.sub(buf[1:], buf[:-1], alpha=c, out=source[1:])
        source[:1] = buf[:1]
    view = source.unfold(0, win, shift)
    w = on_device(window(framing.window, win, framing.blackman_coeff), x.dtype, x.device)
    out = x.new_empty(view.shape[0], n_fft)
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
                   bank: Tensor, log: Optional[str], floor: float, use_power: bool = True) -> Tensor:
    """Packed waveform ``x`` (offsets: ``cu_x`` on its device, ``offsets`` on the host) -> packed mel energies
    ``[sum counts, n_mels]``: ``|rfft|^2`` (or ``|rfft|``) of every frame times ``bank`` (``[n_fft // 2 + 1,
    n_mels]`` in x's dtype); with ``log`` ("ln" / "log10") the log of ``max(energy, floor)``."""
    conditioned, rows = frames(x, offsets, counts, framing)
    spec = torch.fft.rfft(conditioned)
    power = torch.addcmul(spec.real.square(), spec.imag, spec.imag)
    if not use_power:
        power = power.sqrt_()
    mel = (power @ bank)[rows]
    if log is None:
        return mel
    mel = mel.clamp_(min=floor)
    return mel.log_() if log == "ln" else mel.log10_()


def _piece_index(counts: Sequence[int], device) -> Tensor:
    counts_t = torch.tensor(counts, dtype=torch.int64, device=device)
    return torch.repeat_interleave(torch.arange(len(counts), device=device), counts_t), counts_t


def whisper(x: Tensor, cu_x: Tensor, offsets: Sequence[int], counts: Sequence[int], framing: Framing, bank: Tensor,
            floor: float, floor_log: float, n_frames: int) -> Tensor:
    """Whisper's log-mel ``[N, M, n_frames]``: the log10 mel of each piece's ``count`` frames, frames past them at
    ``floor_log`` (an all-zero frame's value), then per piece ``(max(v, max_piece - 8) + 4) / 4``."""
    mel = log_mel_frames(x, cu_x, offsets, counts, framing, bank, "log10", floor)
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
    frames concatenated (a trailing partial group is dropped)."""
    n, m = len(counts), mel.shape[1]
    piece, counts_t = _piece_index(counts, mel.device)
    sums = mel.new_zeros(n, m).index_add_(0, piece, mel)
    mean = sums / counts_t.clamp(min=1).to(mel.dtype)[:, None]
    dev = mel - mean[piece]
    var = mel.new_zeros(n, m).index_add_(0, piece, dev * dev) / (counts_t - 1).to(mel.dtype)[:, None]
    y = dev / torch.sqrt(var[piece] + eps)
    local = torch.arange(mel.shape[0], device=mel.device) - (torch.cumsum(counts_t, 0) - counts_t)[piece]
    keep = local < (counts_t // stride * stride)[piece]
    return y[keep].reshape(-1, stride * m)


"""Audio loading, resampling and batch validation.

Waveforms are float32 mono tensors in [-1, 1] (channels averaged). ``resample`` is a windowed-sinc
polyphase resampler in plain PyTorch (torchaudio is not a dependency); its kernels are cached per
(source rate, target rate) pair and a batch is resampled once per distinct rate.
"""
from __future__ import annotations

import math
import os
import wave
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

AudioLike = Union[torch.Tensor, np.ndarray]

__all__ = ["load_wav", "resample", "resample_batch", "validate_audio_batch"]


def load_wav(path: str) -> Tuple[np.ndarray, int]:
    """Read a PCM WAV file -> (float32 mono samples in [-1, 1], sample rate in Hz).

    Raises ValueError for a missing, unreadable or non-PCM file, with the path in the message.
    """
    if not os.path.isfile(path):
        raise ValueError(f"audio file not found: {path}")
    try:
        with wave.open(path, "rb") as f:
            channels, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            raw = f.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise ValueError(f"cannot read WAV file {path}: {e}") from e
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8)
        b = b[: len(b) // 3 * 3].reshape(-1, 3)
        ints = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16))
        data = (np.where(ints >= 1 << 23, ints - (1 << 24), ints)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"unsupported WAV sample width {width} bytes in {path}")
    if data.size == 0 or data.size % channels:
        raise ValueError(f"WAV file {path} holds no complete audio frames (corrupt or empty)")
    return data.reshape(-1, channels).mean(1).astype(np.float32), rate


@lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int, zeros: int = 16) -> Tuple[torch.Tensor, int, int, int]:
    """Polyphase windowed-sinc filter bank [up, 1, taps] (float64) plus (up, down, half_width)."""
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    cutoff = min(1.0, up / down) * 0.97  # fraction of the input Nyquist kept
    half = int(math.ceil(zeros / cutoff))
    idx = torch.arange(-half, half + down, dtype=torch.float64)  # input offsets relative to q*down
    phase = torch.arange(up, dtype=torch.float64)[:, None] * down / up
    t = idx[None, :] - phase  # [up, taps] distance in input samples
    window = torch.where(t.abs() <= half, 0.5 * (1 + torch.cos(math.pi * t / half)), torch.zeros_like(t))
    kernel = cutoff * torch.special.sinc(cutoff * t) * window
    return kernel[:, None, :], up, down, half


def resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample ``x`` [..., T] (float) from ``orig`` Hz to ``new`` Hz -> [..., ceil(T * new / orig)]."""
    if orig == new:
        return x
    kernel, up, down, half = _sinc_kernel(int(orig), int(new))
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])
    q = -(-shape[-1] // down)  # output blocks of `up` samples
    flat = F.pad(flat, (half, half + q * down - shape[-1]))
    y = F.conv1d(flat, kernel.to(flat.dtype), stride=down)[..., :q]  # [B, up, q]
    y = y.transpose(1, 2).reshape(flat.shape[0], q * up)
    n_out = -(-shape[-1] * new // orig)
    return y[:, :n_out].reshape(*shape[:-1], n_out)


def resample_batch(waves: Sequence[torch.Tensor], rates: Sequence[int], target: int) -> List[torch.Tensor]:
    """Resample a list of 1-D waveforms to ``target`` Hz, one padded conv per distinct source rate."""
    out: List[torch.Tensor] = list(waves)
    groups: Dict[int, List[int]] = {}
    for i, r in enumerate(rates):
        if r != target:
            groups.setdefault(r, []).append(i)
    for rate, idx in groups.items():
        longest = max(waves[i].shape[0] for i in idx)
        batch = torch.stack([F.pad(waves[i], (0, longest - waves[i].shape[0])) for i in idx])
        res = resample(batch, rate, target)
        for j, i in enumerate(idx):
            out[i] = res[j, : -(-waves[i].shape[0] * target // rate)]
    return out


def validate_audio_batch(audio: Sequence[AudioLike], sampling_rate, max_seconds: float
                         ) -> Tuple[List[torch.Tensor], List[int]]:
    """Check a batch of clips -> (float32 mono 1-D tensors, rates as ints).

    ``audio``: list of 1-D (samples) or 2-D (channels, samples) arrays/tensors. ``sampling_rate``: one int
    for all or a list of ints (one per clip). Raises ValueError on empty clips, non-int rates, clips
    longer than ``max_seconds``, non-finite samples or a rate list of the wrong length.
    """
    if isinstance(audio, (torch.Tensor, np.ndarray)) and getattr(audio, "ndim", 0) == 1:
        audio = [audio]
    if not isinstance(audio, (list, tuple)) or len(audio) == 0:
        raise ValueError("audio must be a non-empty list of waveforms")
    rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple)) else [sampling_rate] * len(audio)
    if len(rates) != len(audio):
        raise ValueError(f"got {len(audio)} clips but {len(rates)} sampling rates")
    waves = []
    for i, (a, r) in enumerate(zip(audio, rates)):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r <= 0:
            raise ValueError(f"sampling_rate[{i}] must be a positive int (Hz), got {r!r} ({type(r).__name__})")
        t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach()
        if t.dim() == 2:
            t = t.float().mean(0)
        if t.dim() != 1:
            raise ValueError(f"audio[{i}] must be 1-D (samples) or 2-D (channels, samples), got {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"audio[{i}] is empty")
        if t.numel() > max_seconds * r:
            raise ValueError(f"audio[{i}] lasts {t.numel() / r:.2f} s, longer than the limit of {max_seconds} s")
        t = t.to(torch.float32).cpu()
        if not torch.isfinite(t).all():
            raise ValueError(f"audio[{i}] contains NaN or Inf samples")
        waves.append(t)
    return waves, [int(r) for r in rates]

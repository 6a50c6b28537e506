"""Analysis windows and mel filterbanks of the audio front ends.

Everything is built in float64 on the CPU once per parameter set (cached), then cast and moved to the
compute dtype and device (cached too), so a batch never rebuilds a filterbank. Conventions:

- Kaldi (``compute-fbank-feats``, and torchaudio.compliance.kaldi which re-expresses it): mel scale
  ``1127 ln(1 + f / 700)``; ``M`` triangles whose edges are equally spaced in mel between ``low_freq`` and
  ``high_freq`` (``M + 2`` points), triangular *in mel*; FFT bin ``k`` sits at ``k * sample_rate / n_fft`` Hz;
  no area normalisation. transformers' ``SeamlessM4TFeatureExtractor`` builds the same bank
  (``mel_scale="kaldi"``, ``triangularize_in_mel_space=True``).
- Slaney (Whisper, as transformers' ``WhisperFeatureExtractor`` / librosa build it): slaney mel scale (linear
  below 1 kHz, logarithmic above), triangles in Hz over ``linspace(0, sample_rate // 2, n_fft // 2 + 1)``,
  each scaled by ``2 / (right - left)`` (area normalisation).

Filterbanks are ``[n_fft // 2 + 1, n_mels]``: ``mel = power @ bank``.
"""
from __future__ import annotations

import functools
import math

import torch

__all__ = ["WINDOWS", "window", "kaldi_mel_banks", "slaney_mel_banks", "on_device"]

WINDOWS = ("hamming", "hanning", "povey", "rectangular", "blackman", "hann_periodic")


@functools.lru_cache(maxsize=32)
def _window64(kind: str, length: int, blackman_coeff: float) -> torch.Tensor:
    k = torch.arange(length, dtype=torch.float64)
    if kind == "hann_periodic":  # torch.hann_window(length) (Whisper's STFT window)
        return 0.5 - 0.5 * torch.cos(2 * math.pi * k / length)
    if kind == "rectangular":
        return torch.ones(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1)  # Kaldi's windows are symmetric
    if kind == "hanning":
        return 0.5 - 0.5 * torch.cos(a * k)
    if kind == "povey":
        return (0.5 - 0.5 * torch.cos(a * k)).pow(0.85)
    if kind == "hamming":
        return 0.54 - 0.46 * torch.cos(a * k)
    if kind == "blackman":
        return blackman_coeff - 0.5 * torch.cos(a * k) + (0.5 - blackman_coeff) * torch.cos(2 * a * k)
    raise ValueError(f"window must be one of {WINDOWS}, got {kind!r}")


def window(kind: str, length: int, blackman_coeff: float = 0.42) -> torch.Tensor:
    """float64 ``[length]`` window: Kaldi's ``hamming``, ``hanning``, ``povey`` (hanning ** 0.85),
    ``rectangular``, ``blackman`` (symmetric, as Kaldi defines them), or ``hann_periodic`` (torch's default
    Hann window, used by Whisper)."""
    return _window64(kind, length, float(blackman_coeff))


def _kaldi_mel(f):
    return 1127.0 * torch.log1p(f / 700.0) if isinstance(f, torch.Tensor) else 1127.0 * math.log1p(f / 700.0)


@functools.lru_cache(maxsize=32)
def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """float64 ``[n_fft // 2 + 1, n_mels]`` Kaldi mel bank (``high_freq`` already resolved to Hz)."""
    lo, hi = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    edges = lo + torch.arange(n_mels + 2, dtype=torch.float64) * ((hi - lo) / (n_mels + 1))
    bins = _kaldi_mel(torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft))[:, None]
    left, center, right = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rise = (bins - left) / (center - left)
    fall = (right - bins) / (right - center)
    return torch.clamp(torch.minimum(rise, fall), min=0.0)


def _slaney_mel(f: torch.Tensor) -> torch.Tensor:
    log_step = 27.0 / math.log(6.4)
    return torch.where(f >= 1000.0, 15.0 + torch.log(f.clamp(min=1e-30) / 1000.0) * log_step, 3.0 * f / 200.0)


def _slaney_hz(m: torch.Tensor) -> torch.Tensor:
    log_step = math.log(6.4) / 27.0
    return torch.where(m >= 15.0, 1000.0 * torch.exp(log_step * (m - 15.0)), 200.0 * m / 3.0)


@functools.lru_cache(maxsize=32)
def slaney_mel_banks(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """float64 ``[n_fft // 2 + 1, n_mels]`` slaney-scale, area-normalised mel bank (librosa's default)."""
    lo, hi = _slaney_mel(torch.tensor([f_min, f_max], dtype=torch.float64)).tolist()
    edges = _slaney_hz(torch.linspace(lo, hi, n_mels + 2, dtype=torch.float64))
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1, dtype=torch.float64)[:, None]
    left, center, right = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rise = (freqs - left) / (center - left)
    fall = (right - freqs) / (right - center)
    return torch.clamp(torch.minimum(rise, fall), min=0.0) * (2.0 / (right - left))


@functools.lru_cache(maxsize=64)
def _cast(table: torch.Tensor, scale: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    return (table * scale).to(device=device, dtype=dtype).contiguous()


def on_device(table: torch.Tensor, dtype: torch.dtype, device: torch.device, scale: float = 1.0) -> torch.Tensor:
    """``table * scale`` in ``dtype`` on ``device`` (cached: pass the cached float64 tables above)."""
    return _cast(table, float(scale), dtype, str(device))

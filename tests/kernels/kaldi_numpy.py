"""An independent float64 NumPy re-expression of Kaldi's ``compute-fbank-feats`` (dither 0, no energy term), frame
by frame, written from Kaldi's rules (feature-window.cc, mel-computations.cc) as torchaudio.compliance.kaldi.fbank
documents them. The tests' oracle for ``alarm_kernels.kaldi_fbank``: torchaudio itself cannot be imported here (its
PyPI wheel is a CUDA build whose extension needs libc10_cuda.so, which the CPU torch lacks)."""
import math

import numpy as np

FLOAT_EPSILON = float(np.finfo(np.float32).eps)


def _window(kind: str, size: int, blackman_coeff: float) -> np.ndarray:
    i = np.arange(size, dtype=np.float64)
    a = 2.0 * math.pi / (size - 1)
    if kind == "hanning":
        return 0.5 - 0.5 * np.cos(a * i)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(a * i)
    if kind == "povey":
        return (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    if kind == "rectangular":
        return np.ones(size)
    if kind == "blackman":
        return blackman_coeff - 0.5 * np.cos(a * i) + (0.5 - blackman_coeff) * np.cos(2 * a * i)
    raise ValueError(kind)


def _mel(f):
    return 1127.0 * np.log(1.0 + f / 700.0)


def _mel_banks(num_bins: int, padded: int, sample_rate: float, low: float, high: float) -> np.ndarray:
    """[num_bins, padded // 2]: Kaldi's MelBanks (the Nyquist bin gets no weight)."""
    nyquist = 0.5 * sample_rate
    if high <= 0.0:
        high += nyquist
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    banks = np.zeros((num_bins, padded // 2))
    for b in range(num_bins):
        left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
        for k in range(padded // 2):
            m = _mel(sample_rate / padded * k)
            if left < m < right:
                banks[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    return banks


def _sample_index(p: int, n: int) -> int:
    while p < 0 or p >= n:  # Kaldi's ExtractWindow: mirror with the edge sample repeated
        p = -p - 1 if p < 0 else 2 * n - 1 - p
    return p


def fbank(x: np.ndarray, *, num_mel_bins=23, sample_rate=16000.0, frame_length_ms=25.0, frame_shift_ms=10.0,
          window="povey", blackman_coeff=0.42, preemphasis=0.97, remove_dc_offset=True, round_to_power_of_two=True,
          snip_edges=True, low_freq=20.0, high_freq=0.0, use_power=True, use_log=True) -> np.ndarray:
    """[frames, num_mel_bins] float64 fbank of one 1-D waveform."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    padded = 2 ** math.ceil(math.log2(size)) if round_to_power_of_two else size
    if snip_edges:
        count = 0 if n < size else 1 + (n - size) // shift
        first = [k * shift for k in range(count)]
    else:
        count = (n + shift // 2) // shift
        first = [k * shift + shift // 2 - size // 2 for k in range(count)]
    w = _window(window, size, blackman_coeff)
    banks = _mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq)
    out = np.zeros((count, num_mel_bins))
    for f, start in enumerate(first):
        frame = np.array([x[_sample_index(start + j, n)] for j in range(size)])
        if remove_dc_offset:
            frame = frame - frame.mean()
        for j in range(size - 1, 0, -1):
            frame[j] -= preemphasis * frame[j - 1]
        frame[0] -= preemphasis * frame[0]
        buffer = np.zeros(padded)
        buffer[:size] = frame * w
        spectrum = np.abs(np.fft.rfft(buffer))[: padded // 2]
        if use_power:
            spectrum = spectrum ** 2
        energies = banks @ spectrum
        out[f] = np.log(np.maximum(energies, FLOAT_EPSILON)) if use_log else energies
    return out

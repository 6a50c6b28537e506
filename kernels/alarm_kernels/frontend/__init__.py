"""Audio front ends over packed waveforms: Kaldi fbank, w2v-BERT 2.0's fbank and Whisper's log-mel.

All three take one flat waveform tensor ``[total]`` (float32, or float64 on the reference backend) and int32
``cu_seqlens [N+1]`` (the varlen convention of docs/kernels.md: piece ``i`` is ``waves[cu[i]:cu[i+1]]``) and share
one core: frames cut by :class:`.framing.Framing`, conditioned, FFT, power, mel filterbank, floor, log.

Backends: ``reference`` (vectorised PyTorch: the CPU default; on CUDA tensors its FFT is cuFFT) and ``triton``
(CUDA, or CPU under ``TRITON_INTERPRET=1``): a Triton kernel cuts and conditions the frames, ``torch.fft.rfft``
(cuFFT) transforms them, a second kernel fuses power -> mel (an fp32 dot with the filterbank) -> floor -> log,
and a third the per-piece finish (Whisper's clamp and scaling, w2v-BERT's normalisation and stacking).

Not ``torch.library`` custom ops: the front ends have no gradient (frozen encoders), run before any compiled
region, and their output sizes come from host-side lengths. Each call reads ``cu_seqlens`` on the host once.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import check_tensor
from ..backend import select_backend
from ..varlen import seqlens_to_cu_seqlens, validate_cu_seqlens
from . import reference
from .filters import WINDOWS, kaldi_mel_banks, slaney_mel_banks
from .framing import Framing, MelSpec

__all__ = ["kaldi_fbank", "w2v_bert_fbank", "whisper_log_mel", "KALDI_EPSILON", "WHISPER_WINDOW_SAMPLES"]

IMPLEMENTED = ("triton", "reference")
KALDI_EPSILON = float(torch.finfo(torch.float32).eps)  # Kaldi's (and torchaudio's) floor before the log
W2V_BERT_MEL_FLOOR = 1.192092955078125e-07  # SeamlessM4TFeatureExtractor's floor (as transformers spells it)
WHISPER_WINDOW_SAMPLES = 480000  # 30 s at 16 kHz
WHISPER_MEL_FLOOR = 1e-10


def _backend_module(name: str):
    if name == "triton":
        from . import triton as module

        return module
    return reference


def _check_waves(waves, cu_seqlens):
    """Validate the packed input; returns (host offsets, host lengths)."""
    check_tensor(waves, "waves", ndim=1, dtypes=(torch.float32, torch.float64))
    offsets = validate_cu_seqlens(cu_seqlens, waves.shape[0], device=waves.device)
    return offsets, [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _select(op: str, backend: str, waves: Tensor) -> str:
    reason = "float64 is reference-only" if waves.dtype == torch.float64 else None
    return select_backend(op, backend, waves.device, IMPLEMENTED, {"triton": reason})


def _positive(value, name: str, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    return value


def _cu(counts, device) -> Tensor:
    return seqlens_to_cu_seqlens(counts, device=device)


def _fft_dtype(fft_dtype, waves: Tensor) -> torch.dtype:
    fft_dtype = waves.dtype if fft_dtype is None else fft_dtype
    if fft_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"fft_dtype must be torch.float32 or torch.float64, got {fft_dtype!r}")
    return fft_dtype


def kaldi_fbank(
    waves: Tensor,
    cu_seqlens: Tensor,
    *,
    num_mel_bins: int = 23,
    sample_rate: float = 16000.0,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window: str = "povey",
    blackman_coeff: float = 0.42,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    snip_edges: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    use_power: bool = True,
    use_log: bool = True,
    fft_dtype: Optional[torch.dtype] = None,
    backend: str = "auto",
) -> Tuple[Tensor, Tensor]:
    """Kaldi's ``compute-fbank-feats`` (as ``torchaudio.compliance.kaldi.fbank`` computes it, dither 0, no energy
    term) on every packed piece.

    Args:
        waves: ``[total]`` float32 (float64: reference backend) samples, in the units the caller wants (Kaldi
            itself reads 16-bit integer values; scale by ``2**15`` first to match it on [-1, 1] audio).
        cu_seqlens: int32 ``[N+1]`` piece offsets.
        num_mel_bins: mel bands (> 3). ``sample_rate`` in Hz; ``frame_length_ms`` / ``frame_shift_ms`` give
            ``int(sample_rate * ms / 1000)`` samples.
        window: "povey" (Kaldi's default), "hanning", "hamming", "rectangular" or "blackman" (``blackman_coeff``).
        preemphasis: in [0, 1]; ``remove_dc_offset``: subtract each frame's mean first.
        round_to_power_of_two: FFT size = the next power of two of the frame length (else the frame length, even).
        snip_edges: True: only frames that fit in the piece; False: ``(n + shift // 2) // shift`` frames, edges
            mirrored (Kaldi's rule).
        low_freq, high_freq: band edges in Hz; ``high_freq <= 0`` is an offset from the Nyquist frequency.
        use_power: power (else magnitude) spectrum; ``use_log``: ``log(max(energy, KALDI_EPSILON))``.
        fft_dtype: dtype of the frames, FFT and power spectrum (default waves', as torchaudio computes); float64
            makes the weak bands exact (fp32 rounding of the spectrum is relative to a frame's total energy).
        backend: "auto", "reference" or "triton".
    Returns:
        ``(feats, cu_frames)``: feats ``[sum F_i, num_mel_bins]`` in waves' dtype (natural-log energies with
        ``use_log``), cu_frames int32 ``[N+1]``. A piece shorter than one frame yields no frame with
        ``snip_edges`` (torchaudio raises instead).
    """
    offsets, lengths = _check_waves(waves, cu_seqlens)
    if isinstance(num_mel_bins, bool) or not isinstance(num_mel_bins, int) or num_mel_bins <= 3:
        raise ValueError(f"num_mel_bins must be an int > 3, got {num_mel_bins!r}")
    _positive(sample_rate, "sample_rate", float)
    _positive(frame_length_ms, "frame_length_ms", float)
    _positive(frame_shift_ms, "frame_shift_ms", float)
    if window not in WINDOWS[:-1]:
        raise ValueError(f"window must be one of {WINDOWS[:-1]}, got {window!r}")
    if not 0.0 <= preemphasis <= 1.0:
        raise ValueError(f"preemphasis must lie in [0, 1], got {preemphasis!r}")
    win = int(sample_rate * frame_length_ms * 0.001)  # Kaldi's (and torchaudio's) rounding
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if win < 2 or shift < 1:
        raise ValueError(f"frame_length_ms={frame_length_ms} and frame_shift_ms={frame_shift_ms} give {win} and "
                         f"{shift} samples at {sample_rate} Hz; need a frame of >= 2 and a shift of >= 1")
    n_fft = 1 << (win - 1).bit_length() if round_to_power_of_two else win
    if n_fft % 2:
        raise ValueError(f"the FFT size {n_fft} must be even: use round_to_power_of_two or another frame_length_ms")
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high <= nyquist and low_freq < high):
        raise ValueError(f"low_freq={low_freq} and high_freq={high_freq} must satisfy 0 <= low < high <= "
                         f"{nyquist} (Nyquist; high_freq <= 0 is an offset from it)")
    framing = Framing(win=win, shift=shift, n_fft=n_fft, edges="snip" if snip_edges else "reflect", window=window,
                      remove_dc=bool(remove_dc_offset), preemphasis=float(preemphasis),
                      blackman_coeff=float(blackman_coeff))
    counts = framing.counts(lengths)
    impl = _backend_module(_select("kaldi_fbank", backend, waves))
    mel = MelSpec(kaldi_mel_banks(num_mel_bins, n_fft, float(sample_rate), float(low_freq), float(high)),
                  KALDI_EPSILON, "ln" if use_log else None, use_power=bool(use_power),
                  fft_dtype=_fft_dtype(fft_dtype, waves))
    feats = impl.log_mel_frames(waves, cu_seqlens, offsets, counts, framing, mel)
    return feats, _cu(counts, waves.device)


W2V_BERT_FRAMING = Framing(win=400, shift=160, n_fft=512, edges="snip", window="povey", pad=160, remove_dc=True,
                           preemphasis=0.97)


def w2v_bert_fbank(waves: Tensor, cu_seqlens: Tensor, *, edge_samples: int = 160,
                   fft_dtype: Optional[torch.dtype] = torch.float64, backend: str = "auto") -> Tuple[Tensor, Tensor]:
    """w2v-BERT 2.0's input features per packed 16 kHz clip, as ``SeamlessM4TFeatureExtractor`` computes them on
    the clip with ``edge_samples`` zeros added on each side (ALARM's encoder adds 160).

    The Kaldi core (:func:`kaldi_fbank`: povey window, pre-emphasis 0.97, DC removal, 80 Kaldi mel bands over
    20-8000 Hz, FFT 512, power) on the clip scaled by ``2**15``, ``log(max(energy, 1.192092955078125e-07))``, then
    per clip and band ``(v - mean) / sqrt(var + 1e-7)`` over its ``F`` frames (variance with ddof=1; a 1-frame clip
    is NaN but yields no output row), then every 2 consecutive frames concatenated.

    Returns:
        ``(feats, cu_frames)``: feats ``[sum F_i // 2, 160]`` in waves' dtype, cu_frames int32 ``[N+1]``;
        ``F = 1 + (n + 2 * edge_samples - 400) // 160`` frames (0 when the padded clip is shorter than 400
        samples).
    """
    offsets, lengths = _check_waves(waves, cu_seqlens)
    if isinstance(edge_samples, bool) or not isinstance(edge_samples, int) or edge_samples < 0:
        raise ValueError(f"edge_samples must be an int >= 0, got {edge_samples!r}")
    framing = replace(W2V_BERT_FRAMING, pad=edge_samples)
    counts = framing.counts(lengths)
    impl = _backend_module(_select("w2v_bert_fbank", backend, waves))
    # the 2**15 scale enters as 2**30 on the (linear) filterbank: powers of two scale every rounding exactly
    spec = MelSpec(kaldi_mel_banks(80, 512, 16000.0, 20.0, 8000.0), W2V_BERT_MEL_FLOOR, "ln", scale=2.0 ** 30,
                   fft_dtype=_fft_dtype(fft_dtype, waves), round_spectrum=True)
    mel = impl.log_mel_frames(waves, cu_seqlens, offsets, counts, framing, spec)
    feats = impl.normalize_stack(mel, counts, 2, 1e-7)
    return feats, _cu([c // 2 for c in counts], waves.device)


def whisper_log_mel(waves: Tensor, cu_seqlens: Tensor, n_mels: int = 128, *,
                    window_samples: Optional[int] = WHISPER_WINDOW_SAMPLES, n_frames: Optional[int] = None,
                    fft_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> Tensor:
    """Whisper's log-mel spectrogram of every packed 16 kHz piece, as ``WhisperFeatureExtractor`` computes it
    (``n_fft=400``, hop 160, periodic Hann window, centred STFT with reflect padding, slaney mel bank over 0-8000
    Hz, ``log10(max(mel, 1e-10))``, clamped to the piece's maximum - 8, then ``(v + 4) / 4``).

    Args:
        waves: ``[total]`` float32 (float64: reference backend); cu_seqlens: int32 ``[N+1]``.
        n_mels: mel bands (128 for large-v3, 80 for the others).
        window_samples: the published mode (default 480000 = 30 s): every piece (at most that long) is zero
            padded to ``window_samples`` and gives ``window_samples // 160`` frames, exactly the extractor's
            output for that piece. None: the clip-length mode; every piece is zero-extended and gives
            ``n_frames`` frames, its maximum taken over every frame that touches it (what the extractor gives
            for a batch of pieces zero padded to a common length of at least ``n + 400`` samples).
        n_frames: output frames in the clip-length mode (required there; not allowed with ``window_samples``).
        fft_dtype: dtype of the frames, FFT and power spectrum (default waves', as the extractor's torch path).
    Returns:
        ``[N, n_mels, T]`` in waves' dtype, ``T = window_samples // 160`` or ``n_frames``.
    """
    offsets, lengths = _check_waves(waves, cu_seqlens)
    if isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels < 1:
        raise ValueError(f"n_mels must be a positive int, got {n_mels!r}")
    if window_samples is not None:
        _positive(window_samples, "window_samples")
        if n_frames is not None:
            raise ValueError("n_frames is set by window_samples (window_samples // 160); pass one of them")
        longest = max(lengths, default=0)
        if longest > window_samples:
            raise ValueError(f"waves: a piece of {longest} samples is longer than window_samples={window_samples}; "
                             "cut clips into windows first")
        n_frames = window_samples // 160
    elif isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 0:
        raise ValueError(f"n_frames must be an int >= 0 when window_samples is None, got {n_frames!r}")
    framing = Framing(win=400, shift=160, n_fft=400, edges="center", window="hann_periodic", row=window_samples)
    counts = framing.counts(lengths)
    impl = _backend_module(_select("whisper_log_mel", backend, waves))
    spec = MelSpec(slaney_mel_banks(n_mels, 400, 16000, 0.0, 8000.0), WHISPER_MEL_FLOOR, "log10",
                   fft_dtype=_fft_dtype(fft_dtype, waves))
    floor_log = float(torch.tensor(WHISPER_MEL_FLOOR, dtype=waves.dtype).log10())  # an all-zero frame's value
    return impl.whisper(waves, cu_seqlens, offsets, counts, framing, spec, floor_log, n_frames)


"""Audio input: the project's one file loader, its resampler and the model's input contract.

- :func:`load_audio` reads any file libsndfile decodes (through ``soundfile``): WAV of every subtype
  (8-32 bit integer PCM, 32/64-bit float, A-law/u-law, WAVE_FORMAT_EXTENSIBLE), FLAC, OGG/Vorbis, AIFF and,
  when the installed libsndfile has it (1.1 or later), MP3. Channels are averaged. A WAV file cut short
  (its header declares more data than the file holds) is read up to its last complete frame and a warning
  naming the file is logged: a truncated recording is still usable audio.
- :func:`audio_info` reads a file's length and rate from its header (and decodes its first 10 ms to prove
  it reads), for listing many files without decoding them.
- :func:`resample` and :func:`resample_batch` use ``soxr`` (the SoX resampler, high-quality preset): its
  memory and time grow with the clip's length only, whatever the pair of rates (11127 -> 16000 Hz costs
  what 44100 -> 16000 Hz costs).
- :func:`as_waveform` / :func:`validate_audio_batch` are the model's front door (see their docstrings for
  the accepted layouts, dtypes and amplitudes). Clips shorter than :data:`MIN_CLIP_SECONDS` are padded
  with trailing silence to that length (w2v-BERT's feature extractor needs two 25 ms analysis windows,
  10 ms apart, for one frame); clips longer than the model's ``max_audio_seconds`` are refused.
"""
from __future__ import annotations

import logging
import math
import os
import struct
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
import soxr
import torch

AudioLike = Union[torch.Tensor, np.ndarray]

__all__ = ["load_audio", "audio_info", "resample", "resample_batch", "as_waveform", "validate_audio_batch",
           "MIN_CLIP_SECONDS", "MAX_PEAK", "MAX_CHANNELS"]

logger = logging.getLogger(__name__)

#: Shortest clip every encoder turns into at least one frame (w2v-BERT stacks two 25 ms windows 10 ms
#: apart: 35 ms); shorter clips get trailing silence.
MIN_CLIP_SECONDS = 0.035
#: Float samples may exceed 1 a little (float files with overs): peaks up to this are scaled down to 1;
#: larger peaks are refused (they are integer PCM stored as float, or garbage).
MAX_PEAK = 4.0
#: A 2-D array's channel dimension has at most this many entries.
MAX_CHANNELS = 64



def _riff_shortfall(path: str) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 when complete or not WAV)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size == 0xFFFFFFFF:  # streaming writers leave the size open
                    return 0
                return max(0, pos + 8 + chunk_size - size)
            pos += 8 + chunk_size + (chunk_size & 1)
    return 0


def _readable_path(path: Union[str, "os.PathLike[str]"]) -> str:
    """``path`` as a string; ValueError naming it when it is missing, not a file, or empty."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"audio file not found: {path}")
    if not os.path.isfile(path):
        raise ValueError(f"audio path is not a file: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"cannot read audio file {path}: the file is empty")
    return path


def load_audio(path: Union[str, "os.PathLike[str]"], start_seconds: float = 0.0,
               max_seconds: Optional[float] = None) -> Tuple[np.ndarray, int]:
    """Read an audio file -> (float32 mono samples [frames] in [-1, 1], sample rate in Hz).

    Only the window ``[start_seconds, start_seconds + max_seconds)`` is decoded (default: the whole
    file), so a long file costs what the window costs. Raises ValueError naming ``path`` and the reason
    for a missing, empty, unreadable or unsupported file, one without audio frames, a start at or after
    its end, or samples that are NaN/Inf or absurdly loud (see :data:`MAX_PEAK`).
    """
    if start_seconds < 0 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(f"the window of {path} must have start >= 0 and a positive length, got "
                         f"start {start_seconds} s, length {max_seconds} s")
    path = _readable_path(path)
    try:
        with sf.SoundFile(path) as f:
            rate, channels, declared = f.samplerate, f.channels, f.frames
            first = int(round(start_seconds * rate))
            if first and first >= declared:
                raise ValueError(f"cannot read audio file {path}: start {start_seconds} s is at or after its "
                                 f"end ({declared / rate:.3f} s)")
            if first:
                f.seek(first)
            count = -1 if max_seconds is None else max(1, int(round(max_seconds * rate)))
            data = f.read(frames=count, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        reason = e.error_string or str(e)
        if path.lower().endswith(".mp3") and "MP3" not in sf.available_formats():
            reason = f"MP3 is not supported by the installed libsndfile {sf.__libsndfile_version__} (needs 1.1+)"
        raise ValueError(f"cannot read audio file {path}: {reason}") from None
    except (RuntimeError, OSError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from None
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no audio frames (header only or cut short)")
    if rate <= 0:
        raise ValueError(f"audio file {path} declares an invalid sample rate {rate}")
    expected = declared - first if count < 0 else min(count, declared - first)
    if data.shape[0] < expected or ((count < 0 or first + count > declared) and _riff_shortfall(path)):
        logger.warning("%s is cut short (its header declares more audio than the file holds); "
                       "read its %d complete frames", path, data.shape[0])
    mono = data.mean(axis=1, dtype=np.float64) if channels > 1 else data[:, 0].astype(np.float64)
    return _unit_range(mono, f"audio file {path}").astype(np.float32), int(rate)


def audio_info(path: Union[str, "os.PathLike[str]"]) -> Tuple[int, int]:
    """(frames, sample rate in Hz) of an audio file, from its header; its first 10 ms are decoded to check
    that it reads. Raises ValueError naming ``path`` and the reason (missing, empty, unreadable, no frames)."""
    path = _readable_path(path)
    try:
        with sf.SoundFile(path) as f:
            frames, rate = f.frames, f.samplerate
            probe = f.read(frames=max(1, rate // 100), dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise ValueError(f"cannot read audio file {path}: {e.error_string or e}") from None
    except (RuntimeError, OSError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from None
    if frames <= 0 or probe.shape[0] == 0 or rate <= 0:
        raise ValueError(f"audio file {path} holds no audio frames (header only or cut short)")
    return int(frames), int(rate)


def _unit_range(x: np.ndarray, where: str) -> np.ndarray:
    """Float samples checked: finite, peak <= MAX_PEAK; a peak in (1, MAX_PEAK] is scaled down to 1."""
    if not np.isfinite(x).all():
        raise ValueError(f"{where} contains NaN or Inf samples")
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > MAX_PEAK:
        raise ValueError(f"{where} has peak amplitude {peak:.6g}; samples must lie in [-1, 1] (integer PCM "
                         "passed as float? divide by its full scale, e.g. 32768 for 16-bit)")
    if peak > 1.0:
        x = x / peak
    return x


def resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample ``x`` [..., T] (float) from ``orig`` Hz to ``new`` Hz -> [..., ceil(T * new / orig)].

    soxr's high-quality preset (passband to ~0.91 of the lower Nyquist, stopband attenuation > 100 dB),
    computed on the host in float32 (float64 input stays float64); the result is returned on ``x``'s
    device and dtype. Not differentiable (waveforms are inputs, never trained).
    """
    orig, new = int(orig), int(new)
    if orig <= 0 or new <= 0:
        raise ValueError(f"sample rates must be positive, got {orig} -> {new}")
    if orig == new:
        return x
    shape = x.shape
    n_out = -(-shape[-1] * new // orig)
    work = np.float64 if x.dtype == torch.float64 else np.float32
    flat = x.detach().reshape(math.prod(shape[:-1]), shape[-1]).cpu().numpy().astype(work, copy=False)
    out = np.zeros((flat.shape[0], n_out), dtype=work)
    if flat.shape[0] and shape[-1]:
        y = soxr.resample(np.ascontiguousarray(flat.T), orig, new, quality="HQ").T  # soxr: [frames, channels]
        m = min(n_out, y.shape[1])
        out[:, :m] = y[:, :m]
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype).reshape(*shape[:-1], n_out)


def resample_batch(waves: Sequence[torch.Tensor], rates: Sequence[int], target: int) -> List[torch.Tensor]:
    """Resample a list of 1-D waveforms to ``target`` Hz (each to ceil(T * target / rate) samples)."""
    if len(waves) != len(rates):
        raise ValueError(f"got {len(waves)} waveforms but {len(rates)} rates")
    return [w if int(r) == int(target) else resample(w, int(r), int(target))
            for w, r in zip(waves, rates, strict=True)]


def as_waveform(a: AudioLike, where: str = "audio") -> torch.Tensor:
    """One clip -> float32 mono 1-D CPU tensor in [-1, 1] (the model's input contract).

    - Layout: 1-D ``[frames]``, or 2-D with one channel dimension of at most :data:`MAX_CHANNELS`
      entries: the smaller dimension is the channels (``[channels, frames]`` as torchaudio returns, or
      ``[frames, channels]`` as soundfile returns); on a tie the first dimension is the channels.
      Channels are averaged.
    - dtype: floats must be finite with peak <= :data:`MAX_PEAK` (a peak above 1 is scaled down to 1);
      integer PCM (int8/16/32/64, uint8) is divided by its full scale. bool and complex are refused.
    Raises ValueError with ``where`` in the message.
    """
    if isinstance(a, torch.Tensor):
        arr = a.detach().cpu()
        arr = arr.float().numpy() if arr.dtype == torch.bfloat16 else arr.numpy()
    else:
        try:
            arr = np.asarray(a)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where} is not an array of samples: {e}") from None
    if arr.dtype == np.bool_ or np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"{where} must hold real samples (float or integer PCM), got dtype {arr.dtype}")
    if arr.ndim == 2:
        ch_axis = 0 if arr.shape[0] <= arr.shape[1] else 1
        if arr.shape[ch_axis] > MAX_CHANNELS:
            raise ValueError(f"{where} has shape {tuple(arr.shape)}: neither dimension looks like channels "
                             f"(at most {MAX_CHANNELS}); pass [channels, frames] or [frames, channels]")
    elif arr.ndim != 1:
        raise ValueError(f"{where} must be 1-D [frames] or 2-D [channels, frames] / [frames, channels], "
                         f"got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{where} is empty")
    if np.issubdtype(arr.dtype, np.integer):
        x = arr.astype(np.float64)
        if arr.dtype.kind == "u":  # only 8-bit PCM is unsigned (centred on 128)
            if arr.dtype.itemsize != 1:
                raise ValueError(f"{where}: unsupported integer sample dtype {arr.dtype} (unsigned PCM is 8-bit)")
            x -= 128.0
        x /= 2.0 ** (8 * arr.dtype.itemsize - 1)  # full scale of signed PCM of that width
    else:
        x = arr.astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=ch_axis)
    return torch.from_numpy(_unit_range(x, where).astype(np.float32))


def validate_audio_batch(audio: Sequence[AudioLike], sampling_rate, max_seconds: float
                         ) -> Tuple[List[torch.Tensor], List[int]]:
    """Check a batch of clips -> (float32 mono 1-D tensors in [-1, 1], rates as ints).

    ``audio``: one 1-D clip or a list of clips in any layout :func:`as_waveform` accepts;
    ``sampling_rate``: one positive int for all or a list of ints (one per clip). Clips shorter than
    :data:`MIN_CLIP_SECONDS` are padded with trailing zeros to that length. Raises ValueError on empty
    clips, bad rates, clips longer than ``max_seconds``, bad samples or a rate list of the wrong length.
    """
    if isinstance(audio, (torch.Tensor, np.ndarray)) and getattr(audio, "ndim", 0) == 1:
        audio = [audio]
    if not isinstance(audio, (list, tuple)) or len(audio) == 0:
        raise ValueError("audio must be a non-empty list of waveforms")
    rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple)) else [sampling_rate] * len(audio)
    if len(rates) != len(audio):
        raise ValueError(f"got {len(audio)} clips but {len(rates)} sampling rates")
    waves = []
    for i, (a, r) in enumerate(zip(audio, rates, strict=True)):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r <= 0:
            raise ValueError(f"sampling_rate[{i}] must be a positive int (Hz), got {r!r} ({type(r).__name__})")
        frames = _frames(a)
        if frames is not None and frames > max_seconds * r:  # before any conversion work
            raise ValueError(f"audio[{i}] lasts {frames / r:.2f} s, longer than the limit of {max_seconds} s")
        t = as_waveform(a, f"audio[{i}]")
        if t.numel() > max_seconds * r:
            raise ValueError(f"audio[{i}] lasts {t.numel() / r:.2f} s, longer than the limit of {max_seconds} s")
        shortest = math.ceil(MIN_CLIP_SECONDS * int(r))
        if t.numel() < shortest:
            t = torch.nn.functional.pad(t, (0, shortest - t.numel()))
        waves.append(t)
    return waves, [int(r) for r in rates]


def _frames(a) -> Optional[int]:
    """Number of frames of an array-like by the layout rule of :func:`as_waveform` (None if not an array)."""
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) not in (1, 2):
        return None
    return int(shape[0]) if len(shape) == 1 else int(max(shape))

"""Audio input: ``load_audio`` on real formats and broken files, ``resample`` at awkward rates against an
exact reference, and the model's input contract (layouts, dtypes, amplitudes, short and long clips)."""
import logging
import math
import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from alarm.audio import MAX_PEAK, MIN_CLIP_SECONDS, as_waveform, load_audio, resample, validate_audio_batch
from alarm.model import ALARMConfig, ALARMModel

pytestmark = pytest.mark.usefixtures("one_thread")


def _tone(n, rate, channels=1, amp=0.5):
    t = np.arange(n) / rate
    x = np.stack([amp * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    return x.astype(np.float32)


# (file name, soundfile format, subtype, rate, channels, frames, max abs error of the decoded samples)
GOOD_FILES = [
    ("u8.wav", "WAV", "PCM_U8", 8000, 1, 4000, 1 / 64),
    ("s16.wav", "WAV", "PCM_16", 16000, 2, 8000, 1e-4),
    ("s24.wav", "WAV", "PCM_24", 22050, 1, 5000, 1e-6),
    ("s32.wav", "WAV", "PCM_32", 44100, 6, 6000, 1e-6),
    ("f32.wav", "WAV", "FLOAT", 48000, 2, 6000, 0.0),
    ("f64.wav", "WAV", "DOUBLE", 96000, 1, 9600, 0.0),
    ("ext16.wav", "WAVEX", "PCM_16", 16000, 2, 4000, 1e-4),
    ("extfloat.wav", "WAVEX", "FLOAT", 11127, 1, 3000, 0.0),
    ("ulaw.wav", "WAV", "ULAW", 8000, 1, 2000, 0.03),
    ("eight.wav", "WAV", "PCM_16", 16000, 8, 1600, 1e-4),
    ("one.wav", "WAV", "PCM_16", 16000, 1, 1, 1e-4),
    ("twenty_ms.wav", "WAV", "PCM_16", 44101, 1, 882, 1e-4),
    ("a.flac", "FLAC", "PCM_16", 16000, 2, 4000, 1e-4),
    ("a.ogg", "OGG", "VORBIS", 24000, 1, 6000, None),  # lossy: checked by energy, not samples
    ("a.mp3", "MP3", "MPEG_LAYER_III", 16000, 1, 8000, None),
]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    for name, fmt, subtype, rate, ch, n, _ in GOOD_FILES:
        if fmt not in sf.available_formats():
            continue
        sf.write(d / name, _tone(n, rate, ch), rate, format=fmt, subtype=subtype)
    return d


@pytest.mark.parametrize("name,fmt,subtype,rate,channels,frames,tol", GOOD_FILES, ids=[f[0] for f in GOOD_FILES])
def test_load_audio_real_formats(audio_dir, name, fmt, subtype, rate, channels, frames, tol):
    if fmt not in sf.available_formats():
        with pytest.raises(ValueError, match=name):
            load_audio(audio_dir / name)
        return
    y, r = load_audio(audio_dir / name)
    assert r == rate and y.dtype == np.float32 and y.ndim == 1
    assert np.abs(y).max() <= 1.0
    want = _tone(frames, rate, channels).mean(axis=1)
    if tol is None:
        assert abs(len(y) - frames) <= 2000  # codec padding
        m = min(len(y), frames)
        assert abs(np.sqrt(np.mean(y[:m] ** 2)) - np.sqrt(np.mean(want[:m] ** 2))) < 0.05
    else:
        assert y.shape == (frames,)
        assert np.abs(y - want).max() <= tol + 1e-7


def test_extensible_header_is_what_we_think(audio_dir):
    head = (audio_dir / "extfloat.wav").read_bytes()[:40]
    assert struct.unpack("<H", head[20:22])[0] == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE


def test_tiny_model_answers_every_real_format(audio_dir):
    model = ALARMModel(ALARMConfig.tiny("sum", n_encoders=2))
    clips, rates = [], []
    for name, fmt, *_ in GOOD_FILES:
        if fmt in sf.available_formats():
            y, r = load_audio(audio_dir / name)
            clips.append(y)
            rates.append(r)
    with torch.no_grad():
        waves, rates = model._check(clips, rates)
        for name, (layers, cu) in model.encode(waves, rates).items():
            assert (cu[1:] - cu[:-1]).min() >= 1, name  # every clip gives every encoder a frame
            assert all(torch.isfinite(x).all() for x in layers), name
        tokens = model.audio_embeddings(clips, rates)
    assert len(tokens) == len(clips)
    assert all(t.shape[0] >= 1 and torch.isfinite(t).all() for t in tokens)
    out = model.generate(clips, ["What do you hear?"] * len(clips), sampling_rate=rates, max_thinking_tokens=1,
                         max_new_tokens=3)
    assert len(out["text"]) == len(clips) and bool((out["generation"].lengths >= 1).all())


def _wav_bytes(frames=100, channels=1):
    import io
    buf = io.BytesIO()
    sf.write(buf, _tone(frames, 16000, channels), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_broken_files_name_the_file_and_the_reason(tmp_path):
    cases = {
        "empty.wav": (b"", "the file is empty"),
        "header_only.wav": (_wav_bytes(0), "no audio frames"),
        "text.wav": (b"this is not audio at all, just text\n" * 3, "Format not recognised"),
        "riff_junk.wav": (b"RIFF\x00\x00\x00\x00WAVEjunk", "cannot read audio file"),
    }
    for name, (data, phrase) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=phrase) as info:
            load_audio(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ValueError, match="not found: .*missing.wav"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="not a file"):
        load_audio(tmp_path)
    nan = _tone(100, 16000)
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav contains NaN"):
        load_audio(tmp_path / "nan.wav")
    sf.write(tmp_path / "loud.wav", _tone(100, 16000) * 30000, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="loud.wav has peak amplitude"):
        load_audio(tmp_path / "loud.wav")


def test_truncated_wav_reads_complete_frames_with_a_warning(tmp_path, caplog):
    data = _wav_bytes(1000, channels=2)
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 4 * 500 + 3])  # 500 whole stereo frames and 3 bytes
    with caplog.at_level(logging.WARNING, logger="alarm.audio"):
        y, rate = load_audio(tmp_path / "cut.wav")
    assert y.shape == (500,) and rate == 16000
    assert "cut.wav is cut short" in caplog.text
    full, _ = load_audio(_write(tmp_path / "full.wav", data))
    np.testing.assert_array_equal(y, full[:500])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alarm.audio"):
        load_audio(tmp_path / "full.wav")
    assert "cut short" not in caplog.text


def _write(path, data):
    path.write_bytes(data)
    return path


def test_float_overs_are_scaled_to_unit_peak(tmp_path):
    x = _tone(1000, 16000) * 3  # peak 1.5
    sf.write(tmp_path / "hot.wav", x, 16000, subtype="FLOAT")
    y, _ = load_audio(tmp_path / "hot.wav")
    assert abs(np.abs(y).max() - 1.0) < 1e-6
    np.testing.assert_allclose(y, x[:, 0] / np.abs(x).max(), atol=1e-6)


# ---- resampling ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orig,new", [(11127, 16000), (44101, 16000), (47999, 16000), (16000, 44101),
                                      (47999, 24000)])
def test_resample_awkward_rates_against_exact_reference(orig, new):
    """A sum of sines below both Nyquists, resampled, equals the same sines evaluated on the new grid
    (the band-limited resample, exact in float64) away from the clip's edges."""
    rng = np.random.default_rng(orig + new)
    top = 0.8 * min(orig, new) / 2
    freqs, phases, amps = rng.uniform(40, top, 6), rng.uniform(0, 2 * np.pi, 6), rng.uniform(0.05, 0.15, 6)

    def signal(t):
        return (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)

    n = int(0.8 * orig) + 3
    x = torch.from_numpy(signal(np.arange(n) / orig))
    for dtype in (torch.float64, torch.float32):
        y = resample(x.to(dtype), orig, new)
        assert y.dtype == dtype and y.shape == (math.ceil(n * new / orig),)
        ref = signal(np.arange(y.shape[0]) / new)
        edge = int(0.02 * new)
        err = np.abs(y.double().numpy() - ref)[edge:-edge].max()
        assert err < 1e-4, (dtype, err)
    batch = torch.stack([x, -x]).float()
    yb = resample(batch, orig, new)
    torch.testing.assert_close(yb[1], -yb[0])


def test_resample_tiny_and_empty_inputs():
    assert resample(torch.ones(1), 44101, 16000).shape == (1,)
    assert resample(torch.ones(0), 44101, 16000).shape == (0,)
    assert resample(torch.ones(3, 0), 8000, 16000).shape == (3, 0)
    with pytest.raises(ValueError, match="positive"):
        resample(torch.ones(4), 0, 16000)


# ---- the model's input contract ----------------------------------------------------------------------------
def test_layouts_give_the_same_mono_clip():
    x = _tone(1000, 16000, channels=2)
    frames_first = as_waveform(x)
    channels_first = as_waveform(x.T.copy())
    torch.testing.assert_close(frames_first, channels_first)
    torch.testing.assert_close(frames_first, torch.from_numpy(x.mean(1)))
    torch.testing.assert_close(as_waveform(torch.from_numpy(x.T.copy())), frames_first)
    assert as_waveform(np.zeros((3, 3), np.float32)).shape == (3,)  # a tie: channels first


def test_integer_pcm_is_converted():
    x = np.array([0, 16384, -32768, 32767], np.int16)
    torch.testing.assert_close(as_waveform(x), torch.tensor([0.0, 0.5, -1.0, 32767 / 32768]))
    torch.testing.assert_close(as_waveform(np.array([128, 255, 0], np.uint8)), torch.tensor([0.0, 127 / 128, -1.0]))
    torch.testing.assert_close(as_waveform(torch.tensor([2 ** 30], dtype=torch.int32)), torch.tensor([0.5]))


@pytest.mark.parametrize("bad,phrase", [
    (np.full(100, 1e6, np.float32), "peak amplitude"),
    (np.full(100, MAX_PEAK * 1.01, np.float32), "peak amplitude"),
    (np.ones(10, bool), "real samples"),
    (np.ones(10, np.complex64), "real samples"),
    (np.ones((2, 3, 4), np.float32), "must be 1-D"),
    (np.ones((100, 100), np.float32), "neither dimension looks like channels"),
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.1, np.inf], np.float32), "NaN or Inf"),
    (np.ones(4, np.uint16), "unsigned PCM is 8-bit"),
])
def test_bad_arrays_are_refused(bad, phrase):
    with pytest.raises(ValueError, match=phrase):
        as_waveform(bad, "audio[0]")


def test_short_clips_are_padded_long_ones_refused():
    for rate in (8000, 16000, 44101):
        waves, _ = validate_audio_batch([np.full(5, 0.5, np.float32)], rate, 60.0)
        assert waves[0].shape == (math.ceil(MIN_CLIP_SECONDS * rate),)
        assert torch.equal(waves[0][:5], torch.full((5,), 0.5)) and not waves[0][5:].any()
    with pytest.raises(ValueError, match="longer than the limit"):
        validate_audio_batch([np.zeros((2, 16000 * 3), np.int16)], 16000, 2.0)


def test_load_a_window(tmp_path):
    x = _tone(16000, 16000, channels=2)
    for subtype, fmt in (("PCM_16", "WAV"), ("PCM_16", "FLAC")):
        path = tmp_path / f"w.{fmt.lower()}"
        sf.write(path, x, 16000, subtype=subtype, format=fmt)
        full, _ = load_audio(path)
        part, rate = load_audio(path, start_seconds=0.25, max_seconds=0.5)
        assert rate == 16000 and np.array_equal(part, full[4000:12000])
        assert np.array_equal(load_audio(path, start_seconds=0.75)[0], full[12000:])
        assert np.array_equal(load_audio(path, max_seconds=5.0)[0], full)
        with pytest.raises(ValueError, match="at or after its end"):
            load_audio(path, start_seconds=1.0)
        with pytest.raises(ValueError, match="start >= 0"):
            load_audio(path, start_seconds=-1.0)

"""Audio front ends (``alarm_kernels.frontend``) against independent computations, with real numbers:

- ``kaldi_fbank``: an independent float64 NumPy re-expression of Kaldi's rules (``kaldi_numpy.py``; torchaudio
  cannot be imported next to the CPU torch), over windows, edge modes, pre-emphasis, DC removal, FFT sizes, bands;
- ``w2v_bert_fbank``: transformers' ``SeamlessM4TFeatureExtractor`` on the clip with 160 zeros on each side;
- ``whisper_log_mel``: transformers' ``WhisperFeatureExtractor`` per 30 s piece (published mode) and its batched
  torch path on a zero-padded batch (the clip-length mode);

each on random signals of odd lengths (a too-short clip, exactly 30 s, longer than 30 s), in float64 (agreement to
rounding) and float32 (the tolerances docs/kernels.md states: log units, w2v-BERT in normalised units). Then the
Triton backend (interpreter on CPU) against the reference, NaN-prefilled outputs, and bad inputs.
"""
import numpy as np
import pytest
import torch
from conftest import DEVICE, HAS_CUDA
from kaldi_numpy import fbank as kaldi_fbank_numpy

import alarm_kernels as ak
from alarm_kernels._utils import nan_prefill

# float32 tolerances (max abs error) against the float64 computations, stated in docs/kernels.md
KALDI_LOG_TOL = 1e-3  # natural-log energies
W2V_BERT_TOL = 3e-3  # normalised features (unit variance per band), fft_dtype=float32
WHISPER_TOL = 1e-4  # Whisper's (log10 + 4) / 4 units
KALDI_OPTIONS = [
    {},
    dict(window="hanning", num_mel_bins=128),  # SSLAM's front end
    dict(snip_edges=False),
    dict(window="hamming", remove_dc_offset=False, preemphasis=0.0, num_mel_bins=40),
    dict(window="blackman", round_to_power_of_two=False, frame_length_ms=20.0, low_freq=64.0, high_freq=-400.0,
         use_power=False),
    dict(window="rectangular", use_log=False, snip_edges=False, frame_shift_ms=12.5, sample_rate=8000.0,
         num_mel_bins=15),
]


def _packed(lengths, seed, scale=0.1, dtype=torch.float32):
    """Seeded random pieces (white noise plus a tone, so bands differ in level), packed, and the pieces."""
    g = np.random.default_rng(seed)
    pieces = []
    for n in lengths:
        t = np.arange(n) / 16000.0
        pieces.append(scale * (g.standard_normal(n) + 3.0 * np.sin(2 * np.pi * g.uniform(100, 3000) * t)))
    x = torch.tensor(np.concatenate(pieces) if pieces else np.zeros(0), dtype=dtype)
    return x, ak.seqlens_to_cu_seqlens(lengths), pieces


def _segments(y, cu):
    bounds = cu.tolist()
    return [y[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _option_id(options):
    return ",".join(f"{k}={v}" for k, v in options.items()) or "default"


@pytest.mark.parametrize("options", KALDI_OPTIONS, ids=_option_id)
def test_kaldi_fbank_matches_kaldi_rules(options):
    lengths = [0, 7, 399, 400, 401, 1601, 4813]
    x, cu, pieces = _packed(lengths, seed=len(options), scale=3000.0, dtype=torch.float64)
    expected = [kaldi_fbank_numpy(p, **options) for p in pieces]
    linear = options.get("use_log", True) is False
    cases = [(torch.float64, None, 1e-9), (torch.float32, None, 1e-5 if linear else KALDI_LOG_TOL),
             (torch.float32, torch.float64, 1e-5)]  # an exact spectrum leaves the fp32 rounding of the output
    for dtype, fft_dtype, tol in cases:
        feats, cu_frames = ak.kaldi_fbank(x.to(dtype), cu, fft_dtype=fft_dtype, **options)
        assert feats.dtype == dtype and cu_frames.dtype == torch.int32
        got = _segments(feats, cu_frames)
        for i, (mine, ref) in enumerate(zip(got, expected, strict=True)):
            assert mine.shape == ref.shape, f"piece {i} ({lengths[i]} samples): {tuple(mine.shape)} vs {ref.shape}"
            if ref.size:
                err = np.abs(mine.double().numpy() - ref).max() / (np.abs(ref).max() if linear else 1.0)
                assert err <= tol, f"{dtype} piece {i} ({lengths[i]} samples): max error {err:.3e} > {tol}"


def _seamless(piece, extractor):
    padded = np.pad(piece.astype(np.float32), 160)
    out = extractor(padded, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    return out["input_features"][0, : int(out["attention_mask"].sum())].numpy()


def test_w2v_bert_fbank_matches_seamless_extractor():
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, stride=2, sampling_rate=16000)
    # 79: shorter than a window with its edges (no frame); 80: one frame (no stacked row); 480000: 30 s; 720007: 45 s
    lengths = [79, 80, 81, 401, 16001, 480000, 720007]
    x, cu, pieces = _packed(lengths, seed=3)
    frames = [1 + (n + 320 - 400) // 160 if n + 320 >= 400 else 0 for n in lengths]
    # float32 waves with the default float64 spectrum follow the extractor's arithmetic (bitwise equal here);
    # float64 waves skip its float32 roundings (of the log-mel, then of the normalisation; 1.6e-4 measured on these
    # signals); a float32 spectrum is the fast approximation
    cases = [(torch.float32, torch.float64, 1e-5), (torch.float64, torch.float64, 1e-3),
             (torch.float32, torch.float32, W2V_BERT_TOL)]
    for dtype, fft_dtype, tol in cases:
        feats, cu_out = ak.w2v_bert_fbank(x.to(dtype), cu, fft_dtype=fft_dtype)
        assert feats.shape[1] == 160 and feats.dtype == dtype
        assert (cu_out[1:] - cu_out[:-1]).tolist() == [f // 2 for f in frames]
        for i, mine in enumerate(_segments(feats, cu_out)):
            if frames[i] < 2:
                continue  # the extractor cannot take a padded clip shorter than one window
            ref = _seamless(pieces[i], extractor)
            err = np.abs(mine.double().numpy() - ref).max()
            assert err <= tol, f"{dtype} clip {i} ({lengths[i]} samples): max error {err:.3e} > {tol}"


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_log_mel_matches_extractor_per_30s_piece(n_mels):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    # a 45 s clip is two pieces (30 s and 15 s, cut as the encoder cuts); 480000: exactly 30 s
    lengths = [1, 199, 200, 201, 401, 16001, 480000, 720007]
    _, _, pieces = _packed(lengths, seed=n_mels)
    pieces = pieces[:-1] + [pieces[-1][:480000], pieces[-1][480000:]]
    x = torch.tensor(np.concatenate(pieces), dtype=torch.float64)
    cu = ak.seqlens_to_cu_seqlens([len(p) for p in pieces])
    ref = extractor([p.astype(np.float32) for p in pieces], sampling_rate=16000, return_tensors="np")
    ref = ref["input_features"]
    for dtype in (torch.float64, torch.float32):
        mel = ak.whisper_log_mel(x.to(dtype), cu, n_mels)
        assert mel.shape == (len(pieces), n_mels, 3000) and mel.dtype == dtype
        err = np.abs(mel.double().numpy() - ref).max(axis=(1, 2))
        assert err.max() <= WHISPER_TOL, f"{dtype}: max error per piece {err}"


def test_whisper_log_mel_clip_length_matches_padded_batch():
    """The clip-length mode equals the extractor's batched torch path on pieces zero padded to a common length of at
    least the longest + 400 samples (what WhisperAudioEncoder fed it): the first n_frames frames, max per row."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=128)
    lengths = [1, 150, 321, 4001, 16000, 480000]
    x, cu, pieces = _packed(lengths, seed=5)
    batch = np.zeros((len(pieces), max(lengths) + 400 + 77), dtype=np.float32)
    for i, p in enumerate(pieces):
        batch[i, : len(p)] = p
    ref = extractor._torch_extract_fbank_features(batch)
    for n_frames in (3000, 1501, 7):
        mel = ak.whisper_log_mel(x, cu, 128, window_samples=None, n_frames=n_frames)
        assert mel.shape == (len(pieces), 128, n_frames)
        err = np.abs(mel.numpy() - ref[..., :n_frames]).max()
        assert err <= WHISPER_TOL, f"n_frames={n_frames}: max error {err:.3e}"


@pytest.mark.parametrize("op", ["kaldi", "w2v_bert", "whisper", "whisper_clip"])
def test_triton_matches_reference(op):
    """The Triton backend (interpreter on CPU, fp32) against the reference in float64 and float32, every output
    element written (NaN-prefilled allocations), including empty and too-short pieces and an empty batch."""
    lengths = [0, 1, 399, 883, 2500, 0, 1777]
    x, cu, _ = _packed(lengths, seed=7, scale=1.0)
    x, cu = x.to(DEVICE), cu.to(DEVICE)

    def run(backend, dtype, xs=x, cus=cu):
        if op == "kaldi":
            return ak.kaldi_fbank(xs.to(dtype), cus, num_mel_bins=40, window="hanning", snip_edges=False,
                                  backend=backend)[0]
        if op == "w2v_bert":
            return ak.w2v_bert_fbank(xs.to(dtype), cus, backend=backend)[0]
        if op == "whisper":
            return ak.whisper_log_mel(xs.to(dtype), cus, 80, window_samples=4000, backend=backend)
        return ak.whisper_log_mel(xs.to(dtype), cus, 128, window_samples=None, n_frames=20, backend=backend)

    oracle = run("reference", torch.float64)
    low = run("reference", torch.float32)
    with nan_prefill():
        fast = run("triton", torch.float32)
    assert fast.shape == oracle.shape and fast.dtype == torch.float32
    assert not torch.isnan(fast).any()
    ref_err = (low.double() - oracle).abs().max().item()
    err = (fast.double() - oracle).abs().max().item()
    assert err <= 2 * ref_err + 1e-5 * max(1.0, oracle.abs().max().item()), (err, ref_err)
    empty = torch.zeros(0, device=DEVICE)
    assert run("triton", torch.float32, empty, torch.zeros(1, dtype=torch.int32, device=DEVICE)).shape[0] == 0


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_auto_runs_triton_on_cuda():
    x, cu, _ = _packed([16000, 3000], seed=1)
    mel = ak.whisper_log_mel(x.cuda(), cu.cuda())
    ref = ak.whisper_log_mel(x, cu)
    assert (mel.cpu() - ref).abs().max() <= WHISPER_TOL


def test_bad_inputs_name_the_argument():
    x, cu, _ = _packed([1000, 500], seed=0)
    cases = [
        (lambda: ak.kaldi_fbank(x.half(), cu), "waves"),
        (lambda: ak.kaldi_fbank(x, cu.long()), "cu_seqlens"),
        (lambda: ak.kaldi_fbank(x[:10], cu), "cu_seqlens"),
        (lambda: ak.kaldi_fbank(x, cu, num_mel_bins=3), "num_mel_bins"),
        (lambda: ak.kaldi_fbank(x, cu, window="kaiser"), "window"),
        (lambda: ak.kaldi_fbank(x, cu, preemphasis=1.5), "preemphasis"),
        (lambda: ak.kaldi_fbank(x, cu, frame_length_ms=0.05), "frame_length_ms"),
        (lambda: ak.kaldi_fbank(x, cu, low_freq=9000.0), "low_freq"),
        (lambda: ak.kaldi_fbank(x, cu, round_to_power_of_two=False, frame_length_ms=25.0625), "round_to_power_of_two"),
        (lambda: ak.w2v_bert_fbank(x, cu, edge_samples=-1), "edge_samples"),
        (lambda: ak.whisper_log_mel(x, cu, window_samples=999), "window_samples"),
        (lambda: ak.whisper_log_mel(x, cu, window_samples=None), "n_frames"),
        (lambda: ak.whisper_log_mel(x, cu, n_frames=10), "n_frames"),
        (lambda: ak.whisper_log_mel(x, cu, n_mels=0), "n_mels"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
    with pytest.raises(RuntimeError, match="float64"):
        ak.whisper_log_mel(x.double(), cu, backend="triton")

"""SSLAM computes what the published SSLAM computes under ALARM: the native ViT against a re-expression of the
published model (tests/alarm/published_sslam.py) with the same random weights, loaded from a checkpoint in the
published layout by the explicit key map; the published front end (Kaldi fbank, 1024-frame pieces, ``F // 2``
tokens, CLS removed) on clips shorter than, equal to and longer than one piece."""
import json

import pytest
import torch
from safetensors.torch import save_file

from alarm.model import EncoderSpec
from alarm.model.encoders import build_encoder
from alarm.model.sslam import SSLAMConfig, SSLAMViT, load_sslam, map_sslam_state, sincos_positions
from alarm.model.tiny import synthetic_audio
from tests.kernels import kaldi_numpy
import published_sslam as pub


def _write(folder, model, fmt="safetensors", state=None, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in (state if state is not None else model.state_dict()).items()}
    if fmt == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config if config is not None else model.config))
    return folder


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A random published model (positions scaled, so the checkpoint's own table must be the one used)."""
    torch.manual_seed(0)
    model = pub.randomize_(pub.PublishedSSLAM(), seed=1)
    with torch.no_grad():
        model.model.fixed_positional_encoder.positions.mul_(1.5)
    return model, _write(tmp_path_factory.mktemp("sslam") / "ckpt", model)


def _spec(path, layers=(1, 3), **kw):
    return EncoderSpec(**{**dict(name="sslam", kind="sslam", layers=list(layers), dim=pub.D, chunk_seconds=10.24,
                                 path=str(path), dtype="float32"), **kw})


@pytest.mark.parametrize("dim,length", [(pub.D, pub.MAX_LENGTH), (768, 768)])
def test_positions_equal_the_published_table(dim, length):
    torch.testing.assert_close(sincos_positions(dim, length, 8), pub.published_positions(dim, length, 8)[0],
                               rtol=0, atol=1e-6)


def test_vit_equals_published_on_given_fbank(published):
    """float64 both sides (the published softmax runs in float32, hence 1e-6): block outputs 1 and 3 (published
    indices 0 and 2) with the CLS token removed."""
    model, folder = published
    enc = build_encoder(_spec(folder))
    enc.model.double()
    fbank = torch.randn(3, 1024, 128, dtype=torch.float64)
    got = enc.hidden({"fbank": fbank}, torch.full((3,), 512))
    want = model.double().hidden_states(fbank.unsqueeze(1))
    model.float()
    assert [g.shape for g in got] == [torch.Size([3, 512, pub.D])] * 2
    for g, i in zip(got, (0, 2), strict=True):
        torch.testing.assert_close(g, want[i], rtol=1e-6, atol=1e-6)


def test_blocks_above_the_highest_layer_are_dropped(published):
    _, folder = published
    enc = build_encoder(_spec(folder, layers=(2,)))
    assert len(enc.model.blocks) == 2 and enc.n_blocks == pub.DEPTH


def test_bin_checkpoint_loads_with_weights_only(published, tmp_path):
    model, _ = published
    folder = _write(tmp_path / "bin", model, fmt="bin")
    loaded = load_sslam(str(folder))
    want = map_sslam_state(model.state_dict(), SSLAMConfig.from_published(model.config))
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0)
    torch.testing.assert_close(loaded.positions, want["positions"], rtol=0, atol=0)


def test_random_init_from_config_runs_and_has_the_published_size():
    """Without a path: random weights from SSLAMConfig fields; the full-size ViT-B has 85 254 144 trainable
    parameters (the published checkpoint adds its 6144 x 768 position table and the AudioSet head)."""
    cfg = SSLAMConfig()
    with torch.device("meta"):
        vit = SSLAMViT(cfg)
    assert sum(p.numel() for p in vit.parameters()) == 85_254_144
    assert vit.positions.shape == (768 * 8, 768)
    enc = build_encoder(EncoderSpec(name="sslam", kind="sslam", layers=[1, 2], dim=32, chunk_seconds=0.32,
                                    hf_config=dict(embed_dim=32, depth=2, num_heads=2, max_length=4)))
    out = enc.hidden({"fbank": torch.randn(2, 32, 128)}, torch.tensor([16, 3]))
    assert [o.shape for o in out] == [torch.Size([2, 16, 32])] * 2


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("model.blocks.1.attn.qkv.weight"), "missing keys ['model.blocks.1.attn.qkv.weight']"),
    (lambda s: s.update({"model.blocks.9.norm1.weight": torch.ones(pub.D)}),
     "unexpected keys ['model.blocks.9.norm1.weight']"),
    (lambda s: s.update({"model.pre_norm.weight": torch.ones(pub.D + 1)}),
     f"model.pre_norm.weight has shape [{pub.D + 1}], expected [{pub.D}]"),
])
def test_bad_checkpoints_name_the_keys(published, tmp_path, edit, message):
    model, _ = published
    state = dict(model.state_dict())
    edit(state)
    folder = _write(tmp_path / "bad", model, state=state)
    with pytest.raises(ValueError) as err:
        load_sslam(str(folder))
    assert message in str(err.value) and "model.safetensors" in str(err.value)


def test_unsupported_variant_and_missing_weights_are_refused(published, tmp_path):
    model, _ = published
    folder = _write(tmp_path / "prenorm", model, config={**model.config, "layer_norm_first": True})
    with pytest.raises(ValueError, match="layer_norm_first=True is not supported"):
        load_sslam(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model.safetensors or pytorch_model.bin"):
        load_sslam(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="chunk_seconds 10.0 gives 1000-frame pieces"):
        build_encoder(_spec(published[1], chunk_seconds=10.0))


def _numpy_fbank(wave):
    """The published ``torchaudio.compliance.kaldi.fbank`` call, by the suite's float64 NumPy Kaldi."""
    feats = kaldi_numpy.fbank(wave[0].numpy(), num_mel_bins=128, sample_rate=16000.0, frame_length_ms=25.0,
                              frame_shift_ms=10.0, window="hanning")
    return torch.from_numpy(feats)


@pytest.mark.parametrize("seconds", [[3.1, 0.02], [10.24], [12.5, 10.225]])
def test_front_end_and_pieces_equal_published(published, seconds):
    """Clips shorter than, equal to (10.24 s: 1024 frames) and longer than one piece; 0.02 s: 2 frames, 1 token;
    10.225 s: 1023 frames (511 tokens: the last row of patches 7/8 used). float64 clips and weights on both sides."""
    model, folder = published
    enc = build_encoder(_spec(folder))
    enc.model.double()
    clips = [torch.from_numpy(c).double() for c in synthetic_audio(seconds, seed=11)]
    layers, cu = enc(clips)
    frames = [1 + (len(c) - 80) // 160 for c in clips]
    assert (cu[1:] - cu[:-1]).tolist() == [f // 2 for f in frames]
    want = pub.published_tokens(model.double(), clips, _numpy_fbank, layers=(0, 2))
    model.float()
    for b in range(len(clips)):
        for j in range(2):
            torch.testing.assert_close(layers[j][cu[b]:cu[b + 1]], want[b][j], rtol=1e-6, atol=1e-6)


def test_too_short_clip_is_refused(published):
    enc = build_encoder(_spec(published[1]))
    with pytest.raises(ValueError, match="a clip of 79 samples is too short"):
        enc([torch.zeros(79)])

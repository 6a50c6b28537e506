"""ALARM model pieces: audio I/O and resampling, encoders, adapters, splicing, frozen modules, persistence,
input validation, parameter counts, generation and the ``alarm generate`` CLI (tiny configs, CPU)."""
import math
import os
import wave

import numpy as np
import pytest
import torch

from alarm.audio import load_audio, resample, resample_batch
from alarm.model import ALARMConfig, ALARMEnsemble, ALARMModel, EncoderSpec
from alarm.model.adapters import Adapter
from alarm.model.encoders import build_encoder
from alarm.model.llm import load_tokenizer
from alarm.model.splice import splice_packed, splice_padded, tokenize_batch
from alarm.model.tiny import synthetic_audio
from alarm.model.layout import Packed, Padded
from alarm_kernels.varlen import pad_packed, seqlens_to_cu_seqlens, unpack


@pytest.fixture(scope="module")
def ca_model():
    return ALARMModel(ALARMConfig.tiny("CA"))


def _write_wav(path, x, rate, channels=1):
    data = (np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.repeat(data, channels).tobytes())


# ---- audio ---------------------------------------------------------------------------------------
def test_resample_sine_and_lengths():
    t = torch.arange(44100) / 44100
    y = resample(torch.sin(2 * math.pi * 440 * t), 44100, 16000)
    ref = torch.sin(2 * math.pi * 440 * torch.arange(16000) / 16000)
    assert y.shape == (16000,)
    assert (y[200:-200] - ref[200:-200]).abs().max() < 2e-3
    waves = [torch.randn(8000), torch.randn(16000), torch.randn(22050)]
    out = resample_batch(waves, [8000, 16000, 22050], 16000)
    assert [len(w) for w in out] == [16000, 16000, 16000] and out[1] is waves[1]
    torch.testing.assert_close(out[0], resample(waves[0], 8000, 16000))


def test_load_audio(tmp_path):
    x = synthetic_audio([0.25], rate=22050)[0] * 0.5
    _write_wav(tmp_path / "a.wav", x, 22050, channels=2)
    y, rate = load_audio(str(tmp_path / "a.wav"))
    assert rate == 22050 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1e-3
    with pytest.raises(ValueError, match="not found"):
        load_audio(str(tmp_path / "missing.wav"))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00junk")
    with pytest.raises(ValueError, match="cannot read"):
        load_audio(str(tmp_path / "bad.wav"))


# ---- encoders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("idx", [0, 1])
def test_encoder_lengths_chunks_and_batch_independence(idx):
    spec = ALARMConfig.tiny("CA").encoders[idx]
    spec.chunk_seconds, spec.clip_length = 1.0, idx == 0  # Whisper: the opt-in clip-length mode
    enc = build_encoder(spec)
    blocks = enc.encoder.layers if idx == 0 else enc.model.encoder.layers
    assert len(blocks) == max(spec.layers)  # upper blocks dropped
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    waves = [torch.from_numpy(w) for w in synthetic_audio([0.5, 2.3, 0.07], seed=2)]
    layers, cu = enc(waves)
    assert len(layers) == len(spec.layers) and layers[0].shape[1] == spec.dim
    if idx == 0:  # Whisper: 100 mel frames/s -> 50 Hz, chunks of 1 s run separately
        per_chunk = [[len(c) for c in torch.split(w, 16000)] for w in waves]
        expect = [sum(-(-(n // 160) // 2) for n in chunks) for chunks in per_chunk]
        assert (cu[1:] - cu[:-1]).tolist() == expect
    for i, w in enumerate(waves):
        alone, _ = enc([w])
        for a, b in zip(alone, layers, strict=True):
            torch.testing.assert_close(a, b[cu[i]:cu[i + 1]], rtol=1e-4, atol=1e-5)
    enc.train()
    assert not enc.training


# ---- adapters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,norm", [("conv", "batch"), ("conv", "layer"), ("mlp", "layer")])
@pytest.mark.parametrize("training", [False, True])
def test_adapter_packed_equals_padded(kind, norm, training):
    torch.manual_seed(0)
    spec = EncoderSpec(name="e", kind="whisper", layers=[1, 2, 3], dim=24, adapter=kind, norm=norm)
    ad = Adapter(spec, adapter_dim=32, adapter_hidden=40, mlp_hidden=32, llm_hidden=48).train(training)
    with torch.no_grad():
        ad.layer_logits.normal_()
        if norm == "batch":
            ad.norm1.running_mean.normal_(), ad.norm1.running_var.uniform_(0.5, 2)
    lengths = torch.tensor([7, 1, 12, 4])
    cu = seqlens_to_cu_seqlens(lengths)
    layers = [torch.randn(int(lengths.sum()), 24) for _ in range(3)]
    yp, cu_y, _ = ad(Packed(layers, cu))
    padded = [pad_packed(x, cu)[0] for x in layers]
    yr, n = ad(Padded(padded, lengths))
    expect = lengths // 2 if kind == "conv" else lengths
    assert (cu_y[1:] - cu_y[:-1]).tolist() == expect.tolist() == n.tolist()
    for i, y in enumerate(unpack(yp, cu_y)):
        torch.testing.assert_close(y, yr[i, : int(n[i])], rtol=1e-4, atol=1e-5)
    assert yr[0, int(n[0]):].abs().sum() == 0 if yr.shape[1] > int(n[0]) else True


# ---- splicing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_length", [4096, 40])
def test_splice_packed_equals_padded(ca_model, max_length):
    tok, embed = ca_model.tokenizer, ca_model.llm.embed()
    h = ca_model.config.llm_hidden
    text = tokenize_batch(tok, ["hi", "Describe the sound please.", "?"], ["A dog.", "Calm voice, no music.", ""])
    lengths = torch.tensor([5, 9, 3])
    audio, cu = torch.randn(int(lengths.sum()), h), seqlens_to_cu_seqlens(lengths)
    s, e = torch.randn(h), torch.randn(h)
    packed = splice_packed(embed, text, audio, cu, s, e, max_length)
    padded = splice_padded(embed, text, list(unpack(audio, cu)), s, e, max_length)
    mask = padded["attention_mask"].bool()
    torch.testing.assert_close(packed["inputs_embeds"], padded["inputs_embeds"][mask])
    assert torch.equal(packed["labels"], padded["labels"][mask])
    assert torch.equal(packed["position_ids"], padded["position_ids"][mask])
    n = (packed["cu_seqlens"][1:] - packed["cu_seqlens"][:-1]).tolist()
    assert max(n) <= max_length and n == mask.sum(1).tolist()
    prefix = len(tok.encode("<|im_start|>user\n", add_special_tokens=False))
    rows = list(unpack(packed["inputs_embeds"], packed["cu_seqlens"]))
    torch.testing.assert_close(rows[1][prefix], s)
    torch.testing.assert_close(rows[1][prefix + 1: prefix + 10], audio[5:14])
    torch.testing.assert_close(rows[1][prefix + 10], e)
    labels = list(unpack(packed["labels"], packed["cu_seqlens"]))
    target = tok.encode("Calm voice, no music.", add_special_tokens=False)
    if max_length == 4096:
        assert labels[1][-len(target):].tolist() == target  # no EOS appended
        assert (labels[1][:-len(target)] == -100).all()
        assert (labels[2] == -100).all()


# ---- frozen modules, modes, persistence ----------------------------------------------------------
def test_frozen_modules_stay_eval(ca_model):
    ca_model.train()
    assert ca_model.audio.fusion.training
    for m in [ca_model.encoders, ca_model.llm, ca_model.llm.model, ca_model.audio.adapters]:
        assert all(not x.training for x in m.modules())
    frozen = [n for n, p in ca_model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("llm.") for n in frozen) and any(n.startswith("encoders.") for n in frozen)
    assert all(not n.startswith("audio.fusion") for n in frozen)
    assert any(n.startswith("audio.adapters") for n in frozen)  # stage B
    ca_model.eval()


def test_save_load_round_trip(ca_model, tmp_path):
    clips = synthetic_audio([0.6, 0.9], seed=3)
    with torch.no_grad():
        ca_model.audio.fusion.out_proj.bias.normal_()  # differ from a fresh init
        before = ca_model(clips, 16000, ["a", "b"], ["x y", "z"]).loss
    ca_model.save_pretrained(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["SHA256SUMS", "alarm_config.json", "audio_side.safetensors"]
    loaded = ALARMModel.from_pretrained(str(tmp_path / "m"))
    for k, v in ca_model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        after = loaded(clips, 16000, ["a", "b"], ["x y", "z"]).loss
    assert torch.equal(before, after)
    with pytest.raises(ValueError, match="not found"):
        ALARMModel.from_pretrained(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="alarm_config.json is missing"):
        ALARMModel.from_pretrained(str(tmp_path / "empty"))


# ---- bad inputs ----------------------------------------------------------------------------------
def test_bad_inputs(ca_model):
    clip = synthetic_audio([0.3])[0]
    good = dict(prompts=["p"], targets=["t"])
    cases = [
        (([clip], 16000.0), "sampling_rate"),
        (([clip], "16000"), "sampling_rate"),
        (([np.zeros(0, np.float32)], 16000), "empty"),
        (([np.zeros(16000 * 61, np.float32)], 16000), "longer than the limit"),
        (([clip, clip], 16000), "must match"),
        (([clip], [16000, 16000]), "sampling rates"),
        (([], 16000), "non-empty"),
        (([np.full(100, np.nan, np.float32)], 16000), "NaN"),
    ]
    for (audio, sr), msg in cases:
        with pytest.raises(ValueError, match=msg):
            ca_model(audio, sr, **good)
    with pytest.raises(ValueError, match="must match"):
        ca_model([clip], 16000, ["p", "q"], ["t", "u"])
    with pytest.raises(ValueError, match="must match"):
        ca_model([clip], 16000, ["p"], ["t", "u"])
    with pytest.raises(ValueError, match="layout"):
        ca_model([clip], 16000, ["p"], ["t"], layout="fastest")
    # a 31 ms clip is padded to the input contract's minimum and still gives audio tokens
    assert torch.isfinite(ca_model([np.zeros(500, np.float32)], 16000, **good).loss)


def test_config_json_round_trip():
    cfg = ALARMConfig.tiny("P")
    assert ALARMConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError):
        ALARMConfig.tiny("XYZ")
    with pytest.raises(ValueError):
        ALARMConfig.tiny("CA", n_encoders=1)


# ---- parameter counts ----------------------------------------------------------------------------
def test_ca_trainable_params_full_size():
    from alarm.model.params import audio_tokens, trainable_params
    cfg = ALARMConfig.full("CA")
    n = trainable_params(cfg)
    assert abs(n - 63.5e6) < 0.1e6, n
    assert audio_tokens(cfg, 30.0) == 750
    assert audio_tokens(ALARMConfig.full("P"), 30.0) == 812  # + 2 separators = the spec's 814
    assert abs(trainable_params(ALARMConfig.full("P")) - 81.23e6) < 0.01e6  # published ALARM-P


# ---- generation ----------------------------------------------------------------------------------
def test_generate_and_ensemble(ca_model):
    clip = synthetic_audio([0.7], seed=4)[0]
    out = ca_model.generate(clip, "What is it?", sampling_rate=16000, max_thinking_tokens=3, max_new_tokens=40)
    gen = out["generation"]
    assert len(out["text"]) == 1 and int(gen.lengths[0]) >= 1
    assert int(gen.thinking_tokens[0]) <= 3
    r = ALARMModel(ALARMConfig.tiny("sum", n_encoders=1, init_seed=7), tokenizer=ca_model.tokenizer,
                   llm=ca_model.llm)
    ens = ALARMEnsemble([ca_model, r])
    inputs = ens.prompt_embeddings([clip, clip[:8000]], 16000, ["Q1", "Q2?"])
    n_ca = ca_model.audio_embeddings([clip], 16000)[0].shape[0]
    n_r = r.audio_embeddings([clip], 16000)[0].shape[0]
    assert int(inputs["attention_mask"][0].sum()) > n_ca + n_r + 4
    out = ens.generate([clip], "What?", max_thinking_tokens=2, max_new_tokens=10)
    assert len(out["text"]) == 1


def test_cli_generate(ca_model, tmp_path, capsys):
    from alarm.cli import main
    ca_model.save_pretrained(str(tmp_path / "m"))
    _write_wav(tmp_path / "a.wav", synthetic_audio([0.5], rate=8000)[0], 8000)
    assert main(["generate", "--model", str(tmp_path / "m"), "--audio", str(tmp_path / "a.wav"),
                 "--prompt", "What?", "--max-thinking-tokens", "2", "--max-new-tokens", "8"]) == 0
    assert main(["generate", "--model", str(tmp_path / "m"), "--audio", str(tmp_path / "no.wav"),
                 "--prompt", "What?"]) == 2
    assert "not found" in capsys.readouterr().err


def test_fold_batchnorm_exact():
    torch.manual_seed(1)
    spec = EncoderSpec(name="e", kind="whisper", layers=[1, 2], dim=16, norm="batch")
    ad = Adapter(spec, adapter_dim=32, adapter_hidden=40, mlp_hidden=32, llm_hidden=48).eval()
    with torch.no_grad():
        for bn in (ad.norm1, ad.norm2):
            bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.normal_(), bn.bias.normal_()
    lengths = torch.tensor([7, 1, 2, 12])
    cu = seqlens_to_cu_seqlens(lengths)
    layers = [torch.randn(int(lengths.sum()), 16) for _ in range(2)]
    padded = [pad_packed(x, cu)[0] for x in layers]
    with torch.no_grad():
        yp = ad(Packed(layers, cu)).data
        yr = ad(Padded(padded, lengths)).data
        ad.fold_batchnorm()
        torch.testing.assert_close(ad(Packed(layers, cu)).data, yp, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ad(Padded(padded, lengths)).data, yr, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the folded edge terms follow the bf16 conv output
            for got, want in ((ad(Packed(layers, cu)).data, yp), (ad(Padded(padded, lengths)).data, yr)):
                torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2)


def test_pretrained_parts_from_local_paths(tmp_path):
    """Encoders, LLM and tokenizer load with from_pretrained from local folders (no hub access)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM, Wav2Vec2BertConfig, Wav2Vec2BertModel, WhisperConfig, \
        WhisperModel
    tiny = ALARMConfig.tiny("CA")
    w_spec, b_spec = tiny.encoders
    WhisperModel(WhisperConfig(**w_spec.hf_config)).save_pretrained(tmp_path / "whisper")
    Wav2Vec2BertModel(Wav2Vec2BertConfig(**b_spec.hf_config)).save_pretrained(tmp_path / "w2v")
    tok = load_tokenizer(tiny)
    tok.save_pretrained(tmp_path / "llm")
    Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), **tiny.llm_config)).save_pretrained(tmp_path / "llm")
    w_spec.path, w_spec.hf_config = str(tmp_path / "whisper"), None
    b_spec.path, b_spec.hf_config = str(tmp_path / "w2v"), None
    cfg = ALARMConfig.tiny("CA", encoders=[w_spec, b_spec], llm_path=str(tmp_path / "llm"), llm_config=None,
                           tiny_tokenizer_vocab=None)
    model = ALARMModel(cfg)
    clips = synthetic_audio([0.5, 0.8], seed=5)
    with torch.no_grad():
        lf = model(clips, 16000, ["a", "b"], ["c d", "e"], layout="packed").loss
        lr = model(clips, 16000, ["a", "b"], ["c d", "e"], layout="padded").loss
    torch.testing.assert_close(lf, lr, rtol=1e-5, atol=1e-6)


def test_stage_b_loads_stage_a_adapter(ca_model, tmp_path):
    stage_a = ALARMModel(ALARMConfig.tiny("sum", n_encoders=1, init_seed=3), tokenizer=ca_model.tokenizer,
                         llm=ca_model.llm)
    assert stage_a.audio.adapters["whisper"].layer_logits.requires_grad
    stage_a.save_pretrained(str(tmp_path / "a"))
    stage_b = ALARMModel(ALARMConfig.tiny("CA"), tokenizer=ca_model.tokenizer, llm=ca_model.llm)
    stage_b.load_adapter("whisper", str(tmp_path / "a"))
    for k, v in stage_a.audio.adapters["whisper"].state_dict().items():
        assert torch.equal(v, stage_b.audio.adapters["whisper"].state_dict()[k]), k
    with pytest.raises(ValueError, match="no adapter"):
        stage_b.load_adapter("w2v-bert", str(tmp_path / "a"))


def test_model_build_leaves_other_generators_alone(monkeypatch):
    """Building a model seeds its own init and restores the CPU generator; it must not reseed CUDA generators
    (``torch.manual_seed`` would, lazily even before CUDA starts, wiping a trainer's per-rank CUDA seed so that
    every rank drew the same dropout masks)."""
    cuda_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    cuda_seeds.clear()  # the test's own seeding above
    first = ALARMModel(ALARMConfig.tiny("CA"))
    assert torch.equal(torch.rand(3), expected)  # the CPU stream continues as if nothing happened
    second = ALARMModel(ALARMConfig.tiny("CA"))
    assert cuda_seeds == []
    for (name, a), b in zip(first.audio.state_dict().items(), second.audio.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the init is still a function of config.init_seed alone

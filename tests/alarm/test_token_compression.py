"""Token compression: the "pool" adapter and the model's audio token rate (``token_rate_ratio``).

Both execution paths (packed: ``alarm_kernels.varlen_pool``; padded: ``adapters.pool_padded``) must give
the same tokens, loss and gradients; output lengths are checked against closed forms for zero-length,
one-frame and odd-length sequences; config errors name the field (tiny configs, CPU).
"""
import dataclasses

import pytest
import torch

import alarm_kernels as ak
from alarm.model import ALARMConfig, ALARMModel, EncoderSpec
from alarm.model.adapters import Adapter, pool_padded
from alarm.model.config import muq_large, whisper_large_v3
from alarm.model.params import audio_tokens
from alarm.model.tiny import synthetic_audio, tiny_tokenizer
from alarm.model.layout import Packed, Padded
from alarm_kernels.varlen import pad_packed, seqlens_to_cu_seqlens, unpack

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = [0, 1, 7, 4, 9, 0, 2]  # zero-length, one-frame and odd-length sequences
PROMPTS = ["What do you hear?", "Describe the sound.", "Is it music?"]
TARGETS = ["I hear a tone and some noise.", "A calm voice talks about the weather.", "Yes"]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pool_rows(y: torch.Tensor, ratio: int, mode: str) -> torch.Tensor:
    """Independent oracle: pool the rows of one sequence [n, D] over windows of ``ratio``."""
    if y.shape[0] == 0:
        return y
    return torch.stack([c.mean(0) if mode == "mean" else c.amax(0) for c in y.split(ratio)])


# ---- the padded twin of varlen_pool -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["mean", "max"])
@pytest.mark.parametrize("ratio", [1, 2, 3, 4])
def test_pool_padded_equals_varlen_pool(ratio, mode):
    torch.manual_seed(ratio)
    lengths = torch.tensor(LENGTHS)
    cu = seqlens_to_cu_seqlens(lengths)
    x = torch.randint(-3, 4, (int(lengths.sum()), 5)).double().requires_grad_()  # integers: ties for max
    y, cu_y = ak.varlen_pool(x, cu, ratio, mode, backend="reference")
    xp = pad_packed(x, cu)[0]
    yr, n = pool_padded(xp, lengths, ratio, mode)
    assert n.tolist() == [ceil_div(k, ratio) for k in LENGTHS] == (cu_y[1:] - cu_y[:-1]).tolist()
    assert yr.shape[1] == ceil_div(max(LENGTHS), ratio)
    for i, yi in enumerate(unpack(y, cu_y)):
        torch.testing.assert_close(yi, yr[i, : int(n[i])], rtol=0, atol=1e-12)
        assert yr[i, int(n[i]):].abs().sum() == 0
    g = torch.randn_like(y)
    gy = torch.zeros_like(yr)
    for i in range(len(LENGTHS)):
        gy[i, : int(n[i])] = g[cu_y[i]:cu_y[i + 1]]
    (gp,) = torch.autograd.grad(y, x, g)
    (gr,) = torch.autograd.grad(yr, xp, gy)
    torch.testing.assert_close(gp, torch.cat([gr[i, :k] for i, k in enumerate(LENGTHS)]), rtol=0, atol=1e-12)


# ---- adapters: pool kind and token rate, both paths --------------------------------------------------
@pytest.mark.parametrize("rate,rate_mode", [(1, "mean"), (2, "mean"), (4, "max")])
@pytest.mark.parametrize("kind,pool_mode", [("pool", "mean"), ("pool", "max"), ("conv", "mean"), ("mlp", "mean")])
def test_adapter_paths_and_lengths(kind, pool_mode, rate, rate_mode):
    torch.manual_seed(0)
    spec = EncoderSpec(name="e", kind="whisper", layers=[1, 2], dim=12, adapter=kind, pool_ratio=3,
                       pool_mode=pool_mode)
    dims = dict(adapter_dim=16, adapter_hidden=20, mlp_hidden=16, llm_hidden=10)
    ad = Adapter(spec, **dims, token_rate_ratio=rate, token_rate_mode=rate_mode).double().train()
    with torch.no_grad():
        ad.layer_logits.normal_()
    lengths = torch.tensor(LENGTHS)
    cu = seqlens_to_cu_seqlens(lengths)
    layers = [torch.randn(int(lengths.sum()), 12, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    yp, cu_y, _ = ad(Packed(layers, cu))
    padded = [pad_packed(x, cu)[0] for x in layers]
    yr, n = ad(Padded(padded, lengths))

    per_kind = {"pool": lambda k: ceil_div(k, 3), "conv": lambda k: k // 2, "mlp": lambda k: k}[kind]
    expect = [ceil_div(per_kind(k), rate) for k in LENGTHS]
    assert (cu_y[1:] - cu_y[:-1]).tolist() == n.tolist() == expect
    assert Adapter.out_lengths(lengths, kind, 3, rate).tolist() == expect
    for i, y in enumerate(unpack(yp, cu_y)):
        torch.testing.assert_close(y, yr[i, : int(n[i])], rtol=1e-10, atol=1e-12)
    assert all(yr[i, int(n[i]):].abs().sum() == 0 for i in range(len(LENGTHS)))

    # the rate stage pools the rate-1 adapter's tokens (same weights), nothing else
    plain = Adapter(spec, **dims).double().train()
    plain.load_state_dict(ad.state_dict())
    y1, cu1, _ = plain(Packed(layers, cu))
    for got, full in zip(unpack(yp, cu_y), unpack(y1, cu1), strict=True):
        torch.testing.assert_close(got, pool_rows(full, rate, rate_mode), rtol=1e-10, atol=1e-12)

    g = torch.randn_like(yp)
    gy = torch.zeros_like(yr)
    for i in range(len(LENGTHS)):
        gy[i, : int(n[i])] = g[cu_y[i]:cu_y[i + 1]]
    wrt = list(ad.parameters()) + layers
    gp = torch.autograd.grad(yp, wrt, g, allow_unused=True)
    gr = torch.autograd.grad(yr, wrt, gy, allow_unused=True)
    assert sum(a is not None for a in gp) >= 4
    for a, b in zip(gp, gr, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


# ---- whole model: every fusion with pool adapters and/or rates 2 and 4 ---------------------------------
def _pool(spec, ratio, mode):
    return dataclasses.replace(spec, adapter="pool", pool_ratio=ratio, pool_mode=mode)


def _variant(name):
    """A tiny config per fusion, each with pool adapters and/or a token rate above 1."""
    if name == "sum-pool-rate4":
        cfg = ALARMConfig.tiny("sum", n_encoders=1, token_rate_ratio=4)
        cfg = dataclasses.replace(cfg, encoders=[_pool(cfg.encoders[0], 2, "mean")])
    elif name == "concat-pool-rate2max":
        cfg = ALARMConfig.tiny("concat", token_rate_ratio=2, token_rate_mode="max")
        cfg = dataclasses.replace(cfg, encoders=[_pool(cfg.encoders[0], 2, "mean"), _pool(cfg.encoders[1], 3, "max")])
    elif name == "CA-stageA-rate2":
        cfg = ALARMConfig.tiny("CA", stage="A", token_rate_ratio=2)
        cfg = dataclasses.replace(cfg, encoders=[_pool(cfg.encoders[0], 2, "max"), cfg.encoders[1]])
    else:  # P, stage B, rate 4, auxiliary stream through a pool adapter
        cfg = ALARMConfig.tiny("P", token_rate_ratio=4)
        cfg = dataclasses.replace(cfg, encoders=[cfg.encoders[0], _pool(cfg.encoders[1], 2, "mean")])
    return cfg


@pytest.fixture(scope="module")
def clips():
    return synthetic_audio([1.0, 0.55, 1.3], seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(384)


@pytest.fixture(scope="module", params=["sum-pool-rate4", "concat-pool-rate2max", "CA-stageA-rate2", "P-rate4"])
def model(request, tokenizer):
    return ALARMModel(_variant(request.param), tokenizer=tokenizer)


def _expected_lengths(cfg, clips):
    """Closed-form audio tokens per clip: encoder frames -> adapter -> token rate -> fusion."""
    frames = {"whisper": [ceil_div(len(c), 160) // 2 for c in clips],                # 50 Hz
              "w2v-bert": [((len(c) - 400) // 160 + 1) // 2 for c in clips]}         # fbank frames / 2
    per = []
    for e in cfg.encoders:
        adapt = {"pool": lambda f, e=e: ceil_div(f, e.pool_ratio), "conv": lambda f: f // 2,
                 "mlp": lambda f: f, "identity": lambda f: f}[e.adapter]
        per.append([ceil_div(adapt(f), cfg.token_rate_ratio) for f in frames[e.name]])
    if cfg.fusion in ("sum", "concat"):
        return [max(col) for col in zip(*per, strict=True)]
    extra = 0 if cfg.fusion == "CA" else 2 + cfg.p_latents * (len(cfg.encoders) - 1)
    return [n + extra for n in per[0]]


def test_model_paths_agree(model, clips, monkeypatch):
    cfg = model.config
    calls = []
    real = ak.varlen_pool
    monkeypatch.setattr(ak, "varlen_pool", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    model.train()
    lf = model(clips, 16000, PROMPTS, TARGETS, layout="packed").loss
    assert sorted(calls) == sorted([e.pool_ratio for e in cfg.encoders if e.adapter == "pool"]
                                   + [cfg.token_rate_ratio] * len(cfg.encoders)), calls  # on the hot path
    calls.clear()
    lr = model(clips, 16000, PROMPTS, TARGETS, layout="padded").loss
    assert calls == []  # the padded path uses its own pooling
    torch.testing.assert_close(lf, lr, rtol=1e-5, atol=1e-6)
    params = model.trainable_parameters()
    gf = dict(zip(params, torch.autograd.grad(lf, list(params.values())), strict=True))
    gr = dict(zip(params, torch.autograd.grad(lr, list(params.values())), strict=True))
    if cfg.stage == "A":
        assert any(k.startswith("audio.adapters.") and "fc1" in k for k in gf)  # the pool adapter trains
    scale = max(g.abs().max().item() for g in gr.values())
    for name in gr:
        assert torch.isfinite(gf[name]).all(), name
        torch.testing.assert_close(gf[name], gr[name], rtol=1e-4, atol=1e-6 * scale, msg=name)
    model.eval()


def test_model_output_lengths(model, clips):
    cfg = model.config
    with torch.no_grad():
        fast = model.audio_embeddings(clips, 16000, layout="packed")
        ref = model.audio_embeddings(clips, 16000, layout="padded")
    expect = _expected_lengths(cfg, clips)
    assert [x.shape[0] for x in fast] == [x.shape[0] for x in ref] == expect
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if cfg.fusion in ("CA", "P"):  # base stream is Whisper: the parameter-count formula agrees at 1 s
        assert expect[0] == audio_tokens(cfg, 1.0)
    if cfg.fusion == "P":  # P appends the pooled base stream itself after [cond_start, latents, cond_end]
        with torch.no_grad():
            layers, cu = model.encode(list(map(torch.from_numpy, clips)), [16000] * 3)["whisper"]
            base, cu_b, _ = model.audio.adapters["whisper"](Packed(layers, cu))
        for emb, b in zip(fast, unpack(base, cu_b), strict=True):
            torch.testing.assert_close(emb[emb.shape[0] - b.shape[0]:], b, rtol=1e-5, atol=1e-6)


def test_reload_at_another_rate(tmp_path, tokenizer, clips):
    """A saved rate-1 model reloads at rate 2 (no new weights); a single stream is then mean-pooled by 2."""
    model = ALARMModel(ALARMConfig.tiny("sum", n_encoders=1), tokenizer=tokenizer)
    model.save_pretrained(str(tmp_path))
    faster = ALARMModel.from_pretrained(str(tmp_path), tokenizer=tokenizer, token_rate_ratio=2)
    assert faster.config.token_rate_ratio == 2
    with torch.no_grad():
        full = model.audio_embeddings(clips, 16000, layout="packed")
        half = faster.audio_embeddings(clips, 16000, layout="padded")
    for a, b in zip(full, half, strict=True):
        torch.testing.assert_close(b, pool_rows(a, 2, "mean"), rtol=1e-5, atol=1e-6)


# ---- configuration -----------------------------------------------------------------------------------
def test_config_fields_validated_and_serialised():
    cfg = ALARMConfig.tiny("CA", token_rate_ratio=4, token_rate_mode="max")
    cfg = dataclasses.replace(cfg, encoders=[_pool(cfg.encoders[0], 3, "max"), cfg.encoders[1]])
    again = ALARMConfig.from_dict(__import__("json").loads(cfg.to_json()))
    assert again == cfg and again.encoders[0].pool_ratio == 3 and again.token_rate_mode == "max"
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="token_rate_ratio must be an integer >= 1"):
            ALARMConfig.tiny("CA", token_rate_ratio=bad)
        with pytest.raises(ValueError, match="encoder whisper: pool_ratio must be an integer >= 1"):
            _pool(cfg.encoders[0], bad, "mean")
    with pytest.raises(ValueError, match="token_rate_mode must be one of"):
        ALARMConfig.tiny("CA", token_rate_mode="median")
    with pytest.raises(ValueError, match="encoder whisper: pool_mode must be one of"):
        _pool(cfg.encoders[0], 2, "sum")
    with pytest.raises(ValueError, match="encoder whisper: adapter must be one of"):
        dataclasses.replace(cfg.encoders[0], adapter="pooling")


def test_token_counts_per_rate_full_size():
    """30 s clips: 1500 Whisper frames -> 750 at 25 Hz, halved (rounding up) per doubling of the ratio."""
    expect = {1: 750, 2: 375, 4: 188}
    for rate, n in expect.items():
        assert audio_tokens(ALARMConfig.single(whisper_large_v3(), token_rate_ratio=rate), 30.0) == n
        assert audio_tokens(ALARMConfig.single(muq_large(), token_rate_ratio=rate), 30.0) == n
        assert audio_tokens(ALARMConfig.single(whisper_large_v3(adapter="pool"), token_rate_ratio=rate), 30.0) == n
        assert audio_tokens(ALARMConfig.full("P", token_rate_ratio=rate), 30.0) == n + 2 + 3 * 20
    assert audio_tokens(ALARMConfig.single(whisper_large_v3(adapter="pool", pool_ratio=5)), 30.0) == 300

"""ALARM model: padded vs packed layouts on the tiny configuration, per fusion variant."""
import json

import pytest
import torch

from alarm.model import ALARMConfig, ALARMModel
from alarm.model.alarm_model import load_saved_config
from alarm.model.tiny import synthetic_audio

FUSIONS = ("sum", "concat", "CA", "P")
PROMPTS = ["What do you hear?", "Describe the sound.", "Is it music?"]
TARGETS = ["I hear a tone and some noise.", "A calm voice talks about the weather.", "Yes"]


@pytest.fixture(scope="module")
def clips():
    return synthetic_audio([1.0, 0.55, 1.3], seed=1)


@pytest.fixture(scope="module", params=FUSIONS)
def model(request):
    return ALARMModel(ALARMConfig.tiny(request.param))


def _grads(model, loss):
    params = model.trainable_parameters()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


def test_same_loss_and_gradients(model, clips):
    model.train()
    lf = model(clips, 16000, PROMPTS, TARGETS, layout="packed").loss
    lr = model(clips, 16000, PROMPTS, TARGETS, layout="padded").loss
    torch.testing.assert_close(lf, lr, rtol=1e-5, atol=1e-6)
    gf, gr = _grads(model, lf), _grads(model, lr)
    assert gf.keys() == gr.keys() and len(gf) > 0
    scale = max(g.abs().max().item() for g in gr.values())
    for name in gr:
        assert torch.isfinite(gf[name]).all(), name
        torch.testing.assert_close(gf[name], gr[name], rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_packed_equals_per_example(model, clips):
    model.eval()
    with torch.no_grad():
        batch = model.audio_embeddings(clips, 16000, layout="packed")
        for i, clip in enumerate(clips):
            alone = model.audio_embeddings([clip], 16000, layout="packed")[0]
            torch.testing.assert_close(batch[i], alone, rtol=1e-5, atol=1e-5)
        full = model(clips, 16000, PROMPTS, TARGETS, layout="packed").loss
        tok = model.tokenizer
        n = [len(tok.encode(t, add_special_tokens=False)) for t in TARGETS]
        each = [model([c], 16000, [p], [t], layout="packed").loss
                for c, p, t in zip(clips, PROMPTS, TARGETS, strict=True)]
    weighted = sum(loss * k for loss, k in zip(each, n, strict=True)) / sum(n)
    torch.testing.assert_close(full, weighted, rtol=1e-5, atol=1e-6)


def test_output_lengths(model, clips):
    cfg = model.config
    with torch.no_grad():
        fast = model.audio_embeddings(clips, 16000, layout="packed")
        ref = model.audio_embeddings(clips, 16000, layout="padded")
    whisper = [-(-len(c) // 160) // 2 for c in clips]           # 50 Hz frames of a zero-padded 30 s window
    w_tok = [w // 2 for w in whisper]                            # conv adapter: floor(len / 2)
    fb = [(1 + (len(c) - 80) // 160) // 2 for c in clips]        # w2v-BERT: 160 samples padded each side, stride 2
    b_tok = [f // 2 for f in fb]
    expect = {"sum": w_tok, "concat": [max(a, b) for a, b in zip(w_tok, b_tok, strict=True)], "CA": w_tok,
              "P": [w + 2 + cfg.p_latents for w in w_tok]}[cfg.fusion]
    assert [x.shape[0] for x in fast] == expect
    assert [x.shape[0] for x in ref] == expect
    for a, b in zip(fast, ref, strict=True):
        assert a.shape[1] == cfg.llm_hidden
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_layouts_agree_under_bf16_autocast(model, clips):
    """Mixed precision, as a GPU training step runs it (bf16 autocast; norms and losses in float32 there): both
    layouts run forward and backward and agree to bf16 rounding. CUDA's autocast runs layer_norm in float32 and
    CPU's does not, so hooks give the adapters' LayerNorms CUDA's policy here (the first GPU run found the padded
    adapter writing that float32 output into a bf16 buffer)."""
    model.train()
    hooks = [m.register_forward_hook(lambda _m, _args, out: out.float())
             for m in model.audio.modules() if isinstance(m, torch.nn.LayerNorm)]
    losses = {}
    try:
        for layout in ("packed", "padded"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(clips, 16000, PROMPTS, TARGETS, layout=layout).loss
            grads = _grads(model, loss)
            assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values()), layout
            losses[layout] = loss.float()
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(losses["packed"], losses["padded"], rtol=3e-2, atol=3e-2)
    model.eval()


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_one_optimizer_step(model, clips, layout):
    state = {k: v.clone() for k, v in model.audio.state_dict().items()}
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("audio.")}
    model.train()
    params = list(model.trainable_parameters().values())
    opt = torch.optim.AdamW(params, lr=1e-2)
    loss = model(clips[:2], 16000, PROMPTS[:2], TARGETS[:2], layout=layout).loss
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = model(clips[:2], 16000, PROMPTS[:2], TARGETS[:2], layout=layout).loss
    assert torch.isfinite(after) and after.item() != loss.item()
    changed = [k for k, v in model.audio.state_dict().items() if not torch.equal(v, state[k])]
    assert changed
    if model.config.stage == "B":  # frozen adapters: weights and BatchNorm running stats untouched
        frozen_adapters = [f"adapters.{e.name}." for e in model.config.encoders if e.adapter != "identity"]
        assert not any(k.startswith(tuple(frozen_adapters)) for k in changed), changed
        identity = [f"adapters.{e.name}.layer_logits" for e in model.config.encoders if e.adapter == "identity"]
        assert all(k in changed for k in identity), changed  # P's layer mixes train, as published
    for k, v in model.state_dict().items():
        if not k.startswith("audio."):
            assert torch.equal(v, frozen[k]), k
    model.audio.load_state_dict(state)
    model.eval()


def test_old_path_names_still_work(clips, tmp_path):
    """The execution mode's old names: a saved ``"path"`` loads as ``layout``, ``path=`` warns and maps."""
    saved = {k: v for k, v in ALARMConfig.tiny("sum").to_dict().items() if k != "layout"}
    assert ALARMConfig.from_dict({**saved, "path": "reference"}).layout == "padded"
    assert ALARMConfig.from_dict({**saved, "path": "fast"}).layout == "packed"
    with pytest.raises(ValueError, match="path"):
        ALARMConfig.from_dict({**saved, "path": "fastest"})
    with pytest.raises(ValueError, match="not both"):
        ALARMConfig.from_dict({**saved, "path": "fast", "layout": "packed"})
    (tmp_path / "alarm_config.json").write_text(json.dumps({**saved, "path": "reference"}))  # an old model folder
    (tmp_path / "audio_side.safetensors").write_bytes(b"")  # only its presence is checked here
    assert load_saved_config(str(tmp_path)).layout == "padded"
    assert load_saved_config(str(tmp_path), layout="packed").layout == "packed"
    model = ALARMModel(ALARMConfig.tiny("sum"))
    with torch.no_grad():
        new = model.audio_embeddings(clips[:1], 16000, layout="padded")
        with pytest.warns(DeprecationWarning, match="layout="):
            old = model.audio_embeddings(clips[:1], 16000, path="reference")
        with pytest.warns(DeprecationWarning):
            with pytest.raises(ValueError, match="path"):
                model.audio_embeddings(clips[:1], 16000, path="padded")
    torch.testing.assert_close(old[0], new[0], rtol=0, atol=0)

"""attn_implementation="alarm_packed" in a stock (tiny, random, fp32) Qwen3ForCausalLM: a packed batch of several
documents equals running each document separately, forward and backward, on the reference and Triton backends."""
import copy

import pytest
import torch
from transformers import AttentionInterface, DataCollatorWithFlattening, Qwen3Config, Qwen3ForCausalLM

from alarm_kernels.attention.hf import ATTENTION_NAME, register_hf_attention
from conftest import DEVICE, FAST_BACKENDS

BACKENDS = ("reference",) + tuple(b for b in FAST_BACKENDS if b != "cuda")
LENS = [7, 1, 19, 4]
VOCAB = 101


def _config():
    return Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=64, attention_dropout=0.0,
    )


@pytest.fixture
def models():
    """(alarm_packed model, eager model with the same weights). Each model gets its own config object:
    transformers stores the attention implementation on the config, so sharing one would switch both."""
    register_hf_attention()
    torch.manual_seed(0)
    packed = Qwen3ForCausalLM._from_config(_config(), attn_implementation=ATTENTION_NAME).float().to(DEVICE)
    eager = Qwen3ForCausalLM._from_config(copy.deepcopy(_config()), attn_implementation="eager").float().to(DEVICE)
    eager.load_state_dict(packed.state_dict())
    assert packed.config._attn_implementation == ATTENTION_NAME
    yield packed, eager
    register_hf_attention()  # back to backend="auto"


def _documents(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).to(DEVICE) for n in LENS]


def _packed_batch(docs):
    cu = torch.tensor([0] + torch.tensor([len(d) for d in docs]).cumsum(0).tolist(), dtype=torch.int32)
    return dict(
        input_ids=torch.cat(docs)[None],
        position_ids=torch.cat([torch.arange(len(d), device=DEVICE) for d in docs])[None],
        cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(map(len, docs)), max_length_k=max(map(len, docs)),
    )


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_forward_backward_equals_separate_documents(models, backend):
    packed_model, eager = models
    register_hf_attention(backend=backend)
    docs = _documents()
    weights = torch.randn(sum(LENS), VOCAB, generator=torch.Generator().manual_seed(1)).to(DEVICE)

    logits = packed_model(**_packed_batch(docs), use_cache=False).logits[0]
    (logits * weights).sum().backward()
    separate = torch.cat([eager(input_ids=d[None]).logits[0] for d in docs])
    (separate * weights).sum().backward()

    torch.testing.assert_close(logits, separate, rtol=1e-4, atol=1e-4)
    g_packed, g_sep = _grads(packed_model), _grads(eager)
    assert g_packed.keys() == g_sep.keys() and len(g_packed) > 0
    for name in g_packed:
        torch.testing.assert_close(g_packed[name], g_sep[name], rtol=1e-3, atol=1e-4, msg=name)


def test_data_collator_with_flattening_output_works_unchanged(models):
    packed_model, eager = models
    docs = _documents(seed=2)
    collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True)
    batch = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v
             for k, v in collator([{"input_ids": d.tolist()} for d in docs]).items()}
    assert "cu_seq_lens_q" in batch and "max_length_k" in batch
    out = packed_model(**batch)  # default use_cache, labels included: the loss is computed too
    separate = torch.cat([eager(input_ids=d[None]).logits[0] for d in docs])
    torch.testing.assert_close(out.logits[0], separate, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(out.loss)


def test_packed_without_boundaries_raises(models):
    packed_model, _ = models
    batch = _packed_batch(_documents())
    with pytest.raises(ValueError, match="cu_seq_lens_q"):
        packed_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)


def test_padded_and_plain_batches(models):
    packed_model, eager = models
    docs = _documents(seed=3)
    width = max(LENS)
    ids = torch.zeros(len(docs), width, dtype=torch.long, device=DEVICE)
    mask = torch.zeros(len(docs), width, dtype=torch.long, device=DEVICE)
    for r, d in enumerate(docs):
        ids[r, : len(d)] = d
        mask[r, : len(d)] = 1
    padded = packed_model(input_ids=ids, attention_mask=mask).logits
    for r, d in enumerate(docs):
        torch.testing.assert_close(padded[r, : len(d)], eager(input_ids=d[None]).logits[0], rtol=1e-4, atol=1e-4)
    plain = packed_model(input_ids=ids).logits  # no mask, no boundaries: causal attention per row
    torch.testing.assert_close(plain, eager(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_generation_with_cache_matches_eager(models):
    packed_model, eager = models
    prompt = _documents(seed=4)[0][None]
    a = packed_model.generate(prompt, max_new_tokens=4, do_sample=False)
    b = eager.generate(prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(a, b)


def test_register_is_idempotent():
    assert register_hf_attention() == register_hf_attention() == ATTENTION_NAME
    assert ATTENTION_NAME in AttentionInterface()


def test_attention_dropout_follows_the_model_and_its_seed(monkeypatch):
    # train mode with attention_dropout > 0: the op gets the rate, the forward's dropout_seed and each layer's index as
    # the mask offset (so a seed reproduces a step and layers differ); eval mode passes no dropout
    from alarm_kernels.attention import hf

    register_hf_attention(backend="reference")
    config = _config()
    config.attention_dropout = 0.3
    torch.manual_seed(0)
    model = Qwen3ForCausalLM._from_config(config, attn_implementation=ATTENTION_NAME).float().to(DEVICE)
    calls = []
    real = hf.packed_attention
    monkeypatch.setattr(hf, "packed_attention", lambda *a, **kw: (calls.append(kw), real(*a, **kw))[1])
    batch = _packed_batch(_documents(seed=5))
    model.train()
    first = model(**batch, use_cache=False, dropout_seed=11).logits
    again = model(**batch, use_cache=False, dropout_seed=11).logits
    other = model(**batch, use_cache=False, dropout_seed=12).logits
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert [(c["dropout_p"], c["dropout_seed"], c["dropout_offset"]) for c in calls[:2]] == [(0.3, 11, 0), (0.3, 11, 1)]
    model.eval()
    calls.clear()
    evaluated = model(**batch, use_cache=False, dropout_seed=11).logits
    assert {c["dropout_p"] for c in calls} == {0.0} and not torch.equal(first, evaluated)

"""One fast-path training step (forward + backward) of the tiny model reads nothing back from the device inside
the ``alarm_kernels`` ops: the sizes flow on the host from the clips' frame counts, and the offsets are checked
once per batch. Device-to-host transfers (``.item()``, ``.tolist()``, ``.cpu()``, ``int(t)``, ...) are counted
by patching ``torch.Tensor`` (:func:`alarm_kernels.testing.count_host_transfers`), which sees them on CPU too.

The ops run on their Triton backends (the GPU path; interpreted here): the reference attention backend reads
its offsets on the host by design. ``packed_attention`` has no switch yet to skip its offset check, so it still
validates each new offsets tensor once (two reads, then cached); the test allows those (attributed by wrapping
the check) and nothing else inside ``alarm_kernels``.
"""
import collections
import importlib
import os

import pytest
import torch

import alarm_kernels as ak
from alarm.model import ALARMConfig, ALARMModel, ModelBatch
from alarm.model.batch import source_lengths
from alarm.model.splice import tokenize_batch
from alarm.model.tiny import synthetic_audio
from alarm_kernels.testing import count_host_transfers

pytestmark = pytest.mark.usefixtures("one_thread")

KERNELS_DIR = os.path.dirname(os.path.abspath(ak.__file__))
ATTENTION = importlib.import_module("alarm_kernels.attention")
# case: (config arguments, distinct offsets tensors the attention sees: CA query + key streams + LLM; LLM)
CASES = {"CA": (dict(fusion="CA"), 3), "sum-1-encoder": (dict(fusion="sum", n_encoders=1), 1)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """(model in train mode, encoder features + host frame counts, text ids, distinct attention offsets)."""
    kwargs, n_offsets = CASES[request.param]
    torch.manual_seed(0)
    model = ALARMModel(ALARMConfig.tiny(**kwargs)).train()
    clips = [torch.from_numpy(c) for c in synthetic_audio([1.0, 0.6, 0.3], seed=0)]
    feats = model.encode(clips, [16000] * len(clips))  # frozen, host-side feature extraction: not counted
    frames = {name: (cu[1:] - cu[:-1]).tolist() for name, (_, cu) in feats.items()}
    text = tokenize_batch(model.tokenizer, ["what is it?"] * 3, ["a dog barks.", "rain", "a bell rings twice."])
    return model, feats, frames, text, n_offsets


def _step(model, batch):
    """Forward + backward of one fast-path step; returns the loss value (gradients dropped)."""
    loss = model.forward_batch(batch, layout="packed").loss
    loss.backward()
    for p in model.trainable_parameters().values():
        p.grad = None
    return loss.detach()


def _counted_step(model, batch, monkeypatch):
    """One counted step on the Triton backends -> (loss, transfers made by packed_attention's offset check,
    other transfers inside alarm_kernels, transfers outside it); each a Counter of calling sites."""
    monkeypatch.setenv("ALARM_KERNELS_BACKEND", "triton")
    _step(model, batch)  # warm-up (kernel compilation, caches)
    attention = collections.Counter()
    original = ATTENTION._check_offsets

    def attributed(*args, **kwargs):  # whatever is counted during the check belongs to the attention
        before = collections.Counter(counts)
        try:
            return original(*args, **kwargs)
        finally:
            attention.update(counts - before)

    monkeypatch.setattr(ATTENTION, "_check_offsets", attributed)
    with count_host_transfers() as counts:
        loss = _step(model, batch)
    inside = collections.Counter({site: n for site, n in counts.items() if site.startswith(KERNELS_DIR)})
    outside = counts - inside
    return loss, attention, inside - attention, outside


def test_step_with_host_lengths_reads_nothing_inside_ops(case, monkeypatch):
    model, feats, frames, text, n_offsets = case
    batch = ModelBatch(text, features=feats, lengths=frames)
    loss, attention, others, outside = _counted_step(model, batch, monkeypatch)
    assert not others, f"ops read the device: {others}"
    assert not outside, f"the model read the device: {outside}"
    # packed_attention's offset check: two reads per distinct offsets tensor, not per layer or call
    assert sum(attention.values()) <= 2 * n_offsets, attention
    assert torch.isfinite(loss)


def test_step_without_host_lengths_reads_offsets_once(case, monkeypatch):
    """Without ``ModelBatch.lengths`` the model reads every offsets tensor in one transfer, and gets the same loss."""
    model, feats, frames, text, n_offsets = case
    loss, attention, others, outside = _counted_step(model, ModelBatch(text, features=feats), monkeypatch)
    assert not others, f"ops read the device: {others}"
    assert sum(outside.values()) == 1 and all("batch.py" in site for site in outside), outside
    assert sum(attention.values()) <= 2 * n_offsets, attention
    with_lengths = _step(model, ModelBatch(text, features=feats, lengths=frames))
    torch.testing.assert_close(loss, with_lengths, rtol=0, atol=0)


def test_host_lengths_are_checked(case):
    model, feats, frames, text, _ = case
    name = next(iter(feats))
    wrong = {**frames, name: [n + 1 for n in frames[name]]}
    with pytest.raises(ValueError, match=f"lengths\\['{name}'\\]"):
        source_lengths(feats, wrong)
    layers, cu = feats[name]
    bad = cu.clone()
    bad[1] = bad[2] + 1  # decreasing offsets
    with pytest.raises(ValueError, match=f"offsets of '{name}'"):
        source_lengths({name: (layers, bad)})
    assert source_lengths(feats) == frames


def _fill_with_dead_entries(memo, n):
    """Leave ``memo`` (an ``alarm_kernels._utils.TensorMemo``) holding ``n`` entries, all of freed tensors."""
    memo.entries.clear()
    kept = []
    while len(memo.entries) < n:
        t = torch.zeros(1)
        kept.append(t)  # alive until every entry is in, so no two share an id
        memo.get_or_compute(t, "filler", lambda: None)
    del kept, t


@pytest.mark.parametrize("batch_kind", ["packed", "padded", "plain"])
def test_transformers_glue_reads_per_forward_not_per_layer(batch_kind, monkeypatch):
    """A stock Qwen3 on ``attn_implementation="alarm_packed"`` makes as many host transfers with 3 layers as with
    1: what the glue derives from the mask / position ids / offsets, and the op's check of the offsets, are read once
    per forward, also when their memos are (nearly) full when the forward starts."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from alarm_kernels import attention
    from alarm_kernels.attention import hf
    from alarm_kernels.attention.hf import register_hf_attention

    monkeypatch.setenv("ALARM_KERNELS_BACKEND", "triton")
    name = register_hf_attention()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    kwargs = {}
    if batch_kind == "packed":  # two documents of 4 and 3 tokens in each row; no max_length: derived once
        ids = ids.reshape(1, -1)
        kwargs = dict(position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2] * 2]),
                      cu_seq_lens_q=torch.tensor([0, 4, 7, 11, 14], dtype=torch.int32))
    elif batch_kind == "padded":
        kwargs = dict(attention_mask=torch.tensor([[1] * 7, [0, 0] + [1] * 5]))
    counts = {}
    for layers in (1, 3):
        torch.manual_seed(0)
        conf = Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32)
        model = Qwen3ForCausalLM._from_config(conf, attn_implementation=name).eval()
        with torch.no_grad():
            model(input_ids=ids, use_cache=False, **kwargs)  # warm-up
            # the glue's and the op's memos as a long run leaves them: full or nearly full of earlier forwards'
            # (freed) tensors, so this forward's entries arrive at the limit
            for left in (2, 1, 0):
                for memo in (hf._derived, attention._validated):
                    _fill_with_dead_entries(memo, memo.limit - left)
                fresh = {k: v.clone() for k, v in kwargs.items()}  # new tensors: nothing cached from the warm-up
                with count_host_transfers() as counted:
                    model(input_ids=ids, use_cache=False, **fresh)
                counts[layers, left] = sum(counted.values())
    assert len({n for n in counts.values()}) == 1, counts

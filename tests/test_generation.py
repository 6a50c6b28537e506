"""Thinking-budget generation (alarm/generation.py) on a tiny random Qwen3 and a local tokenizer."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from alarm.generation import (ThinkingBudgetProcessor, budget_suffix_ids, generate_with_thinking_budget,
                              token_id)
from alarm.testing_tokenizer import build_tiny_lm, build_tiny_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def lm(tok):
    return build_tiny_lm(tok, seed=0)


@pytest.fixture(scope="module")
def batch(tok):
    prompts = ["the speaker sounds happy", "a dog", "I hear music with piano and drums, then a car"]
    return tok(prompts, return_tensors="pt", padding=True)


def _think_end(tok):
    return token_id(tok, "</think>")


@pytest.mark.parametrize("budget", [0, 1, 6])
def test_budget_enforced_exactly(tok, lm, batch, budget):
    suffix = budget_suffix_ids(tok)
    out = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        max_thinking_tokens=budget, max_new_tokens=budget + len(suffix) + 4)
    # a random LM never closes thinking on its own here, so the budget is hit in every row
    for row in range(3):
        seq = out.sequences[row].tolist()
        assert _think_end(tok) not in seq[:budget]
        assert seq[budget:budget + len(suffix)] == suffix
    assert out.thinking_tokens.tolist() == [budget] * 3
    assert out.budget_hit.all()


def test_sampling_respects_budget(tok, lm, batch):
    suffix = budget_suffix_ids(tok)
    torch.manual_seed(1)
    out = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        max_thinking_tokens=4, max_new_tokens=40, do_sample=True,
                                        temperature=1.3, top_p=0.95, top_k=50)
    for row in range(3):
        seq = out.sequences[row, :out.lengths[row]].tolist()
        if _think_end(tok) in seq[:4]:  # closed thinking by itself: untouched
            assert not out.budget_hit[row]
        else:
            assert seq[4:4 + len(suffix)] == suffix[:len(seq) - 4]


def test_no_budget_and_cap(tok, lm, batch):
    out = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        max_thinking_tokens=None, max_new_tokens=9)
    assert out.sequences.shape == (3, 9)
    assert not out.budget_hit.any()
    assert budget_suffix_ids(tok)[:3] != out.sequences[0, :3].tolist()
    # the cap applies to forced tokens too: the row is cut inside the forced sentence
    out = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        max_thinking_tokens=2, max_new_tokens=5)
    assert out.sequences[:, 2:5].tolist() == [budget_suffix_ids(tok)[:3]] * 3
    assert not out.finished.any() and out.lengths.tolist() == [5, 5, 5]


def test_embeds_match_ids_and_batching_matches_single(tok, lm, batch):
    kw = dict(max_thinking_tokens=3, max_new_tokens=30)
    by_ids = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                           **kw)
    embeds = lm.get_input_embeddings()(batch.input_ids)
    by_emb = generate_with_thinking_budget(lm, tok, inputs_embeds=embeds, attention_mask=batch.attention_mask, **kw)
    assert torch.equal(by_ids.sequences, by_emb.sequences)
    for row in range(3):
        keep = batch.attention_mask[row].bool()
        single = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids[row, keep][None], **kw)
        assert single.sequences[0].tolist() == by_ids.sequences[row].tolist()


def test_bad_inputs(tok, lm, batch):
    ids, mask = batch.input_ids, batch.attention_mask
    with pytest.raises(ValueError, match="exactly one"):
        generate_with_thinking_budget(lm, tok, max_thinking_tokens=1, max_new_tokens=2)
    with pytest.raises(ValueError, match="left-padded"):
        generate_with_thinking_budget(lm, tok, input_ids=ids.flip(1), attention_mask=mask.flip(1),
                                      max_thinking_tokens=1, max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask is required"):
        generate_with_thinking_budget(lm, tok, input_ids=ids, max_thinking_tokens=1, max_new_tokens=2)
    with pytest.raises(ValueError, match=">= 0"):
        generate_with_thinking_budget(lm, tok, input_ids=ids, attention_mask=mask, max_thinking_tokens=-1,
                                      max_new_tokens=2)


def _drive(proc, script, prompt_len=2, vocab=20):
    """Feed the processor step by step; each row takes its scripted token unless one is forced."""
    rows = len(script)
    ids = torch.zeros(rows, prompt_len, dtype=torch.long)
    for step in range(len(script[0])):
        scores = torch.zeros(rows, vocab)
        scores[torch.arange(rows), torch.tensor([s[step] for s in script])] = 1.0
        nxt = proc(ids, scores).argmax(dim=1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    proc.consume(ids)
    return ids[:, prompt_len:].tolist()


def test_processor_state_machine():
    start, end, eos = 10, 11, 12
    suffix = [5, 6, end]
    proc = ThinkingBudgetProcessor(3, suffix, start, end, starts_in_thinking=True, eos_ids=[eos])
    script = [
        [1, 2, 3, 4, 4, 4, 4, 4],        # hits the budget: forced after 3 tokens
        [1, end, 2, 3, 4, 4, 4, 4],      # closes thinking itself after 1 token: untouched
        [1, eos, 0, 0, 0, 0, 0, 0],      # ends inside thinking: padding afterwards is not counted
    ]
    out = _drive(proc, script)
    assert out[0] == [1, 2, 3, 5, 6, end, 4, 4]
    assert out[1] == script[1]
    assert proc.thinking_tokens.tolist() == [3, 1, 1]
    assert proc.budget_hit.tolist() == [True, False, False]

    proc = ThinkingBudgetProcessor(2, suffix, start, end, starts_in_thinking=False, eos_ids=[eos])
    out = _drive(proc, [[1, 2, 3, start, 7, 8, 9, 9, 9]])
    assert out[0] == [1, 2, 3, start, 7, 8, 5, 6, end]
    assert proc.thinking_tokens.tolist() == [2]


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(0, 6), rows=st.lists(st.lists(st.integers(0, 11), min_size=14, max_size=14),
                                               min_size=1, max_size=4))
def test_processor_property(budget, rows):
    """Whatever the model proposes, a row either closes thinking itself within the budget (untouched)
    or gets exactly ``budget`` free tokens followed by the forced suffix."""
    end, suffix = 11, [5, 6, 11]
    proc = ThinkingBudgetProcessor(budget, suffix, 10, end, starts_in_thinking=True)
    out = _drive(proc, rows)
    for i, (script, got) in enumerate(zip(rows, out)):
        count = int(proc.thinking_tokens[i])
        if end in script[:budget]:
            assert got == script and count == script.index(end) and not proc.budget_hit[i]
        else:
            assert got[:budget] == script[:budget] and count == budget
            assert got[budget:budget + 3] == suffix[:len(got) - budget]

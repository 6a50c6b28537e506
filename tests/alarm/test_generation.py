"""Thinking-budget generation (alarm/generation.py): the published two-pass protocol, on a tiny random Qwen3
and on a scripted fake LM whose every token is known."""
import pytest
import torch

from alarm.generation import budget_suffix_ids, generate_with_thinking_budget, still_thinking, token_id
from alarm.prompts import BUDGET_SENTENCE
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


def test_suffix_is_the_published_text(tok):
    text = tok.decode(budget_suffix_ids(tok))
    assert text == "\n\n" + BUDGET_SENTENCE + "\n</think>\n\n"
    assert BUDGET_SENTENCE == ("Considering the limited time by the user, I have to give the solution based on "
                               "the thinking directly now.")


@pytest.mark.parametrize("budget", [0, 1, 5])
def test_two_passes_on_a_real_lm(tok, lm, batch, budget):
    """A random LM never closes its thinking here: every row gets `budget` free tokens, the forced text, then
    pass 2 with its own full budget, which must equal greedy decoding from prompt + pass 1 + forced text."""
    suffix, answer_budget = budget_suffix_ids(tok), 6
    out = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        max_thinking_tokens=budget, max_new_tokens=answer_budget)
    assert out.budget_hit.all() and out.thinking_tokens.tolist() == [budget] * 3
    for row in range(3):
        seq = out.sequences[row, : out.lengths[row]].tolist()
        assert token_id(tok, "</think>") not in seq[:budget]
        assert seq[budget: budget + len(suffix)] == suffix
        assert len(seq) == budget + len(suffix) + answer_budget or out.finished[row]
        prompt = batch.input_ids[row, batch.attention_mask[row].bool()].tolist() + seq[: budget + len(suffix)]
        direct = lm.generate(torch.tensor([prompt]), max_new_tokens=answer_budget, do_sample=False,
                             pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
        assert seq[budget + len(suffix):] == direct[: len(seq) - budget - len(suffix)]


def test_no_budget_is_one_pass(tok, lm, batch):
    out = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        max_thinking_tokens=None, max_new_tokens=9)
    assert out.sequences.shape == (3, 9) and not out.budget_hit.any() and not out.finished.any()


def test_seeded_sampling_is_reproducible(tok, lm, batch):
    kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_thinking_tokens=4,
              max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.95, top_k=50)
    state = torch.random.get_rng_state()
    a = generate_with_thinking_budget(lm, tok, seed=3, **kw)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    b = generate_with_thinking_budget(lm, tok, seed=3, **kw)
    c = generate_with_thinking_budget(lm, tok, seed=4, **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, c.sequences)


def test_embeds_match_ids_and_batching_matches_single(tok, lm, batch):
    kw = dict(max_thinking_tokens=3, max_new_tokens=8)
    by_ids = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                           **kw)
    embeds = lm.get_input_embeddings()(batch.input_ids)
    by_emb = generate_with_thinking_budget(lm, tok, inputs_embeds=embeds, attention_mask=batch.attention_mask, **kw)
    assert torch.equal(by_ids.sequences, by_emb.sequences)
    for row in range(3):
        keep = batch.attention_mask[row].bool()
        single = generate_with_thinking_budget(lm, tok, input_ids=batch.input_ids[row, keep][None], **kw)
        assert single.sequences[0].tolist() == by_ids.sequences[row, : by_ids.lengths[row]].tolist()


class ScriptedLM:
    """A stand-in for a causal LM: the row whose prompt starts with token s emits SCRIPT[s] (continuing where
    its prompt, as a prefix of prompt+script, left off), stopping at EOS or the token cap."""

    def __init__(self, scripts, eos, pad):
        self.scripts, self.eos, self.pad, self.calls = scripts, eos, pad, []
        self.generation_config = type("C", (), {"eos_token_id": eos})()

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        self.calls.append(max_new_tokens)
        rows = []
        for r, m in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            real = [t for t, k in zip(r, m, strict=True) if k]
            script = self.scripts[real[0]]
            done_before = len(real) - 1  # prompts are [s] + what was generated so far
            new = []
            for t in script[done_before:][:max_new_tokens]:
                new.append(t)
                if t == self.eos:
                    break
            rows.append(new)
        width = max(len(n) for n in rows)
        return torch.cat([input_ids, torch.tensor([n + [self.pad] * (width - len(n)) for n in rows])], 1)


def test_protocol_cases_scripted(tok):
    end, start, eos, pad = token_id(tok, "</think>"), token_id(tok, "<think>"), tok.eos_token_id, tok.pad_token_id
    suffix = budget_suffix_ids(tok)
    # prompt token ids 1..4 pick the script; the scripted model replays the script regardless of forced tokens
    scripts = {1: [7, 7, 7, 7, 7, 7] + [9] * 400,           # thinks past the budget -> forced, then pass 2
               2: [7, end, 8, eos],                        # closes thinking and ends within the budget
               3: [7, end, 8, 8, 8, 8, 8, 8, 8, eos],       # cut while answering: nothing forced, pass 2
               4: [7, eos]}                                # ends inside thinking within the budget
    fake = ScriptedLM(scripts, eos, pad)
    ids = torch.tensor([[1], [2], [3], [4]])
    out = generate_with_thinking_budget(fake, tok, input_ids=ids, attention_mask=torch.ones_like(ids),
                                        max_thinking_tokens=3, max_new_tokens=4)
    assert fake.calls == [3, 4]
    rows = [out.sequences[i, : out.lengths[i]].tolist() for i in range(4)]
    # row 1: pass 2 replays the script from position 3 + len(suffix) (the fake ignores what was forced)
    assert rows[0] == [7, 7, 7] + suffix + scripts[1][3 + len(suffix):][:4]
    assert rows[1] == [7, end, 8, eos]
    assert rows[2] == [7, end, 8] + [8, 8, 8, 8]
    assert rows[3] == [7, eos]
    assert out.budget_hit.tolist() == [True, False, False, False]
    assert out.finished.tolist() == [False, True, False, True]
    assert out.thinking_tokens.tolist() == [3, 1, 1, 1]
    assert still_thinking([7, start, 7], start, end, False) and not still_thinking([7], start, end, False)
    assert not still_thinking([7, end], start, end, True)


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

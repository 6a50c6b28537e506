"""Generation with a thinking budget, as the published ALARM evaluation runs it.

A reasoning LM thinks between ``<think>`` and ``</think>`` and then answers. With a budget of N tokens:

1. pass 1 generates at most N new tokens;
2. a row that ended (EOS) in pass 1 is done. A row cut at N tokens while still inside its thinking gets the
   forced text ``"\\n\\n" + BUDGET_SENTENCE + "\\n" + "</think>" + "\\n\\n"`` (``alarm.prompts``); a row cut
   after closing its thinking gets nothing forced;
3. pass 2 continues every cut row from prompt + pass-1 tokens (+ the forced text), with its own budget of
   ``max_new_tokens`` new tokens.

The reply is pass 1 + forced text + pass 2. Without a budget (``None``) there is one pass of
``max_new_tokens``. Pass 2 is fed the pass-1 token ids themselves (the published code decodes pass 1 to
text and tokenizes it again, which can merge tokens differently at the seams).

Sampling follows Qwen3's recommendation by default in the callers (``SAMPLING_DEFAULTS``: T=0.6, top-p 0.95,
top-k 20) with a seed; ``do_sample=False`` decodes greedily. Works for any transformers causal LM, from
token ids or from input embeddings.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from alarm.prompts import BUDGET_AFTER_END, BUDGET_BEFORE_END
from alarm.seeding import seeded

THINK_START = "<think>"
THINK_END = "</think>"
SAMPLING_DEFAULTS = dict(do_sample=True, temperature=0.6, top_p=0.95, top_k=20, seed=0)

__all__ = ["THINK_START", "THINK_END", "SAMPLING_DEFAULTS", "token_id", "budget_suffix_ids", "still_thinking",
           "ThinkingGeneration", "generate_with_thinking_budget", "two_pass"]


def token_id(tokenizer, token: str) -> int:
    """The id of a single special token, or a ValueError when the tokenizer does not know it."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        raise ValueError(f"the tokenizer has no single token {token!r}")
    return int(tid)


def budget_suffix_ids(tokenizer, think_end: str = THINK_END) -> list[int]:
    """Token ids forced when the budget cuts a row inside its thinking: sentence, ``</think>``, blank line."""
    return (list(tokenizer.encode(BUDGET_BEFORE_END, add_special_tokens=False)) + [token_id(tokenizer, think_end)]
            + list(tokenizer.encode(BUDGET_AFTER_END, add_special_tokens=False)))


def still_thinking(tokens: Sequence[int], think_start_id: int, think_end_id: int, starts_in_thinking: bool) -> bool:
    """Whether a generation (new tokens) is inside its thinking at its end."""
    inside = starts_in_thinking
    for t in tokens:
        if t == think_start_id:
            inside = True
        elif t == think_end_id:
            inside = False
    return inside


def _thinking_length(tokens: Sequence[int], think_start_id: int, think_end_id: int, starts_in_thinking: bool,
                     eos_ids: Sequence[int]) -> int:
    inside, count = starts_in_thinking, 0
    for t in tokens:
        if t == think_end_id and inside:
            break
        if t in eos_ids:
            break
        if inside:
            count += 1
        elif t == think_start_id:
            inside = True
    return count


@dataclass
class ThinkingGeneration:
    """Result of ``generate_with_thinking_budget``.

    sequences: [B, T] new tokens only (prompt excluded; forced tokens included), right-padded with
        ``pad_token_id`` after a row's end.
    lengths: [B] number of real tokens per row (up to and including the EOS token if one was generated).
    thinking_tokens: [B] tokens generated inside thinking before it was closed or cut (forced tokens excluded).
    budget_hit: [B] whether the budget forced the sentence into that row.
    finished: [B] whether the row ended with an EOS token (False: cut off by ``max_new_tokens``).
    """

    sequences: torch.LongTensor
    lengths: torch.LongTensor
    thinking_tokens: torch.LongTensor
    budget_hit: torch.BoolTensor
    finished: torch.BoolTensor


def _rows(new: torch.Tensor, eos_ids: Sequence[int]) -> List[tuple]:
    """Per row: (token list up to and including the first EOS, ended with EOS)."""
    rows = []
    for r in new.tolist():
        cut = next((i for i, t in enumerate(r) if t in eos_ids), None)
        rows.append((r, False) if cut is None else (r[: cut + 1], True))
    return rows


def _left_pad(rows: List[torch.Tensor], pad_value) -> tuple:
    """Left-pad B tensors [L_i, ...] -> ([B, L, ...], attention_mask [B, L])."""
    longest = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), longest, *rows[0].shape[1:]), pad_value)
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=rows[0].device)
    for b, r in enumerate(rows):
        out[b, longest - r.shape[0]:] = r
        mask[b, longest - r.shape[0]:] = 1
    return out, mask


@torch.no_grad()
def generate_with_thinking_budget(model, tokenizer, *, input_ids=None, inputs_embeds=None, attention_mask=None,
                                  max_thinking_tokens: Optional[int], max_new_tokens: int, do_sample: bool = False,
                                  temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                                  seed: Optional[int] = None, starts_in_thinking: bool = True,
                                  eos_token_id=None, pad_token_id: Optional[int] = None,
                                  think_start: str = THINK_START, think_end: str = THINK_END,
                                  **generate_kwargs) -> ThinkingGeneration:
    """Generate from ``input_ids`` [B, T] or ``inputs_embeds`` [B, T, H] (exactly one) under a thinking budget.

    Contract:
    - Batches are left-padded; ``attention_mask`` [B, T] (1 = real) is required when B > 1 and its last
      column must be all ones (right padding raises ValueError).
    - ``starts_in_thinking=True`` (default): every prompt already ends inside thinking, as Qwen3 thinking
      templates do (``...<|im_start|>assistant\\n<think>\\n``); otherwise thinking starts at ``<think>``.
    - Budget (module docstring): pass 1 of at most ``max_thinking_tokens`` tokens, then pass 2 of at most
      ``max_new_tokens`` for rows cut in pass 1; ``None`` means one pass of ``max_new_tokens``.
    - EOS ends a row (default: the model's generation_config EOS ids, else the tokenizer's).
    - The tokenizer must have ``<think>`` and ``</think>`` as single tokens (ValueError otherwise).
    - Greedy by default; ``do_sample=True`` samples with ``temperature``/``top_p``/``top_k``; ``seed`` (int)
      seeds torch's RNG for this call only (the caller's RNG state is restored). Extra keyword arguments go
      to ``model.generate`` (beam search is not supported).
    Returns a ``ThinkingGeneration`` (new tokens only).
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if max_thinking_tokens is not None and max_thinking_tokens < 0:
        raise ValueError(f"max_thinking_tokens must be >= 0 or None, got {max_thinking_tokens}")
    if generate_kwargs.get("num_beams", 1) != 1:
        raise ValueError("beam search is not supported with a thinking budget")
    inputs = input_ids if input_ids is not None else inputs_embeds
    if inputs.dim() != (2 if input_ids is not None else 3):
        raise ValueError(f"input_ids must be [B, T] / inputs_embeds [B, T, H], got shape {tuple(inputs.shape)}")
    batch = inputs.shape[0]
    if attention_mask is None:
        if batch > 1:
            raise ValueError("attention_mask is required for a batch of more than one sequence")
        attention_mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device)
    if tuple(attention_mask.shape) != tuple(inputs.shape[:2]):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != {tuple(inputs.shape[:2])}")
    if inputs.shape[1] and not bool(attention_mask[:, -1].bool().all()):
        raise ValueError("attention_mask: batches must be left-padded (last column all ones)")

    if eos_token_id is None:
        eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = tokenizer.eos_token_id
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    if pad_token_id is None:
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0]
    start_id, end_id = token_id(tokenizer, think_start), token_id(tokenizer, think_end)
    suffix = budget_suffix_ids(tokenizer, think_end)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else \
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)

    def generate(ids, embeds, mask, n: int) -> List[tuple]:
        out = model.generate(**({"input_ids": ids} if ids is not None else {"inputs_embeds": embeds}),
                             attention_mask=mask, max_new_tokens=n, min_new_tokens=None,
                             eos_token_id=eos_ids or None, pad_token_id=pad_token_id, return_dict_in_generate=False,
                             **sampling, **generate_kwargs)
        return _rows(out[:, ids.shape[1]:] if ids is not None else out, eos_ids)

    def run(rows: List[int], conts: Optional[List[List[int]]], n: int) -> List[tuple]:
        if conts is None:
            return generate(input_ids, inputs_embeds, attention_mask, n)
        dev = inputs.device
        conts = [torch.tensor(c, dtype=torch.long, device=dev) for c in conts]
        keep = [attention_mask[b].bool() for b in rows]
        if input_ids is not None:
            ids2, mask2 = _left_pad([torch.cat([input_ids[b][k], c])
                                     for b, k, c in zip(rows, keep, conts, strict=True)], pad_token_id)
            return generate(ids2, None, mask2, n)
        embed = model.get_input_embeddings()
        emb2, mask2 = _left_pad([torch.cat([inputs_embeds[b][k], embed(c).to(inputs_embeds.dtype)])
                                 for b, k, c in zip(rows, keep, conts, strict=True)], 0.0)
        return generate(None, emb2, mask2, n)

    with seeded(seed, inputs.device) if seed is not None else nullcontext():
        return two_pass(run, batch, max_thinking_tokens=max_thinking_tokens, max_new_tokens=max_new_tokens,
                        suffix=suffix, think_ids=(start_id, end_id), starts_in_thinking=starts_in_thinking,
                        eos_ids=eos_ids, pad_token_id=pad_token_id, device=inputs.device)


def two_pass(run, batch: int, *, max_thinking_tokens: Optional[int], max_new_tokens: int, suffix: List[int],
             think_ids: tuple, starts_in_thinking, eos_ids: Sequence[int], pad_token_id: int,
             device="cpu") -> ThinkingGeneration:
    """The budget protocol (module docstring) over any backend.

    ``run(rows, continuations, max_tokens) -> [(new token ids, ended with EOS)]`` generates for the batch rows
    ``rows``: from their prompts when ``continuations`` is None (pass 1, all rows), else from prompt +
    ``continuations[i]`` (pass 2). Token lists end at the first EOS (kept). ``think_ids``: (``<think>`` id,
    ``</think>`` id). ``starts_in_thinking``: one bool, or one per row. Returns a ``ThinkingGeneration`` on
    ``device``.
    """
    start_id, end_id = think_ids
    inside = [starts_in_thinking] * batch if isinstance(starts_in_thinking, bool) else list(starts_in_thinking)
    first = max_new_tokens if max_thinking_tokens is None else max_thinking_tokens
    rows = run(list(range(batch)), None, first) if first > 0 else [([], False)] * batch
    hit = [False] * batch
    forced: List[List[int]] = [[] for _ in range(batch)]
    todo = [b for b in range(batch) if max_thinking_tokens is not None and not rows[b][1]]
    for b in todo:
        if still_thinking(rows[b][0], start_id, end_id, inside[b]):
            forced[b], hit[b] = list(suffix), True
    more = dict(zip(todo, run(todo, [rows[b][0] + forced[b] for b in todo], max_new_tokens), strict=True)) \
        if todo else {}
    tokens, finished, thinking = [], [], []
    for b in range(batch):
        toks, done = rows[b]
        if b in more:
            extra, done = more[b]
            toks = toks + forced[b] + extra
        tokens.append(toks)
        finished.append(done)
        thinking.append(len(rows[b][0]) if hit[b] else _thinking_length(toks, start_id, end_id, inside[b], eos_ids))
    lengths = torch.tensor([len(t) for t in tokens], dtype=torch.long, device=device)
    seqs = torch.full((batch, int(lengths.max()) if batch else 0), pad_token_id, dtype=torch.long, device=device)
    for b, t in enumerate(tokens):
        seqs[b, : len(t)] = torch.tensor(t, dtype=torch.long, device=device)
    return ThinkingGeneration(seqs, lengths, torch.tensor(thinking, dtype=torch.long, device=device),
                              torch.tensor(hit, dtype=torch.bool, device=device),
                              torch.tensor(finished, dtype=torch.bool, device=device))

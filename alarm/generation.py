"""Generation with a thinking budget (docs/model.md, "Inference and evaluation").

A reasoning LM thinks between ``<think>`` and ``</think>`` and then answers. With a budget of N tokens, a
sequence that has generated N thinking tokens without closing its thinking is forced to emit
``BUDGET_SENTENCE`` followed by ``</think>``, and then generates its answer freely. The forcing is done by
a logits processor inside ``model.generate`` (all other ``generate`` options keep working; greedy and
sampling alike), so it works for any transformers causal LM, from token ids or from input embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

BUDGET_SENTENCE = "\n\nI have thought about this long enough, so I will stop here and answer directly now.\n"
THINK_START = "<think>"
THINK_END = "</think>"

_BEFORE, _THINKING, _FORCING, _AFTER, _ENDED = 0, 1, 2, 3, 4


def token_id(tokenizer, token: str) -> int:
    """The id of a single special token, or a ValueError when the tokenizer does not know it."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        raise ValueError(f"the tokenizer has no single token {token!r}")
    return int(tid)


def budget_suffix_ids(tokenizer, think_end: str = THINK_END, sentence: str = BUDGET_SENTENCE) -> list[int]:
    """The token ids forced when the budget is hit: ``sentence`` then the ``think_end`` token."""
    return list(tokenizer.encode(sentence, add_special_tokens=False)) + [token_id(tokenizer, think_end)]


class ThinkingBudgetProcessor(LogitsProcessor):
    """Logits processor enforcing a thinking budget, one state machine per row.

    Row states: before thinking (waits for ``think_start_id``), thinking (counts every generated token
    other than ``think_end_id`` and EOS), forcing (emits ``suffix_ids`` one per step), after thinking
    (free), ended (an ``eos_ids`` token was generated; later padding is ignored).
    When a thinking row has counted ``budget`` tokens, the next ``len(suffix_ids)`` tokens are forced
    (the last of them must be ``think_end_id``). ``budget=None`` never forces (counting only).

    The processor must see every step of one generation in order (greedy or sampling; no beam search).
    Tokens are read from the ``input_ids`` passed by ``generate``; the first call fixes the batch size
    and the prompt length. After generation, ``thinking_tokens`` and ``budget_hit`` describe each row.
    """

    def __init__(self, budget: int | None, suffix_ids: list[int], think_start_id: int, think_end_id: int,
                 starts_in_thinking: bool = True, eos_ids: list[int] | tuple = ()):
        if budget is not None and budget < 0:
            raise ValueError(f"max_thinking_tokens must be >= 0 or None, got {budget}")
        if not suffix_ids or suffix_ids[-1] != think_end_id:
            raise ValueError("suffix_ids must end with think_end_id")
        self.budget = budget
        self.suffix = torch.tensor(suffix_ids, dtype=torch.long)
        self.think_start_id = think_start_id
        self.think_end_id = think_end_id
        self.starts_in_thinking = starts_in_thinking
        self.eos = torch.tensor(list(eos_ids), dtype=torch.long)
        self.seen = None  # number of columns of input_ids already consumed
        self.state = self.count = self.pos = None

    def _init(self, input_ids: torch.LongTensor) -> None:
        b, dev = input_ids.shape[0], input_ids.device
        self.seen = input_ids.shape[1]
        self.state = torch.full((b,), _THINKING if self.starts_in_thinking else _BEFORE, dtype=torch.long, device=dev)
        self.count = torch.zeros(b, dtype=torch.long, device=dev)
        self.pos = torch.zeros(b, dtype=torch.long, device=dev)
        self.hit = torch.zeros(b, dtype=torch.bool, device=dev)
        self.suffix = self.suffix.to(dev)
        self.eos = self.eos.to(dev)

    def _consume(self, tok: torch.LongTensor) -> None:
        s = self.state
        ends = (s != _ENDED) & torch.isin(tok, self.eos)
        before, thinking, forcing = s == _BEFORE, s == _THINKING, s == _FORCING
        opens = before & (tok == self.think_start_id)
        closes = thinking & (tok == self.think_end_id)
        self.count += (thinking & ~closes & ~ends).long()
        self.pos += forcing.long()
        done_forcing = forcing & (self.pos >= self.suffix.numel())
        s = torch.where(opens, _THINKING, s)
        s = torch.where(closes | done_forcing, _AFTER, s)
        self.state = torch.where(ends, _ENDED, s)

    def consume(self, input_ids: torch.LongTensor) -> None:
        """Update the row states with the columns of ``input_ids`` not seen yet."""
        if self.state is None:
            self._init(input_ids)
        elif input_ids.shape[0] != self.state.shape[0]:
            raise RuntimeError("ThinkingBudgetProcessor: batch size changed during generation (beam search?)")
        for col in range(self.seen, input_ids.shape[1]):
            self._consume(input_ids[:, col])
        self.seen = input_ids.shape[1]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.consume(input_ids)
        if self.budget is None:
            return scores
        start = (self.state == _THINKING) & (self.count >= self.budget)
        self.state = torch.where(start, _FORCING, self.state)
        self.pos = torch.where(start, 0, self.pos)
        self.hit |= start
        forcing = self.state == _FORCING
        if bool(forcing.any()):
            forced_tok = self.suffix[self.pos.clamp(max=self.suffix.numel() - 1)]
            mask = torch.full_like(scores, float("-inf"))
            mask.scatter_(1, forced_tok[:, None], 0.0)
            scores = torch.where(forcing[:, None], mask, scores)
        return scores

    @property
    def thinking_tokens(self) -> torch.LongTensor:
        return self.count

    @property
    def budget_hit(self) -> torch.BoolTensor:
        return self.hit


@dataclass
class ThinkingGeneration:
    """Result of ``generate_with_thinking_budget``.

    sequences: [B, T] new tokens only (prompt excluded; forced tokens included), right-padded with
        ``pad_token_id`` after a row's end.
    lengths: [B] number of real tokens per row (up to and including the EOS token if one was generated).
    thinking_tokens: [B] tokens generated freely inside thinking (forced tokens and ``</think>`` excluded).
    budget_hit: [B] whether the budget forced the sentence into that row.
    finished: [B] whether the row ended with an EOS token (False: cut off by ``max_new_tokens``).
    """

    sequences: torch.LongTensor
    lengths: torch.LongTensor
    thinking_tokens: torch.LongTensor
    budget_hit: torch.BoolTensor
    finished: torch.BoolTensor


@torch.no_grad()
def generate_with_thinking_budget(model, tokenizer, *, input_ids=None, inputs_embeds=None, attention_mask=None,
                                  max_thinking_tokens: int | None, max_new_tokens: int, do_sample: bool = False,
                                  temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                                  starts_in_thinking: bool = True, budget_sentence: str = BUDGET_SENTENCE,
                                  eos_token_id=None, pad_token_id: int | None = None,
                                  think_start: str = THINK_START, think_end: str = THINK_END,
                                  **generate_kwargs) -> ThinkingGeneration:
    """Generate from ``input_ids`` [B, T] or ``inputs_embeds`` [B, T, H] (exactly one) under a thinking budget.

    Contract:
    - Batches are left-padded; ``attention_mask`` [B, T] (1 = real) is required when B > 1 and its last
      column must be all ones (right padding raises ValueError).
    - ``starts_in_thinking=True`` (default) means every prompt already ends inside thinking, as Qwen3
      thinking templates do (``...<|im_start|>assistant\\n<think>\\n``); otherwise thinking starts when the
      model emits ``<think>``.
    - Budget: a row generates at most ``max_thinking_tokens`` tokens inside thinking; at that point the
      tokens of ``budget_sentence`` and ``</think>`` are forced and generation continues freely (the answer).
      Rows that close thinking themselves are untouched. ``None`` disables the budget.
    - ``max_new_tokens`` caps all new tokens, forced ones included; EOS ends a row (default: the model's
      generation_config EOS ids, else the tokenizer's).
    - The tokenizer must have ``<think>`` and ``</think>`` as single tokens (ValueError otherwise).
    - Greedy by default; ``do_sample=True`` samples with ``temperature``/``top_p``/``top_k``. Extra keyword
      arguments go to ``model.generate`` (beam search is not supported).
    Returns a ``ThinkingGeneration`` (new tokens only).
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
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

    processor = ThinkingBudgetProcessor(
        max_thinking_tokens, budget_suffix_ids(tokenizer, think_end, budget_sentence),
        token_id(tokenizer, think_start), token_id(tokenizer, think_end), starts_in_thinking, eos_ids)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else \
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    out = model.generate(
        **({"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}),
        attention_mask=attention_mask, max_new_tokens=max_new_tokens, min_new_tokens=None,
        logits_processor=LogitsProcessorList([processor]), eos_token_id=eos_ids or None,
        pad_token_id=pad_token_id, return_dict_in_generate=False, **sampling, **generate_kwargs)
    seqs = out[:, input_ids.shape[1]:] if input_ids is not None else out
    if processor.state is not None:  # generate does not call the processor after the last step
        processor.consume(out)
    return _finish(seqs, processor, eos_ids, pad_token_id)


def _finish(seqs, processor, eos_ids, pad_token_id) -> ThinkingGeneration:
    b, t = seqs.shape
    is_eos = torch.zeros_like(seqs, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= seqs == e
    finished = is_eos.any(dim=1)
    first_eos = torch.where(finished, is_eos.long().argmax(dim=1), torch.full((b,), t, device=seqs.device))
    lengths = torch.where(finished, first_eos + 1, first_eos)
    keep = torch.arange(t, device=seqs.device)[None, :] < lengths[:, None]
    seqs = torch.where(keep, seqs, torch.full_like(seqs, pad_token_id))
    if processor.state is None:  # nothing was generated
        zeros = torch.zeros(b, dtype=torch.long, device=seqs.device)
        return ThinkingGeneration(seqs, lengths, zeros, zeros.bool(), finished)
    return ThinkingGeneration(seqs, lengths, processor.thinking_tokens.clone(), processor.budget_hit.clone(),
                              finished)

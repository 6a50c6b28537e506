"""Splicing audio tokens into the LLM input embeddings.

Per example: ``embed("<|im_start|>user\\n") | audio_start | audio tokens | audio_end |
embed(prompt + "<|im_end|>\\n<|im_start|>assistant\\n<think>\\n") | embed(target)``, truncated at
``max_length`` tokens. Only the target is ever cut there: a prompt too long to fit before it is cut
before the assistant header, with a warning (``fit_prompts``). Labels are the target ids on target
positions and -100 elsewhere (no EOS is added); positions 0..L-1 per example. ``splice_packed`` builds a
whole batch as one packed row with vectorised index arithmetic (one gather from a table of [text
embeddings; audio tokens; separators]);
``splice_padded`` is the published per-example construction, padded, kept as the reference.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from alarm_kernels.varlen import cu_seqlens_to_seqlens

from ..prompts import system_turn
from .fusion import host_cu_seqlens, segment_gather_index

__all__ = ["USER_PREFIX", "ASSISTANT_SUFFIX", "TextBatch", "tokenize_batch", "encode_example", "text_batch_from_ids",
           "fit_prompts", "splice_packed", "splice_padded"]

logger = logging.getLogger(__name__)

USER_PREFIX = "<|im_start|>user\n"
ASSISTANT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n"
IGNORE = -100


@dataclass
class TextBatch:
    """Token ids of a batch: shared prefix [P]; per-example suffix and target ids packed with int32 offsets.
    Each suffix row ends with the ``header_len`` tokens of the assistant header (never cut).
    ``suffix_lengths`` / ``target_lengths``: the same row lengths as host ints (set by ``text_batch_from_ids``
    and ``tokenize_batch``; None when unknown, then ``splice_packed`` reads the offsets back from the device)."""
    prefix: Tensor
    suffix: Tensor
    cu_suffix: Tensor
    target: Tensor
    cu_target: Tensor
    header_len: int = 0
    suffix_lengths: Optional[List[int]] = None
    target_lengths: Optional[List[int]] = None


def _pack_ids(rows: Sequence[Sequence[int]], device) -> tuple:
    """Rows of ids -> (flat int64 ids, int32 offsets, host lengths)."""
    flat = torch.tensor([t for r in rows for t in r], dtype=torch.long, device=device)
    lengths = [len(r) for r in rows]
    return flat, host_cu_seqlens(lengths, device), lengths


def encode_example(tokenizer, prompt: str, target: str) -> tuple[List[int], List[int]]:
    """Token ids of one example, exactly as ``tokenize_batch`` makes them: (prompt + assistant prefix, target)."""
    return (tokenizer.encode(prompt + ASSISTANT_SUFFIX, add_special_tokens=False),
            tokenizer.encode(target, add_special_tokens=False))


def text_batch_from_ids(prefix: Sequence[int], suffix_rows: Sequence[Sequence[int]],
                        target_rows: Sequence[Sequence[int]], header_len: int, device="cpu") -> TextBatch:
    """A ``TextBatch`` from pre-tokenised ids (the trainer tokenises its manifest once, up front).

    ``header_len``: tokens of ``ASSISTANT_SUFFIX`` that end every suffix row (kept whole by ``fit_prompts``).
    """
    suffix, cu_s, n_s = _pack_ids(suffix_rows, device)
    target, cu_t, n_t = _pack_ids(target_rows, device)
    return TextBatch(torch.tensor(list(prefix), dtype=torch.long, device=device), suffix, cu_s, target, cu_t,
                     header_len, n_s, n_t)


def tokenize_batch(tokenizer, prompts: Sequence[str], targets: Optional[Sequence] = None, device="cpu",
                   system: Optional[str] = None) -> TextBatch:
    """Tokenise prompts (wrapped in the chat template pieces) and targets (strings or id lists; None for
    generation). ``system`` (optional) puts a system turn ``<|im_start|>system\\n...<|im_end|>\\n`` before
    the user turn of every example (it becomes part of the shared prefix). The special tokens
    (``<|im_start|>`` ...) must be single tokens of ``tokenizer``."""
    if targets is not None and len(targets) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(targets)} targets")
    for name in ("<|im_start|>", "<|im_end|>", "<think>"):
        if len(tokenizer.encode(name, add_special_tokens=False)) != 1:
            raise ValueError(f"the tokenizer does not know the special token {name!r}")
    prefix = torch.tensor(tokenizer.encode(system_turn(system) + USER_PREFIX, add_special_tokens=False),
                          dtype=torch.long, device=device)
    suffix_rows = tokenizer([p + ASSISTANT_SUFFIX for p in prompts], add_special_tokens=False)["input_ids"]
    if targets is None:
        target_rows: List[List[int]] = [[] for _ in prompts]
    else:
        text = [t for t in targets if isinstance(t, str)]
        enc = iter(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else iter(())
        target_rows = [next(enc) if isinstance(t, str) else list(t) for t in targets]
    suffix, cu_s, n_s = _pack_ids(suffix_rows, device)
    target, cu_t, n_t = _pack_ids(target_rows, device)
    header_len = len(tokenizer.encode(ASSISTANT_SUFFIX, add_special_tokens=False))
    return TextBatch(prefix, suffix, cu_s, target, cu_t, header_len, n_s, n_t)


def fit_prompts(text: TextBatch, audio_lengths: Sequence[int], max_length: int) -> TextBatch:
    """Cut the end of every prompt whose example would not fit ``max_length`` tokens before its target:
    prefix + 2 separators + audio tokens + prompt + assistant header. The header is kept whole and a
    warning is logged per cut prompt. Raises ValueError when even an empty prompt does not fit."""
    p = text.prefix.numel()
    lengths = text.suffix_lengths
    if lengths is None:
        lengths = cu_seqlens_to_seqlens(text.cu_suffix).tolist()
    rooms = [max_length - p - 2 - int(n_a) for n_a in audio_lengths]
    if all(n_s <= room for n_s, room in zip(lengths, rooms, strict=True)):
        return text
    bounds = [0, *itertools.accumulate(lengths)]
    rows = []
    for i, (n_s, room) in enumerate(zip(lengths, rooms, strict=True)):
        row = text.suffix[bounds[i]:bounds[i + 1]]
        if n_s > room:
            if room <= text.header_len:
                raise ValueError(f"example {i}: its {int(audio_lengths[i])} audio tokens and the chat template "
                                 f"leave no room for the prompt within max_length={max_length}")
            logger.warning("example %d: prompt cut by %d tokens to fit max_length=%d", i, n_s - room, max_length)
            row = torch.cat([row[: room - text.header_len], row[n_s - text.header_len:]])
        rows.append(row)
    kept = [r.numel() for r in rows]
    return dataclasses.replace(text, suffix=torch.cat(rows), cu_suffix=host_cu_seqlens(kept, text.suffix.device),
                               suffix_lengths=kept)


def splice_packed(embed: nn.Module, text: TextBatch, audio: Tensor, cu_audio: Tensor, sep_start: Tensor,
                  sep_end: Tensor, max_length: int, audio_lengths: Optional[Sequence[int]] = None) -> dict:
    """One packed row for the batch.

    Args: embed: the LLM's input embedding; audio [A, H] packed audio tokens with int32 cu_audio [B+1];
    sep_start, sep_end [H] learned separators; audio_lengths: the B audio token counts as host ints when
    known (with the text's host lengths, nothing is then read back from the device).
    Returns dict: inputs_embeds [total, H] (embedding dtype), labels int64 [total], position_ids int64
    [total], cu_seqlens int32 [B+1], max_seqlen int, n_targets int (labelled tokens after truncation).
    """
    dev = audio.device
    if audio_lengths is None:
        audio_lengths = cu_seqlens_to_seqlens(cu_audio).tolist()
    text = fit_prompts(text, audio_lengths, max_length)
    b = cu_audio.numel() - 1
    p = text.prefix.numel()
    out_lengths = n_targets = None
    if text.suffix_lengths is not None and text.target_lengths is not None:
        before = [p + 2 + n_a + n_s for n_a, n_s in zip(audio_lengths, text.suffix_lengths, strict=True)]
        out_lengths = [min(n + n_t, max_length) for n, n_t in zip(before, text.target_lengths, strict=True)]
        n_targets = sum(max(0, n_out - n) for n_out, n in zip(out_lengths, before, strict=True))
    n_s = text.suffix.numel()
    ids = torch.cat([text.prefix, text.suffix, text.target])
    emb = embed(ids)
    n_text, n_audio = ids.numel(), audio.shape[0]
    table = torch.cat([emb, audio.to(emb.dtype), sep_start[None].to(emb.dtype), sep_end[None].to(emb.dtype)])
    ones = torch.ones(b, dtype=torch.int64, device=dev)
    seg_len = torch.stack([ones * p, ones, cu_seqlens_to_seqlens(cu_audio), ones,
                           cu_seqlens_to_seqlens(text.cu_suffix), cu_seqlens_to_seqlens(text.cu_target)], 1)
    seg_base = torch.stack([ones * 0, ones * (n_text + n_audio), n_text + cu_audio[:-1].long(),
                            ones * (n_text + n_audio + 1), p + text.cu_suffix[:-1].long(),
                            p + n_s + text.cu_target[:-1].long()], 1)
    step = torch.tensor([1, 0, 1, 0, 1, 1], device=dev)
    idx, seg, off, cu = segment_gather_index(seg_len, seg_base, step, keep=torch.full((b,), max_length, device=dev),
                                             out_lengths=out_lengths)
    is_target = seg == 5
    labels = torch.where(is_target, ids[torch.where(is_target, idx, 0)], torch.full_like(idx, IGNORE))
    ex_start = torch.repeat_interleave(cu[:-1].long(), cu_seqlens_to_seqlens(cu), output_size=idx.numel())
    positions = torch.arange(idx.numel(), device=dev) - ex_start
    if out_lengths is None:
        out_lengths = cu_seqlens_to_seqlens(cu).tolist()
        n_targets = int(is_target.sum())
    return dict(inputs_embeds=table[idx], labels=labels, position_ids=positions, cu_seqlens=cu,
                max_seqlen=max(out_lengths, default=0), n_targets=n_targets)


def splice_padded(embed: nn.Module, text: TextBatch, audio: List[Tensor], sep_start: Tensor, sep_end: Tensor,
                  max_length: int, left_pad: bool = False) -> dict:
    """Per-example construction (the published way), padded to the longest example.

    audio: B tensors [A_i, H]. Returns dict: inputs_embeds [B, L, H], attention_mask int64 [B, L],
    labels int64 [B, L] (-100 on padding), position_ids int64 [B, L] (0..L_i-1 on valid tokens).
    ``left_pad=True`` pads on the left (generation).
    """
    rows, labels = [], []
    text = fit_prompts(text, [a.shape[0] for a in audio], max_length)
    s_b, t_b = text.cu_suffix.tolist(), text.cu_target.tolist()
    prefix = embed(text.prefix)
    for i, a in enumerate(audio):
        suffix_ids, target_ids = text.suffix[s_b[i]:s_b[i + 1]], text.target[t_b[i]:t_b[i + 1]]
        parts = [prefix, sep_start[None].to(prefix.dtype), a.to(prefix.dtype), sep_end[None].to(prefix.dtype),
                 embed(suffix_ids), embed(target_ids)]
        row = torch.cat(parts)[:max_length]
        n_before = sum(x.shape[0] for x in parts[:5])
        lab = torch.cat([torch.full((n_before,), IGNORE, dtype=torch.long, device=row.device), target_ids])[:max_length]
        rows.append(row)
        labels.append(lab)
    longest = max(r.shape[0] for r in rows)
    b, h = len(rows), rows[0].shape[1]
    out = rows[0].new_zeros(b, longest, h)
    mask = torch.zeros(b, longest, dtype=torch.long, device=out.device)
    lab_out = torch.full((b, longest), IGNORE, dtype=torch.long, device=out.device)
    pos = torch.zeros(b, longest, dtype=torch.long, device=out.device)
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        n = r.shape[0]
        sl = slice(longest - n, longest) if left_pad else slice(0, n)
        out[i, sl], mask[i, sl], lab_out[i, sl] = r, 1, lab
        pos[i, sl] = torch.arange(n, device=out.device)
    return dict(inputs_embeds=out, attention_mask=mask, labels=lab_out, position_ids=pos)

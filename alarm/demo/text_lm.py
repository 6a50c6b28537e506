"""The demo's "reasoning LLM": a tiny Qwen3 trained from scratch to answer questions about a *text*
description, in exactly the layout ALARM splices audio into:

``<|im_start|>user\\n | region | question + options<|im_end|>\\n<|im_start|>assistant\\n<think>\\n | answer``

where ``region`` holds the description's token embeddings at a random position among 0-40 random
Gaussian vectors (scaled to the embeddings' norm). The noise teaches the LM to find the description by
its content rather than by its position; without it the LM reads attributes by position, and an audio
side (whose tokens land elsewhere) can never reach it. Once trained, the LM is frozen and the ALARM audio
side must learn to put, from audio alone, something the LM reads like the description.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX

from .synth import Question, describe, questions_for, sample_attributes

__all__ = ["train_text_lm", "text_accuracy"]


def _ids(tokenizer, text: str) -> List[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _example(tokenizer, embed, rng: np.random.Generator, desc: str, q: Question, answer: str, noise_max: int,
             norm: float) -> Tuple[Tensor, int]:
    """inputs_embeds [L, H] and the number of leading non-target positions (the answer follows)."""
    region = embed(torch.tensor(_ids(tokenizer, desc)))
    n_noise = int(rng.integers(0, noise_max + 1))
    if n_noise:
        noise = torch.from_numpy(rng.standard_normal((n_noise, region.shape[1])).astype(np.float32))
        noise = noise / noise.norm(dim=1, keepdim=True) * norm
        at = int(rng.integers(0, n_noise + 1))
        region = torch.cat([noise[:at], region, noise[at:]])
    head = torch.cat([embed(torch.tensor(_ids(tokenizer, USER_PREFIX))), region,
                      embed(torch.tensor(_ids(tokenizer, q.prompt + ASSISTANT_SUFFIX)))])
    return torch.cat([head, embed(torch.tensor(_ids(tokenizer, answer)))]), head.shape[0]


def _batch_loss(lm, rows: List[Tuple[Tensor, int]], targets: List[List[int]], reduction: str = "mean") -> Tensor:
    longest = max(r.shape[0] for r, _ in rows)
    h = rows[0][0].shape[1]
    x = torch.zeros(len(rows), longest, h)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100, dtype=torch.long)
    for i, ((r, n_head), t) in enumerate(zip(rows, targets, strict=True)):
        x[i, : r.shape[0]], mask[i, : r.shape[0]] = r, 1
        labels[i, n_head: n_head + len(t)] = torch.tensor(t)
    logits = lm(inputs_embeds=x, attention_mask=mask, use_cache=False).logits.float()
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
    return ce.sum(1) if reduction == "none" else ce.sum() / (labels[:, 1:] != -100).sum()


def train_text_lm(lm, tokenizer, steps: int = 800, batch: int = 32, lr: float = 3e-3, noise_max: int = 40,
                  seed: int = 0, log_every: int = 100) -> List[float]:
    """Train ``lm`` (a Qwen3ForCausalLM) in place on fresh synthetic text examples; returns the losses."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    embed = lm.get_input_embeddings()
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    lm.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        norm = float(embed.weight.detach().norm(dim=1).mean())
        rows, targets = [], []
        for _ in range(batch):
            clip = sample_attributes(rng)
            q = questions_for(clip, rng)[int(rng.integers(0, 3))]
            answer = q.options[q.answer]
            rows.append(_example(tokenizer, embed, rng, describe(clip), q, answer, noise_max, norm))
            targets.append(_ids(tokenizer, answer))
        loss = _batch_loss(lm, rows, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"  text LM step {step + 1}/{steps}: loss {np.mean(losses[-log_every:]):.3f}", flush=True)
    lm.eval()
    return losses


@torch.no_grad()
def text_accuracy(lm, tokenizer, n_clips: int = 100, seed: int = 12345) -> float:
    """Accuracy (0-1) of ``lm`` on fresh questions in text form (each option scored by its summed log-prob)."""
    rng = np.random.default_rng(seed)
    embed = lm.get_input_embeddings()
    norm = float(embed.weight.norm(dim=1).mean())
    correct = total = 0
    for _ in range(n_clips):
        clip = sample_attributes(rng)
        for q in questions_for(clip, rng):
            rows, targets = [], []
            layout_seed = int(rng.integers(1 << 31))  # one noise layout shared by the four options
            for option in q.options:
                rows.append(_example(tokenizer, embed, np.random.default_rng(layout_seed), describe(clip), q, option,
                                     40, norm))
                targets.append(_ids(tokenizer, option))
            scores = -_batch_loss(lm, rows, targets, reduction="none")
            correct += int(int(scores.argmax()) == q.answer)
            total += 1
    return correct / total

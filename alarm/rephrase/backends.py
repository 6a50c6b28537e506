"""Text-generation backends of the pipeline: HF ``generate`` (always available) and vLLM (when installed).

Both take chat-formatted prompt strings and return, per prompt, the generated text (EOS removed), its token
count, whether it ended by itself, and whether the thinking budget was hit. The budget protocol is the one of
``alarm.generation`` (two passes; the budget sentence and ``</think>`` forced into rows cut while thinking).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from alarm.generation import budget_suffix_ids, generate_with_thinking_budget, token_id, two_pass
from alarm.extras import require
from alarm.hf import load_pretrained

THINK_OPEN = "<think>\n"


@dataclass
class Generation:
    text: str
    num_tokens: int
    finished: bool
    budget_hit: bool


@dataclass
class Sampling:
    """Greedy when ``do_sample`` is False; Qwen3 thinking models recommend T=0.6, top-p 0.95, top-k 20."""

    do_sample: bool = True
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    seed: int = 0


def chat_prompt(tokenizer, user: str, thinking: bool = True) -> str:
    """One user turn formatted with the tokenizer's chat template (ChatML when it has none), ending with
    the assistant header; with ``thinking`` it ends with ``<think>\\n`` (added when the template does not)."""
    messages = [{"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=thinking)
    else:
        text = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    if thinking and not text.endswith(THINK_OPEN):
        text = text + ("\n" if text.endswith("<think>") else THINK_OPEN)
    return text


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else [int(e) for e in (eos or [])]


class HFBackend:
    """Batched generation with a transformers causal LM (left padding, sorted by length)."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.eos = _eos_ids(model, tokenizer)

    @classmethod
    def from_pretrained(cls, name: str, batch_size: int = 8, dtype: str = "auto", device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tok = AutoTokenizer.from_pretrained(name)
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        model = load_pretrained(AutoModelForCausalLM, name, dtype=torch_dtype).to(device).eval()
        return cls(model, tok, batch_size)

    def generate(self, prompts: list[str], *, max_new_tokens: int, max_thinking_tokens: int | None = None,
                 sampling: Sampling | None = None, desc: str | None = None) -> list[Generation]:
        sampling = sampling or Sampling(do_sample=False)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        starts = range(0, len(order), self.batch_size)
        for b, start in enumerate(tqdm(starts, desc=desc, disable=desc is None, leave=False)):
            idx = order[start:start + self.batch_size]
            batch = [prompts[i] for i in idx]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            if sampling.do_sample:
                torch.manual_seed(sampling.seed * 1_000_003 + b)
            out = generate_with_thinking_budget(
                self.model, self.tokenizer, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                max_thinking_tokens=max_thinking_tokens, max_new_tokens=max_new_tokens,
                starts_in_thinking=all(p.endswith(THINK_OPEN) for p in batch), do_sample=sampling.do_sample,
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                eos_token_id=self.eos)
            for row, i in enumerate(idx):
                n = int(out.lengths[row])
                toks = out.sequences[row, :n].tolist()
                if out.finished[row] and toks and toks[-1] in self.eos:
                    toks = toks[:-1]
                results[i] = Generation(self.tokenizer.decode(toks, skip_special_tokens=False), n,
                                        bool(out.finished[row]), bool(out.budget_hit[row]))
        return results


class VLLMBackend:
    """vLLM generation (imported lazily) with the thinking-budget protocol of ``alarm.generation.two_pass``:
    up to N tokens; rows still thinking get the forced sentence + ``</think>``; cut rows get a second pass of
    up to ``max_new_tokens``.
    ``desc`` is accepted for interface parity (vLLM batches the whole list itself)."""

    name = "vllm"

    def __init__(self, name: str, dtype: str = "auto", seed: int = 0, **llm_kwargs):
        LLM = require("vllm", "the vllm backend", "vllm").LLM
        self.llm = LLM(model=name, dtype=dtype, seed=seed, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.special = set(self.tokenizer.all_special_ids)  # a stop token ends a finished row
        self.think_start = token_id(self.tokenizer, "<think>")
        self.think_end = token_id(self.tokenizer, "</think>")
        self.suffix = budget_suffix_ids(self.tokenizer)

    def _params(self, sampling: Sampling, max_tokens: int):
        from vllm import SamplingParams

        if sampling.do_sample:
            return SamplingParams(max_tokens=max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                                  top_k=sampling.top_k, seed=sampling.seed, skip_special_tokens=False)
        return SamplingParams(max_tokens=max_tokens, temperature=0.0, skip_special_tokens=False)

    def _run(self, prompt_ids: list[list[int]], sampling: Sampling, max_tokens: int):
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], self._params(sampling, max_tokens),
                                 use_tqdm=False)
        return [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason == "stop") for o in outs]

    def generate(self, prompts: list[str], *, max_new_tokens: int, max_thinking_tokens: int | None = None,
                 sampling: Sampling | None = None, desc: str | None = None) -> list[Generation]:
        sampling = sampling or Sampling(do_sample=False)
        ids = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]

        def run(rows, conts, max_tokens):
            return self._run([ids[b] + (conts[i] if conts is not None else []) for i, b in enumerate(rows)],
                             sampling, max_tokens)

        out = two_pass(run, len(prompts), max_thinking_tokens=max_thinking_tokens, max_new_tokens=max_new_tokens,
                       suffix=self.suffix, think_ids=(self.think_start, self.think_end),
                       starts_in_thinking=[p.endswith(THINK_OPEN) for p in prompts], eos_ids=sorted(self.special),
                       pad_token_id=0)
        results = []
        for i in range(len(prompts)):
            n = int(out.lengths[i])
            toks = out.sequences[i, :n].tolist()
            if out.finished[i] and toks and toks[-1] in self.special:
                toks = toks[:-1]
            results.append(Generation(self.tokenizer.decode(toks, skip_special_tokens=False), n,
                                      bool(out.finished[i]), bool(out.budget_hit[i])))
        return results

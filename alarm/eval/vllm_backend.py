"""vLLM generation from ALARM prompt embeddings (``alarm eval run --backend vllm``), when vLLM is installed.

The audio side (encoders, adapters, fusion, separators) and the prompt layout stay in the ALARM model (its
``prompt_embeddings``); vLLM runs the frozen LLM on those embeddings (``enable_prompt_embeds``), with the
same two-pass thinking budget as the HF path (``alarm.generation.two_pass``). Every request of a call uses
the same sampling seed, as the published evaluation does.

vLLM starts its engine on the first GPU the process sees, whatever device the ALARM model is on (its
``device`` engine option was never honoured and is gone since vLLM 0.10). ``pin_engine_gpu`` therefore makes
the chosen GPU (under torchrun: ``cuda:LOCAL_RANK``) the only visible one by setting
``CUDA_VISIBLE_DEVICES``, as the published evaluation does per worker, before CUDA starts in the process;
the model then goes to ``cuda:0``, the same GPU.
"""
from __future__ import annotations

import logging
import os
from typing import MutableMapping, Optional

import torch

from alarm.extras import require
from alarm.generation import SAMPLING_DEFAULTS, THINK_END, THINK_START, budget_suffix_ids, token_id, two_pass
from alarm.prompts import SYSTEM_PROMPT

# engine settings of the published evaluation
VLLM_DEFAULTS = dict(enable_prefix_caching=True, max_model_len=16384, max_num_seqs=32, max_num_batched_tokens=16384,
                     gpu_memory_utilization=0.70)
_log = logging.getLogger(__name__)


def pin_engine_gpu(device: str, environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Make ``device``'s GPU the only one this process sees, so that the vLLM engine starts on it; returns the
    device to load the ALARM model on.

    ``cuda:N`` -> ``CUDA_VISIBLE_DEVICES`` (in ``environ``, default ``os.environ``) becomes the N-th GPU
    visible now (the N-th entry of an inherited ``CUDA_VISIBLE_DEVICES``, else ``N``) and ``"cuda:0"`` is
    returned. ``"cuda"``, ``"cpu"`` and other devices are returned unchanged. Calling it again with the
    returned device changes nothing. ValueError when N is not visible; RuntimeError when N > 0 and CUDA has
    already started in this process (it reads ``CUDA_VISIBLE_DEVICES`` once)."""
    environ = os.environ if environ is None else environ
    dev = torch.device(device)
    if dev.type != "cuda" or dev.index is None:
        return device
    inherited = environ.get("CUDA_VISIBLE_DEVICES")
    visible = None if inherited is None else [d.strip() for d in inherited.split(",") if d.strip()]
    if visible is not None and dev.index >= len(visible):
        raise ValueError(f"--device {device}: CUDA_VISIBLE_DEVICES={inherited!r} lists {len(visible)} GPU(s)")
    chosen = str(dev.index) if visible is None else visible[dev.index]
    if chosen == inherited:
        return "cuda:0"
    if torch.cuda.is_initialized():
        if dev.index == 0:  # already the first visible GPU, where the engine starts
            return "cuda:0"
        raise RuntimeError(f"the vLLM engine's GPU ({device}) must be chosen before CUDA starts in this process")
    environ["CUDA_VISIBLE_DEVICES"] = chosen
    _log.info("vLLM engine on GPU %s (CUDA_VISIBLE_DEVICES=%s, was %r)", device, chosen, inherited)
    return "cuda:0"


class VLLMGenerator:
    """``generate`` with the contract of ``ALARMModel.generate``, the LLM running in vLLM.

    ``model``: an ``ALARMModel`` or ``ALARMEnsemble`` (its LLM must come from ``llm_path``, which vLLM loads).
    """

    def __init__(self, model, **llm_kwargs):
        LLM = require("vllm", "--backend vllm", "vllm").LLM
        self.model = model
        self.models = list(getattr(model, "models", [model]))
        cfg = self.models[0].config
        if cfg.llm_path is None:
            raise ValueError("--backend vllm needs a model whose LLM is a pretrained checkpoint (llm_path)")
        self.tokenizer = self.models[0].tokenizer
        self.llm = LLM(model=cfg.llm_path, dtype=cfg.llm_dtype, enable_prompt_embeds=True,
                       **{**VLLM_DEFAULTS, **llm_kwargs})

    def _params(self, max_tokens: int, kw: dict):
        from vllm import SamplingParams

        if kw.get("do_sample", True):
            s = {**SAMPLING_DEFAULTS, **kw}
            return SamplingParams(max_tokens=max_tokens, temperature=s["temperature"], top_p=s["top_p"],
                                  top_k=s["top_k"], seed=s["seed"], skip_special_tokens=False)
        return SamplingParams(max_tokens=max_tokens, temperature=0.0, skip_special_tokens=False)

    @torch.no_grad()
    def generate(self, audio, prompt, sampling_rate=16000, max_thinking_tokens: Optional[int] = 1024,
                 max_new_tokens: int = 8192, system_prompt: Optional[str] = SYSTEM_PROMPT, **kw) -> dict:
        """Same contract and defaults as ``ALARMModel.generate`` (keyword arguments: do_sample, temperature,
        top_p, top_k, seed)."""
        inputs = self.model.prompt_embeddings(audio, sampling_rate, prompt, system_prompt=system_prompt)
        x, mask = inputs["inputs_embeds"], inputs["attention_mask"].bool()
        prompts = [x[b][mask[b]] for b in range(x.shape[0])]
        embed = self.models[0].llm.embed()
        tok = self.tokenizer

        def run(rows, conts, n):
            embeds = [prompts[b] if conts is None else
                      torch.cat([prompts[b], embed(torch.tensor(c, dtype=torch.long, device=x.device)).to(x.dtype)])
                      for b, c in zip(rows, conts or [None] * len(rows), strict=True)]
            outs = self.llm.generate([{"prompt_embeds": e.cpu()} for e in embeds], self._params(n, kw),
                                     use_tqdm=False)
            return [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason == "stop") for o in outs]

        gen = two_pass(run, len(prompts), max_thinking_tokens=max_thinking_tokens, max_new_tokens=max_new_tokens,
                       suffix=budget_suffix_ids(tok), think_ids=(token_id(tok, THINK_START), token_id(tok, THINK_END)),
                       starts_in_thinking=True, eos_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id or 0)
        text = [tok.decode(gen.sequences[i, : int(gen.lengths[i])], skip_special_tokens=False)
                for i in range(gen.sequences.shape[0])]
        return dict(text=text, generation=gen)

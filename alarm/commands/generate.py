"""``alarm generate``: answer a prompt about an audio file with a saved ALARM model (published protocol).

Example: ``alarm generate --model out/alarm-ca --audio clip.wav --prompt "What do you hear?"``. The model
folder is what ``ALARMModel.save_pretrained`` wrote; its frozen LLM and encoders are loaded from the paths
recorded in its config. ``--ensemble OTHER`` adds a second model (ALARM-E). Defaults follow the published
inference: the system prompt of ``alarm.prompts``, a 1024-token thinking budget followed by up to 8192
answer tokens, sampling at T=0.6, top-p 0.95, top-k 20 with seed 0 (``--greedy`` for greedy decoding).
"""
from __future__ import annotations

import argparse

from alarm.generation import SAMPLING_DEFAULTS


def add_generation_args(p, max_thinking_tokens: int = 1024, max_new_tokens: int = 8192) -> None:
    """The budget, sampling and system-prompt options shared by ``alarm generate`` and ``alarm eval run``."""
    p.add_argument("--max-thinking-tokens", type=int, default=max_thinking_tokens,
                   help=f"thinking budget: pass 1 length (default {max_thinking_tokens}; -1: no budget)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=f"answer budget of pass 2, or of the only pass without a budget (default {max_new_tokens})")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=SAMPLING_DEFAULTS["temperature"])
    p.add_argument("--top-p", type=float, default=SAMPLING_DEFAULTS["top_p"])
    p.add_argument("--top-k", type=int, default=SAMPLING_DEFAULTS["top_k"])
    p.add_argument("--seed", type=int, default=SAMPLING_DEFAULTS["seed"], help="sampling seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def generation_kwargs(args) -> dict:
    """Keyword arguments of ``ALARMModel.generate`` from the options of ``add_generation_args``."""
    if args.max_thinking_tokens is not None and args.max_thinking_tokens < -1:
        raise ValueError(f"--max-thinking-tokens must be >= -1, got {args.max_thinking_tokens}")
    budget = None if args.max_thinking_tokens == -1 else args.max_thinking_tokens
    kw = dict(max_thinking_tokens=budget, max_new_tokens=args.max_new_tokens)
    if args.greedy:
        return {**kw, "do_sample": False}
    return {**kw, "do_sample": True, "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
            "seed": args.seed}


def load_models(model: str, ensemble: list | None, device: str):
    """An ``ALARMModel`` (or an ``ALARMEnsemble`` sharing its LLM when ``ensemble`` folders are given)."""
    from alarm.model import ALARMEnsemble, ALARMModel

    first = ALARMModel.from_pretrained(model).to(device)
    if not ensemble:
        return first
    others = [ALARMModel.from_pretrained(f, tokenizer=first.tokenizer, llm=first.llm).to(device) for f in ensemble]
    return ALARMEnsemble([first, *others])


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="answer a prompt about an audio file with a saved ALARM model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder written by ALARMModel.save_pretrained")
    p.add_argument("--ensemble", action="append", help="another model folder: ALARM-E (repeatable)")
    p.add_argument("--audio", required=True, help="audio file (PCM WAV; channels are averaged)")
    p.add_argument("--prompt", required=True, help="the user's question about the audio")
    p.add_argument("--system-prompt", default=None, help="system prompt (default: the published one)")
    p.add_argument("--no-system-prompt", action="store_true", help="send no system turn")
    add_generation_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from alarm.eval.run import load_clip
    from alarm.prompts import SYSTEM_PROMPT

    wave, rate = load_clip(args.audio)
    model = load_models(args.model, args.ensemble, args.device)
    system = None if args.no_system_prompt else (args.system_prompt or SYSTEM_PROMPT)
    out = model.generate([wave], args.prompt, sampling_rate=rate, system_prompt=system, **generation_kwargs(args))
    print(out["text"][0])
    return 0

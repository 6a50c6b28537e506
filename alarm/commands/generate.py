"""Answer a prompt about an audio file with a saved ALARM model, following the published protocol.

The model folder is what ALARMModel.save_pretrained (or alarm convert) wrote; its frozen LLM and encoders
are loaded from the paths recorded in its config. --ensemble OTHER adds a second model (ALARM-E).
Defaults follow the published inference: its system prompt, a 1024-token thinking budget followed by up
to 8192 answer tokens, sampling at T=0.6, top-p 0.95, top-k 20 with seed 0 (--greedy for greedy
decoding). The audio file (WAV, FLAC, OGG, MP3, any rate, channels averaged) is read and checked before
the model is loaded; a clip longer than --max-seconds (default: the model's limit) is refused unless
--crop keeps its first part.

  alarm generate --model ckpt/alarm-ca --audio clip.wav --prompt "What do you hear?"
"""
from __future__ import annotations


from alarm.commands import add_command
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
    from alarm.commands.checks import check_range

    check_range("--max-thinking-tokens", args.max_thinking_tokens, -1)
    check_range("--max-new-tokens", args.max_new_tokens, 1)
    budget = None if args.max_thinking_tokens == -1 else args.max_thinking_tokens
    kw = dict(max_thinking_tokens=budget, max_new_tokens=args.max_new_tokens)
    if args.greedy:
        return {**kw, "do_sample": False}
    check_range("--temperature", args.temperature, 1e-6)
    check_range("--top-p", args.top_p, 1e-6, 1.0)
    check_range("--top-k", args.top_k, 0)
    return {**kw, "do_sample": True, "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
            "seed": args.seed}


def load_models(model: str, ensemble: list | None, device: str):
    """An ``ALARMModel`` (or an ``ALARMEnsemble`` sharing its LLM when ``ensemble`` folders are given)."""
    import torch

    from alarm.model import ALARMEnsemble, ALARMModel

    if torch.device(device).type == "cuda":  # this process's GPU (cuda:N under torchrun) becomes the current one
        torch.cuda.set_device(torch.device(device))
    first = ALARMModel.from_pretrained(model).to(device)
    if not ensemble:
        return first
    others = [ALARMModel.from_pretrained(f, tokenizer=first.tokenizer, llm=first.llm).to(device) for f in ensemble]
    return ALARMEnsemble([first, *others])


def register(subparsers) -> None:
    p = add_command(subparsers, "generate", __doc__)
    p.add_argument("--model", required=True, help="folder written by ALARMModel.save_pretrained")
    p.add_argument("--ensemble", action="append", help="another model folder: ALARM-E (repeatable)")
    p.add_argument("--audio", required=True, help="audio file: WAV/FLAC/OGG/MP3, any rate; channels are averaged")
    p.add_argument("--prompt", required=True, help="the user's question about the audio")
    p.add_argument("--system-prompt", default=None, help="system prompt (default: the published one)")
    p.add_argument("--no-system-prompt", action="store_true", help="send no system turn")
    add_generation_args(p)
    p.add_argument("--max-seconds", type=float, default=None,
                   help="longest clip accepted, in seconds (default and upper bound: the model's max_audio_seconds)")
    p.add_argument("--crop", action="store_true", help="keep the first --max-seconds of a longer clip instead of "
                   "refusing it")
    p.add_argument("--start", type=float, default=0.0, help="seconds to skip at the start of the clip (default 0)")
    p.set_defaults(func=run)


def read_clip(args, model_limit: float):
    """Read ``args.audio`` from ``--start`` under ``--max-seconds``/``--crop`` -> (float32 mono samples, rate).

    Only the window is decoded: at most the limit (``--crop``) or the limit plus one second (to tell
    that a clip is too long) from ``--start``."""
    from alarm.audio import load_audio

    if args.max_seconds is not None and args.max_seconds > model_limit:
        raise ValueError(f"--max-seconds {args.max_seconds} exceeds the model's limit of {model_limit} s")
    limit = model_limit if args.max_seconds is None else args.max_seconds
    wave, rate = load_audio(args.audio, args.start, limit if args.crop else limit + 1.0)
    if wave.shape[0] > limit * rate:
        raise ValueError(f"{args.audio} lasts more than the limit of {limit} s (pass --crop to keep its first "
                         f"{limit} s, or --start to skip some)")
    return wave, rate


def run(args) -> int:
    from alarm.commands.checks import check_device, check_range
    from alarm.model.alarm_model import load_saved_config
    from alarm.prompts import SYSTEM_PROMPT

    kwargs = generation_kwargs(args)
    check_range("--max-seconds", args.max_seconds, 1e-3, allow_none=True)
    check_range("--start", args.start, 0.0)
    device = check_device("--device", args.device)
    for folder in [args.model, *(args.ensemble or [])]:
        load_saved_config(folder)
    wave, rate = read_clip(args, load_saved_config(args.model).max_audio_seconds)
    model = load_models(args.model, args.ensemble, device)
    system = None if args.no_system_prompt else (args.system_prompt or SYSTEM_PROMPT)
    out = model.generate([wave], args.prompt, sampling_rate=rate, system_prompt=system, **kwargs)
    print(out["text"][0])
    return 0

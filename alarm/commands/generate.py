"""``alarm generate``: answer a prompt about an audio file with a saved ALARM model (thinking budget).

Example: ``alarm generate --model out/alarm-ca --audio clip.wav --prompt "What do you hear?"
--max-thinking-tokens 256``. The model folder is what ``ALARMModel.save_pretrained`` wrote; its frozen
LLM and encoders are loaded from the paths recorded in its config. The audio file (WAV, FLAC, OGG, MP3,
any rate, channels averaged) is read and checked before the model is loaded; a clip longer than
``--max-seconds`` (default: the model's limit) is refused unless ``--crop`` keeps its first part.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="answer a prompt about an audio file with a saved ALARM model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder written by ALARMModel.save_pretrained")
    p.add_argument("--audio", required=True, help="audio file: WAV/FLAC/OGG/MP3, any rate; channels are averaged")
    p.add_argument("--prompt", required=True, help="the user's question about the audio")
    p.add_argument("--max-thinking-tokens", type=int, default=None,
                   help="thinking budget: force the answer after N thinking tokens (default: no budget)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="cap on generated tokens (default 1024)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="longest clip accepted, in seconds (default and upper bound: the model's max_audio_seconds)")
    p.add_argument("--crop", action="store_true", help="keep the first --max-seconds of a longer clip instead of "
                   "refusing it")
    p.add_argument("--start", type=float, default=0.0, help="seconds to skip at the start of the clip (default 0)")
    p.set_defaults(func=run)


def load_clip(args, model_limit: float):
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
    from alarm.model.alarm_model import ALARMModel, load_saved_config

    check_range("--max-thinking-tokens", args.max_thinking_tokens, 0, allow_none=True)
    check_range("--max-new-tokens", args.max_new_tokens, 1)
    check_range("--max-seconds", args.max_seconds, 1e-3, allow_none=True)
    check_range("--start", args.start, 0.0)
    device = check_device("--device", args.device)
    config = load_saved_config(args.model)
    wave, rate = load_clip(args, config.max_audio_seconds)
    model = ALARMModel.from_pretrained(args.model).to(device)
    out = model.generate([wave], args.prompt, sampling_rate=rate, max_thinking_tokens=args.max_thinking_tokens,
                         max_new_tokens=args.max_new_tokens)
    print(out["text"][0])
    return 0

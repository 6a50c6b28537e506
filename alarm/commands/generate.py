"""``alarm generate``: answer a prompt about a WAV file with a saved ALARM model (thinking budget).

Example: ``alarm generate --model out/alarm-ca --audio clip.wav --prompt "What do you hear?"
--max-thinking-tokens 256``. The model folder is what ``ALARMModel.save_pretrained`` wrote; its frozen
LLM and encoders are loaded from the paths recorded in its config.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="answer a prompt about a WAV file with a saved ALARM model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder written by ALARMModel.save_pretrained")
    p.add_argument("--audio", required=True, help="PCM WAV file (any rate; channels are averaged)")
    p.add_argument("--prompt", required=True, help="the user's question about the audio")
    p.add_argument("--max-thinking-tokens", type=int, default=None,
                   help="thinking budget: force the answer after N thinking tokens (default: no budget)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="cap on generated tokens (default 1024)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)


def run(args) -> int:
    from alarm.audio import load_wav
    from alarm.model import ALARMModel

    try:
        wave, rate = load_wav(args.audio)
        model = ALARMModel.from_pretrained(args.model).to(args.device)
        out = model.generate([wave], args.prompt, sampling_rate=rate, max_thinking_tokens=args.max_thinking_tokens,
                             max_new_tokens=args.max_new_tokens)
    except ValueError as e:
        print(f"alarm generate: error: {e}", file=sys.stderr)
        return 2
    print(out["text"][0])
    return 0

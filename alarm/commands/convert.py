"""Convert a published ALARM checkpoint (a folder or a hub id) into a model folder this project loads.

Only the audio side (adapters, fusion, separators, BatchNorm statistics) is copied; the frozen encoders
and LLM load from their own checkpoints (--like takes their paths from a saved alarm_config.json, --llm
names the LLM). The key mapping is documented in alarm/convert.py.

  alarm convert Blinorot/ALARM-CA --out ckpt/alarm-ca
  alarm generate --model ckpt/alarm-ca --audio clip.wav --prompt "What do you hear?"
"""
from __future__ import annotations

from alarm.commands import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "convert", __doc__)
    p.add_argument("path", help="published checkpoint: transformers folder (config.json + *.safetensors) or hub id")
    p.add_argument("--out", required=True, help="output folder (must not hold a saved model yet)")
    p.add_argument("--like", default=None, help="alarm_config.json (or its folder) giving encoders, LLM, tokenizer")
    p.add_argument("--llm", default=None, help="path or hub id of the frozen LLM (default Qwen3-4B-Thinking-2507)")
    p.set_defaults(func=run)


def run(args) -> int:
    from alarm.convert import convert_published

    info = convert_published(args.path, args.out, like=args.like, llm_path=args.llm)
    cfg = info["config"]
    print(f"converted {info['mapped']} audio-side tensors ({info['ignored']} encoder/LLM tensors ignored): "
          f"fusion {cfg.fusion}, encoders {[e.name for e in cfg.encoders]} -> {args.out}")
    return 0

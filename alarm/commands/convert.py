"""``alarm convert``: turn a published ALARM checkpoint into a folder ``ALARMModel.from_pretrained`` loads.

Example: ``alarm convert Blinorot/ALARM-CA --out ckpt/alarm-ca`` then ``alarm generate --model
ckpt/alarm-ca --audio clip.wav --prompt "What do you hear?"``. Only the audio side (adapters, fusion,
separators, BatchNorm statistics) is copied; the frozen encoders and LLM load from their own checkpoints
(``--like``: take their paths from a saved ``alarm_config.json``; ``--llm``: the LLM's path).
The key mapping is documented in ``alarm/convert.py``.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a published ALARM checkpoint (folder or hub id)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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

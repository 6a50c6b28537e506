"""``alarm train``: train an ALARM model from a recipe (see ``alarm.train.config``).

    alarm train --config alarm/train/recipes/alarm_ca.yaml data.train_manifest=data/train.jsonl
    torchrun --nproc_per_node 8 -m alarm train --config ... run.out_dir=runs/ca   # 8 GPUs, one node
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an ALARM model from a recipe", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="recipe file (YAML or JSON)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.lr=3e-4")
    p.add_argument("--resume", default="auto",
                   help="auto (newest complete checkpoint of run.out_dir, default), never, or a checkpoint folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from alarm.train import load_config, train

    cfg = load_config(args.config, args.overrides)
    for key in ("train_manifest", "eval_manifest", "cache"):  # cheap checks before any model is built
        value = getattr(cfg.data, key)
        if value and not (Path(value).is_dir() if key == "cache" else Path(value).is_file()):
            raise ValueError(f"data.{key}: {value} not found")
    summary = train(cfg, resume=args.resume)
    print(f"done: {summary['steps']} steps, model saved to {summary['model']}")
    return 0

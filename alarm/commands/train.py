"""Train an ALARM model's audio side from a recipe file.

Recipes with the paper's hyperparameters are in alarm/train/recipes/; any recipe key can be overridden on the
command line as SECTION.KEY=VALUE. A run continues from its newest complete checkpoint by default.

  alarm train --config alarm/train/recipes/alarm_ca.yaml data.train_manifest=data/train.jsonl
  torchrun --nproc_per_node 8 -m alarm train --config ... run.out_dir=runs/ca   # 8 GPUs, one node

Reference: docs/training.md.
"""
from __future__ import annotations

from pathlib import Path

from alarm.commands import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "train", __doc__)
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

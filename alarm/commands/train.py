"""Train an ALARM model's audio side from a recipe file.

Recipes with the paper's hyperparameters are in alarm/train/recipes/; any recipe key can be overridden on the
command line as SECTION.KEY=VALUE. A run continues from its newest intact checkpoint by default.

  alarm train --config alarm/train/recipes/alarm_ca.yaml data.train_manifest=data/train.jsonl
  torchrun --nproc_per_node 8 -m alarm train --config ... run.out_dir=runs/ca   # 8 GPUs, one node
  alarm train --check-checkpoints runs/ca    # verify every checkpoint and final/ without training

Reference: docs/training.md; what a checkpoint holds and how to recover from each failure: docs/checkpoints.md.
"""
from __future__ import annotations

from pathlib import Path

from alarm.commands import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "train", __doc__)
    p.add_argument("--config", help="recipe file (YAML or JSON); required unless --check-checkpoints")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.lr=3e-4")
    p.add_argument("--resume", default="auto",
                   help="auto (newest intact checkpoint of run.out_dir, default), never, or a checkpoint folder")
    p.add_argument("--check-checkpoints", metavar="RUN_DIR",
                   help="verify every checkpoint (and final/) of RUN_DIR against its checksums, then exit: "
                        "0 when all are intact, 1 when one is damaged")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.check_checkpoints:
        return check_run(args.check_checkpoints)
    if not args.config:
        raise ValueError("--config is required (or --check-checkpoints RUN_DIR)")
    from alarm.train import load_config, train

    cfg = load_config(args.config, args.overrides)
    for key in ("train_manifest", "eval_manifest", "cache"):  # cheap checks before any model is built
        value = getattr(cfg.data, key)
        if value and not (Path(value).is_dir() if key == "cache" else Path(value).is_file()):
            raise ValueError(f"data.{key}: {value} not found")
    summary = train(cfg, resume=args.resume)
    print(f"done: {summary['steps']} steps, model saved to {summary['model']}")
    return 0


def check_run(run_dir: str) -> int:
    """Print one line per checkpoint of ``run_dir`` (and its ``final/`` model) saying whether it is intact, and
    which checkpoint ``--resume auto`` would use; 0 when nothing is damaged, 1 otherwise."""
    from alarm.fileio import CorruptFileError
    from alarm.model.alarm_model import verify_saved_model
    from alarm.train.checkpoint import verify_checkpoint

    root = Path(run_dir)
    if not root.is_dir():
        raise ValueError(f"--check-checkpoints: {run_dir} is not a folder")
    folders = sorted(p for p in (root / "checkpoints").glob("step-*") if p.is_dir()) \
        if (root / "checkpoints").is_dir() else []
    damaged, usable = 0, None
    for folder in folders:
        if folder.name.endswith(".tmp"):
            print(f"{folder}: unfinished write (a run stopped while saving it): ignored, replaced by the next save")
            continue
        try:
            verified = verify_checkpoint(folder)
        except CorruptFileError as exc:
            print(f"{folder}: DAMAGED: {exc}")
            damaged += 1
            continue
        usable = folder
        print(f"{folder}: {'intact' if verified else 'written before checksums existed: not verifiable'}")
    if (root / "final").is_dir():
        try:
            verified = verify_saved_model(str(root / "final"))
            print(f"{root / 'final'}: {'intact' if verified else 'saved before checksums existed: not verifiable'}")
        except ValueError as exc:
            print(f"{root / 'final'}: DAMAGED: {exc}")
            damaged += 1
    if not folders:
        print(f"{root}: no checkpoint")
    else:
        print(f"--resume auto would start from {usable}" if usable is not None
              else "--resume auto would stop: no intact checkpoint")
    return 1 if damaged else 0

"""Precompute the frozen encoder or adapter features of a recipe's training data (and of its data.eval_manifest).

The cache is resumable (rerun the same command after a crash, or to repair a damaged shard) and is refused by
alarm train when anything it depends on has changed.

  alarm cache --config alarm/train/recipes/alarm_ca.yaml --out cache/ca --level adapter
  alarm train --config alarm/train/recipes/alarm_ca.yaml data.cache=cache/ca
  alarm cache --check cache/ca      # verify every shard against its checksum (exit 1 when one is damaged)

Reference: docs/training.md.
"""
from __future__ import annotations

from pathlib import Path

from alarm.commands import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "cache", __doc__)
    p.add_argument("--config", help="recipe file (YAML or JSON); required unless --check")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--out", help="cache folder (resumable: rerun to finish an interrupted build or repair a damaged "
                   "one); required unless --check")
    p.add_argument("--check", metavar="FOLDER", help="only verify the cache in FOLDER against its checksums")
    p.add_argument("--level", choices=("encoder", "adapter"), default="encoder",
                   help="encoder: selected encoder layers (any stage); adapter: frozen adapter outputs (stage B)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--shard-size", type=int, default=256, help="clips per shard file (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per encoder batch (default 8)")
    p.add_argument("--device", default=None, help="where the frozen encoders run: cpu, cuda, cuda:1 (default: the "
                   "recipe's run.device; auto = cuda when a GPU is visible)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.check:
        return _check(args.check)
    if not args.config or not args.out:
        raise ValueError("--config and --out are required (or --check FOLDER)")
    if args.shard_size < 1 or args.batch_size < 1:
        raise ValueError("--shard-size and --batch-size must be >= 1")
    import torch

    from alarm.commands.checks import check_device
    from alarm.train import build_model, load_config
    from alarm.train.cache import build_cache
    from alarm.train.data import load_examples

    cfg = load_config(args.config, args.overrides)
    for key in ("train_manifest", "eval_manifest"):  # cheap checks before any model is built
        value = getattr(cfg.data, key)
        if value and not Path(value).is_file():
            raise ValueError(f"data.{key}: {value} not found")
    device = args.device or cfg.run.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device("--device" if args.device else "run.device", device)
    model = build_model(cfg).to(device)
    if args.level == "adapter" and model.config.stage != "B":
        raise ValueError("--level adapter needs a stage-B recipe (frozen adapters); use --level encoder")
    examples, skips = [], []
    for manifest in filter(None, (cfg.data.train_manifest, cfg.data.eval_manifest)):  # held-out clips too
        found, skipped = load_examples(manifest, model.tokenizer, cfg.data.max_seconds, datasets=cfg.data.datasets)
        examples += found
        skips += skipped
    index = build_cache(model, examples, args.out, level=args.level, dtype=args.dtype, shard_size=args.shard_size,
                        batch_size=args.batch_size)
    nonfinite = sum(s["reason"].startswith("non-finite") for s in index["skipped"])
    print(f"cached {index['clips']} clips in {len(index['shards'])} shards under {args.out} "
          f"({len(index['skipped']) - nonfinite} undecodable, {nonfinite} refused for non-finite features, "
          f"{len(skips)} skipped from the manifest)")
    return 0


def _check(folder: str) -> int:
    """Verify a cache folder: 0 when every shard matches its checksum, else 1 after one line per damaged shard."""
    from alarm.train.cache import verify_cache

    index, damaged = verify_cache(folder)
    for line in damaged:
        print(f"alarm cache: damaged: {line}")
    print(f"alarm cache: {folder}: {len(index['shard_sha256']) - len(damaged)} of {len(index['shard_sha256'])} "
          f"shards intact" + ("; rerun `alarm cache` with the same arguments to rebuild the damaged ones"
                              if damaged else ""))
    return 1 if damaged else 0

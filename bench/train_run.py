"""A short real training run under torchrun: tokens/s, audio hours/s and peak memory of the trainer itself.

    python bench/train_run.py --out OUT                          # GPU: 1 rank, bf16 autocast, 60 steps
    python bench/train_run.py --out OUT --nproc 8                # 8 ranks of one machine
    python bench/train_run.py --out OUT --device cpu --steps 4   # CPU plumbing check (CI runs it)
    python bench/train_run.py --out OUT --work /tmp/tr            # corpus and run folder elsewhere

Writes the demo's synthetic sound corpus (``--clips`` clips, 3 questions each), a tiny ALARM-CA stage-A recipe
with the encoders online, then runs ``torchrun -m alarm train`` on it and reads the run's ``metrics.jsonl``.
``train_run.json`` in ``--out`` gets the device, versions, git sha, the command, the medians of tokens/s, audio
hours/s, step time and data-wait share over the logged steps after the first (compiles and warm-up), the peak
memory, and the first and last losses.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alarm.fileio import atomic_write_json  # noqa: E402
from bench.harness import git_state  # noqa: E402


def write_recipe(folder: Path, manifest: Path, args) -> Path:
    recipe = {
        "model": {"preset": "tiny", "fusion": "CA", "stage": "A", "dropout": 0.0},
        "data": {"train_manifest": str(manifest), "max_seconds": 5, "num_workers": args.workers},
        "optim": {"lr": 2e-3, "warmup_steps": 5},
        "batch": {"max_tokens": args.max_tokens, "accumulation": 1},
        "run": {"out_dir": str(folder / "run"), "epochs": 100, "max_steps": args.steps, "device": args.device,
                "precision": "auto", "log_every": 1, "save_every": 0, "eval_every": 0, "progress": "lines",
                "plot": False},
    }
    path = folder / "recipe.json"
    atomic_write_json(path, recipe)
    return path


def summarize(metrics: Path) -> dict:
    """Medians over the logged training steps after the first, peak memory, first and last loss."""
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    if not train:
        raise ValueError(f"{metrics}: no training step was logged")
    timed = train[1:] or train
    med = lambda key: statistics.median(r[key] for r in timed)  # noqa: E731
    return {"steps": len(train), "tokens_per_s": med("tokens_per_s"), "audio_hours_per_s": med("audio_h_per_s"),
            "step_s": med("step_s"), "data_wait_share": med("data_wait"),
            "peak_memory_gib": max(r.get("peak_mem_gib", 0.0) for r in train),
            "loss_first": train[0]["loss"], "loss_last": train[-1]["loss"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (train_run.json)")
    ap.add_argument("--work", default=None, help="folder for the corpus and the run (default OUT/work)")
    ap.add_argument("--device", default="cuda", help="run.device of the recipe (default cuda)")
    ap.add_argument("--nproc", type=int, default=1, help="ranks (torchrun --nproc_per_node, default 1)")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps (default 60)")
    ap.add_argument("--clips", type=int, default=200, help="synthetic clips, 3 questions each (default 200)")
    ap.add_argument("--max-tokens", type=int, default=4096, help="batch.max_tokens per pack (default 4096)")
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers per rank (default 2)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds before the run is stopped")
    args = ap.parse_args(argv)
    for name in ("nproc", "steps", "clips", "max_tokens"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")

    import torch

    from alarm.demo.run import write_corpus

    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    shutil.rmtree(work / "run", ignore_errors=True)  # this script's own run folder: a rerun starts afresh
    manifest, _ = write_corpus(work / "corpus", args.clips, seed=0)
    recipe = write_recipe(work, manifest, args)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
           "-m", "alarm", "train", "--config", str(recipe), "--resume", "never"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        print(f"train_run: the training run failed (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    result = {
        "bench": "train_run", "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else
        platform.processor() or platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
        "git_sha": git_state()[0], "nproc": args.nproc, "clips": args.clips, "max_tokens": args.max_tokens,
        "recipe": json.loads(recipe.read_text(encoding="utf-8")), "command": cmd,
        **summarize(work / "run" / "metrics.jsonl"),
    }
    atomic_write_json(out / "train_run.json", result)
    print(f"train_run: {result['steps']} steps on {args.nproc} rank(s) of {result['device']}: "
          f"{result['tokens_per_s']:.0f} tokens/s, {result['step_s'] * 1e3:.0f} ms/step, "
          f"peak {result['peak_memory_gib']:.2f} GiB, loss {result['loss_first']:.3f} -> {result['loss_last']:.3f} "
          f"-> {out / 'train_run.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

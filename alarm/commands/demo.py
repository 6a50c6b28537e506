"""Train a tiny ALARM to hear synthetic sounds, on a CPU in a few minutes, with nothing downloaded.

A tiny Qwen3 learns a synthetic sound world from text descriptions and is frozen; then the project's
trainer (fast packed path, cached frozen encoder features) teaches the ALARM audio side to make that
frozen LM answer multiple-choice questions from audio alone. It prints the accuracy from audio before
and after training next to the text-form ceiling and writes a loss curve.

The kernels have their own commands: python -m alarm_kernels.report (parity against the float64
oracle) and python -m bench (timings; on a CPU the Triton interpreter proves correctness only).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from alarm.commands import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "demo", __doc__)
    p.add_argument("--out", default="out/demo", help="folder for everything the demo writes (default out/demo; "
                   "the demo replaces its own run there)")
    p.add_argument("--text-steps", type=int, default=400, help="training steps of the text LM (default 400)")
    p.add_argument("--clips", type=int, default=3000, help="training clips, 3 questions each (default 3000)")
    p.add_argument("--eval-clips", type=int, default=100, help="held-out clips, 3 questions each (default 100)")
    p.add_argument("--steps", type=int, default=None, help="audio-side optimizer steps (default: the recipe's)")
    p.add_argument("--token-rate", type=int, default=1, help="audio token rate divisor (1 = 25 Hz; 2 = 12.5 Hz)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from alarm.commands.checks import check_range

    check_range("--text-steps", args.text_steps, 1)
    check_range("--clips", args.clips, 2)
    check_range("--eval-clips", args.eval_clips, 1)
    check_range("--steps", args.steps, 1, allow_none=True)
    check_range("--token-rate", args.token_rate, 1, 64)
    from alarm.demo.run import run_demo

    out = Path(args.out)
    for owned in ("run", "cache", "train", "eval", "text-lm"):  # the demo's own outputs from an earlier run
        if (out / owned).is_dir():
            shutil.rmtree(out / owned)
    overrides = [f"model.token_rate_ratio={args.token_rate}",
                 f"data.tokens_per_second={25 / args.token_rate}"]
    if args.steps is not None:
        overrides.append(f"run.max_steps={args.steps}")
    run_demo(str(out), text_steps=args.text_steps, train_clips=args.clips, eval_clips=args.eval_clips,
             overrides=tuple(overrides), seed=args.seed)
    return 0

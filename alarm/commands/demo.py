"""``alarm demo``: the embedded default job (tiny models, synthetic audio, no downloads).

It proves every kernel against its float64 oracle on this machine (``alarm_kernels.report``), times the
kernels side by side (``bench.kernels --quick``; run from the repository root), and trains the tiny
ALARM model for a few steps on synthetic audio with both execution paths.
"""
from __future__ import annotations

import argparse
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="kernel parity report + quick benchmarks + tiny ALARM training run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-bench", action="store_true", help="skip the kernel benchmarks")
    p.add_argument("--skip-train", action="store_true", help="skip the tiny training run")
    p.add_argument("--steps", type=int, default=4, help="training steps per path (default 4)")
    p.add_argument("--out", default="out/demo", help="folder for results (default out/demo)")
    p.set_defaults(func=run)


def run(args) -> int:
    from alarm.commands.checks import check_range

    check_range("--steps", args.steps, 1)
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined
    from alarm_kernels.report import run_report

    os.makedirs(args.out, exist_ok=True)
    print("== 1. kernel parity ==")
    failures = [r for r in run_report() if not r.ok]
    if not args.skip_bench:
        print("\n== 2. kernel benchmarks (quick shapes) ==")
        try:
            from bench import kernels as bench_kernels
        except ImportError:
            print("bench/ is not importable: run `python -m alarm demo` from the repository root")
        else:
            bench_kernels.main(["--quick", "--out", os.path.join(args.out, "kernels.json")])
    if not args.skip_train:
        print("\n== 3. tiny ALARM training run ==")
        from alarm.demo_train import train_tiny

        train_tiny(steps=args.steps, out_dir=args.out)
    if failures:
        print(f"\n{len(failures)} kernel parity checks FAILED", file=sys.stderr)
        return 1
    return 0

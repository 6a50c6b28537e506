"""Kernel micro-benchmarks: every case of ``bench/cases/*.py``, all variants side by side in one run.

    python -m bench.ops [--quick] [--ops varlen_pool,attention] [--variants triton] [--out bench/results/NAME.json]

Reports per op and shape: median time and spread (p20-p80), achieved GB/s or TFLOP/s, fraction of the
device's measured ceiling (copy bandwidth, or dense bf16/fp32 matmul throughput), speedup over the
"reference" variant, and peak memory. On GPU, timing uses ``triton.testing.do_bench`` (L2 flushed,
CUDA events); on CPU a perf_counter loop. The JSON result records device, versions and git sha.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import platform
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch

from bench.harness import BenchCase, git_state, spread

__all__ = ["time_fn", "measure_ceilings", "run_cases", "collect_cases", "run_suite", "environment", "format_table",
           "main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, *, budget_s: float = 0.5) -> Dict[str, float]:
    """Median and p20/p80 of ``fn``'s run time in milliseconds, plus peak memory (MiB, GPU only)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        p20, median, p80 = do_bench(fn, warmup=25, rep=int(budget_s * 1000), quantiles=[0.2, 0.5, 0.8])
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return {"ms": median, "p20_ms": p20, "p80_ms": p80, "peak_mib": peak}
    fn()  # warm-up (and compile, for torch.compile variants)
    times: List[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    s = spread(times, (20, 80))
    return {"ms": s["median"], "p20_ms": s["p20"], "p80_ms": s["p80"], "peak_mib": float("nan")}


def measure_ceilings(device: torch.device, quick: bool) -> Dict[str, float]:
    """Measured device ceilings: copy bandwidth (GB/s, read+write) and dense matmul TFLOP/s."""
    n_bytes = (64 if quick or device.type == "cpu" else 1024) * 2**20
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_ms = time_fn(lambda: dst.copy_(src), device)["ms"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 8192 if device.type == "cuda" and not quick else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm_ms = time_fn(lambda: a @ b, device)["ms"]
    return {
        "copy_GBps": 2 * n_bytes / (copy_ms * 1e-3) / 1e9,
        "matmul_TFLOPs": 2 * n**3 / (mm_ms * 1e-3) / 1e12,
        "matmul_dtype": str(dtype).replace("torch.", ""),
    }


def discover_case_modules(only: Optional[List[str]] = None) -> List[str]:
    """Names of ``bench.cases`` modules (one per op), optionally filtered."""
    import bench.cases

    names = sorted(m.name for m in pkgutil.iter_modules(bench.cases.__path__))
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise SystemExit(f"unknown ops {sorted(unknown)}; available: {names}")
        names = [n for n in names if n in only]
    return names


INTERPRETER_LABEL = "interpreter (correctness only)"


def interpreted(variant: str, device: torch.device) -> bool:
    """True for a Triton variant running under the CPU interpreter: its time says nothing about the kernel."""
    return device.type == "cpu" and variant == "triton"


def run_cases(cases: List[BenchCase], device: torch.device, ceilings: Dict[str, float], budget_s: float,
              progress: bool = True, on_case: Optional[Callable[[List[dict]], None]] = None) -> List[dict]:
    """Time every variant of every case; returns one row per (case, variant). Triton rows on CPU are labelled
    :data:`INTERPRETER_LABEL` and get no speedup. ``on_case(rows so far)`` runs after each case."""
    rows: List[dict] = []
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="bench", unit="case", file=sys.stderr)
    for case in iterator:
        baseline_ms = None
        results = {}
        for label, fn in case.variants.items():
            try:
                results[label] = time_fn(fn, device, budget_s=budget_s)
            except Exception as exc:  # a variant that cannot run here is reported, not fatal
                results[label] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        if "reference" in results and "ms" in results["reference"]:
            baseline_ms = results["reference"]["ms"]
        for label, res in results.items():
            row = {"op": case.op, "case": case.name, "direction": case.direction, "variant": label, **case.notes}
            row.update(res)
            if interpreted(label, device):
                row["label"] = INTERPRETER_LABEL
            if "ms" in res:
                seconds = res["ms"] * 1e-3
                if case.bytes_moved:
                    row["GBps"] = case.bytes_moved / seconds / 1e9
                    row["frac_copy_bw"] = row["GBps"] / ceilings["copy_GBps"]
                if case.flops:
                    row["TFLOPs"] = case.flops / seconds / 1e12
                    row["frac_matmul_peak"] = row["TFLOPs"] / ceilings["matmul_TFLOPs"]
                if baseline_ms and "label" not in row:
                    row["speedup_vs_reference"] = baseline_ms / res["ms"]
            rows.append(row)
        if on_case is not None:
            on_case(rows)
    return rows


def environment(device: torch.device) -> dict:
    """Device name, library versions and git sha, recorded with every result."""
    sha, dirty = git_state()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": name,
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "python": platform.python_version(),
        "git_sha": sha,
        "git_dirty": dirty,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_table(rows: List[dict]) -> str:
    """Markdown table of the rows."""
    lines = ["| op | case | dir | variant | median ms | p20-p80 ms | GB/s | %copy BW | TFLOP/s | %peak | x ref "
             "| peak MiB |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda row, k, spec: format(row[k], spec) if k in row and row[k] == row[k] else ""  # noqa: E731
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['case']} | {r['direction']} | {r['variant']} | "
                         f"n/a: {r['error'][:60]} |||||||")
            continue
        pct = lambda k, r=r: f"{100 * r[k]:.0f}%" if k in r else ""  # noqa: E731
        variant = f"{r['variant']}: {r['label']}" if "label" in r else r["variant"]
        lines.append(
            f"| {r['op']} | {r['case']} | {r['direction']} | {variant} | {r['ms']:.3f} | "
            f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f} | {fmt(r, 'GBps', '.0f')} | {pct('frac_copy_bw')} | "
            f"{fmt(r, 'TFLOPs', '.1f')} | {pct('frac_matmul_peak')} | {fmt(r, 'speedup_vs_reference', '.2f')} | "
            f"{fmt(r, 'peak_mib', '.0f')} |"
        )
    return "\n".join(lines)


def triton_configs() -> Dict[str, dict]:
    """Per autotuned Triton kernel of the package: the config chosen for each shape key so far and the seconds
    its last tuning took (empty under the interpreter, where nothing is autotuned)."""
    from triton.runtime.autotuner import Autotuner

    import alarm_kernels

    chosen: Dict[str, dict] = {}
    for info in pkgutil.iter_modules(alarm_kernels.__path__):
        try:
            module = importlib.import_module(f"alarm_kernels.{info.name}.triton")
        except ImportError:
            continue
        for obj in vars(module).values():
            if isinstance(obj, Autotuner) and obj.cache:
                chosen[f"{info.name}.{obj.base_fn.__name__}"] = {
                    "configs": {json.dumps(list(k), default=str): str(c) for k, c in obj.cache.items()},
                    "last_tuning_s": getattr(obj, "bench_time", None),
                }
    return chosen


def collect_cases(device: torch.device, quick: bool, ops: Optional[List[str]] = None,
                  variants: Optional[List[str]] = None) -> List[BenchCase]:
    """The cases of the selected case modules; with ``variants``, only those variants (and "reference")."""
    cases: List[BenchCase] = []
    for name in discover_case_modules(ops):
        cases.extend(importlib.import_module(f"bench.cases.{name}").cases(device, quick))
    if variants:
        for case in cases:
            case.variants = {k: v for k, v in case.variants.items() if k in variants or k == "reference"}
    return cases


def run_suite(device: torch.device, quick: bool, budget_s: float, ops: Optional[List[str]] = None,
              variants: Optional[List[str]] = None, out: Optional[str] = None, progress: bool = True) -> dict:
    """Measure the ceilings, then time every case; the result (environment, ceilings, rows; at the end the Triton
    configs chosen and their tuning time, :func:`triton_configs`) is rewritten to ``out`` after every case with
    ``"complete": false`` (a run cut short keeps what it measured)."""
    torch._logging.set_logs(dynamo=logging.ERROR)
    cases = collect_cases(device, quick, ops, variants)
    result = {"environment": environment(device), "ceilings": measure_ceilings(device, quick), "rows": [],
              "complete": False}

    def save(rows: List[dict]) -> None:
        result["rows"] = rows
        if out:
            from alarm.fileio import atomic_write_json

            atomic_write_json(out, result)

    save(run_cases(cases, device, result["ceilings"], budget_s, progress=progress, on_case=save))
    result["triton_configs"] = triton_configs()
    result["complete"] = True
    save(result["rows"])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds on CPU)")
    parser.add_argument("--ops", default="", help="comma-separated case modules (default: all)")
    parser.add_argument("--variants", default="", help="comma-separated variants to time (default: all; "
                        "'reference' is always kept)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per variant")
    parser.add_argument("--out", default=None, help="write JSON results here (and a PNG next to it)")
    args = parser.parse_args(argv)
    # torch.compile variants of the padded baselines graph-break on data-dependent shapes by nature;
    # that is part of what is measured, not something to print pages of warnings about.
    warnings.filterwarnings("ignore", message="Error detected in", category=UserWarning)  # same fallbacks, backward
    device = torch.device(args.device)
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 0.5)
    result = run_suite(device, args.quick, budget, [o for o in args.ops.split(",") if o],
                       [v for v in args.variants.split(",") if v], args.out)
    env, ceilings = result["environment"], result["ceilings"]
    print(f"device: {env['device']} | torch {env['torch']} | triton {env['triton']} | sha {env['git_sha'][:10]}")
    print(f"ceilings: copy {ceilings['copy_GBps']:.0f} GB/s, matmul {ceilings['matmul_TFLOPs']:.1f} TFLOP/s "
          f"({ceilings['matmul_dtype']})")
    print(format_table(result["rows"]))
    if args.out:
        from bench.plot import plot_speedups

        png = plot_speedups(result["rows"], os.path.splitext(args.out)[0] + ".png", env["device"])
        print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark suite: every kernel case, then the end-to-end training step; JSON + PNG per run.

    python -m bench [--quick] [--ops varlen_pool,attention] [--variants triton] [--out FOLDER] [--no-e2e]
    python -m bench --compare A.json B.json

A run writes ``kernels.json`` (rewritten after every case), ``kernels.png`` (speedup over the reference per op
and variant) and ``e2e_step.json`` into ``--out`` (default ``bench/results/run-<UTC time>``). On CPU the Triton
rows run under the interpreter: they are labelled "interpreter (correctness only)" and left out of every
speedup. ``--compare`` prints, for every row present in both files, B's time over A's (below 1: B is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from typing import Dict, List, Tuple

import torch

from bench.ops import format_table, run_suite
from bench.plot import plot_speedups


def _row_key(row: dict) -> Tuple[str, str, str, str]:
    return row.get("op", ""), row.get("case", ""), row.get("direction", ""), row.get("variant", "")


def _timed_rows(data: dict) -> Dict[Tuple[str, str, str, str], float]:
    """Row key -> seconds, from a kernel result file (``rows``) or an e2e result file (``results``)."""
    if data.get("bench") == "e2e_step" and "rows" in data:
        case = f"{data.get('fusion', '')} batch={data.get('batch', '')}"
        return {("e2e_step", f"{case} stage={r['stage']} rate={r['token_rate']}", "fwd+bwd", f"{r['path']}/{r['llm']}"):
                r["step_s"]["median"] for r in data["rows"]}
    if "rows" in data:
        return {_row_key(r): r["ms"] * 1e-3 for r in data["rows"] if "ms" in r}
    if "results" in data:  # an e2e file written before the rows above
        case = f"{data.get('fusion', '')} batch={data.get('batch', '')}"
        return {("e2e_step", case, "fwd+bwd", path): r["step_s_median"] for path, r in data["results"].items()}
    raise ValueError("not a benchmark result file: it has neither 'rows' nor 'results'")


def compare(path_a: str, path_b: str) -> List[str]:
    """Lines of a markdown table: every row timed in both files with its time ratio B / A."""
    loaded = []
    for path in (path_a, path_b):
        try:
            with open(path, encoding="utf-8") as fh:
                loaded.append(_timed_rows(json.load(fh)))
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
    a, b = loaded
    common = [k for k in a if k in b]
    lines = [f"A = {path_a}", f"B = {path_b}", "| op | case | dir | variant | A ms | B ms | B/A |",
             "|---|---|---|---|---:|---:|---:|"]
    for key in common:
        lines.append(f"| {' | '.join(key)} | {a[key] * 1e3:.3f} | {b[key] * 1e3:.3f} | {b[key] / a[key]:.2f} |")
    lines.append(f"{len(common)} rows in both; {len(a) - len(common)} only in A, {len(b) - len(common)} only in B")
    return lines


def run_e2e(out: str, quick: bool, timeout_s: float) -> dict:
    """Run ``bench/e2e_step.py`` (stages A and B at token rate 1) in a subprocess (its own process: a crash or a hang
    costs only this row)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "bench.e2e_step", "--out", out, "--token-rates", "1"]
    cmd += ["--config", "quick", "--steps", "1", "--warmup", "1", "--no-profile"] if quick else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=root)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"status": f"failed (exit {proc.returncode})", "stderr_tail": proc.stderr[-2000:]}
    print(proc.stdout.strip())
    return {"status": "ok", "file": os.path.join(out, "e2e_step.json")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print per-row time ratios B / A")
    parser.add_argument("--quick", action="store_true", help="small shapes (CPU: about a minute)")
    parser.add_argument("--ops", default="", help="comma-separated case modules (default: all)")
    parser.add_argument("--variants", default="", help="comma-separated variants (default: all; reference kept)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per variant")
    parser.add_argument("--out", default=None, help="result folder (default bench/results/run-<UTC time>)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end training step")
    parser.add_argument("--e2e-timeout", type=float, default=300.0, help="seconds allowed for the e2e step")
    args = parser.parse_args(argv)
    if args.compare:
        print("\n".join(compare(*args.compare)))
        return 0
    out = args.out or os.path.join("bench", "results", time.strftime("run-%Y%m%dT%H%M%SZ", time.gmtime()))
    warnings.filterwarnings("ignore", message="Error detected in", category=UserWarning)
    device = torch.device(args.device)
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 0.5)
    kernels_json = os.path.join(out, "kernels.json")
    result = run_suite(device, args.quick, budget, [o for o in args.ops.split(",") if o],
                       [v for v in args.variants.split(",") if v], kernels_json)
    print(format_table(result["rows"]))
    png = plot_speedups(result["rows"], os.path.join(out, "kernels.png"), result["environment"]["device"])
    print(f"wrote {kernels_json} and {png}")
    if not args.no_e2e:
        e2e = run_e2e(out, args.quick or device.type != "cuda", args.e2e_timeout)
        print(f"e2e step: {e2e['status']}")
        if e2e["status"] != "ok":
            print(e2e.get("stderr_tail", ""), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:
        print(f"python -m bench: error: {exc}", file=sys.stderr)
        sys.exit(2)

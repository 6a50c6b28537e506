"""Markdown tables from a folder of benchmark results (a GPU check's output, or ``python -m bench``'s).

    python -m bench.summary bench/results/h200-2026-11-29

Reads every ``*.json`` below the folder and prints, per kind of file found:
- correctness files (``bench/gpu_correctness.py``): checks passed / failed per backend and dtype;
- kernel files (``rows``): per case and direction, the reference time, each fast variant's time and speedup
  over the reference and over the fastest peer (torch.compile, FlexAttention, torch's varlen attention, flash-attn,
  cuBLAS on a materialized concat), with its achieved TFLOP/s or GB/s and fraction of the measured ceiling;
- end-to-end files (``bench/e2e_step.py``): per stage, token rate, path and LLM option: median and p10-p90 step
  time, tokens/s, peak memory (GiB), MFU, loss and speedup over the reference;
- training runs (``bench/train_run.py``): tokens/s, audio hours/s, step time, data wait, peak memory, losses;
- sync counts (``bench/sync_count.py``);
- host cost per op call vs plain PyTorch (``bench/overhead.py``).
Rows of the same case in several files: the file named later (sorted path) wins.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

FAST = ("triton", "cuda")


def _load(folder: Path) -> List[Tuple[Path, dict]]:
    found = []
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not readable as JSON ({exc})") from exc
        if isinstance(data, dict):  # result files are objects; other JSON files beside them are not results
            found.append((path, data))
    return found


def correctness_table(files: List[Tuple[Path, dict]]) -> List[str]:
    lines = ["| file | backend | dtype | checks ok | failed | not run |", "|---|---|---|---:|---:|---:|"]
    for path, data in files:
        counts: Dict[str, Dict[str, int]] = {}
        for row in data["rows"]:
            counts.setdefault(row.get("backend", "?"), {}).setdefault(row.get("status", "?"), 0)
            counts[row.get("backend", "?")][row.get("status", "?")] += 1
        for backend, c in counts.items():
            other = sum(n for s, n in c.items() if s not in ("ok", "failed"))
            lines.append(f"| {path.name} | {backend} | {data.get('dtype', '')} | {c.get('ok', 0)} | "
                         f"{c.get('failed', 0)} | {other} |")
    return lines


def _rate(row: dict) -> str:
    if "TFLOPs" in row:
        return f"{row['TFLOPs']:.0f} TFLOP/s ({row.get('frac_matmul_peak', 0):.0%})"
    if "GBps" in row:
        return f"{row['GBps']:.0f} GB/s ({row.get('frac_copy_bw', 0):.0%})"
    return ""


def kernel_table(files: List[Tuple[Path, dict]]) -> List[str]:
    cases: Dict[Tuple[str, str, str], Dict[str, dict]] = {}
    for _, data in files:
        for row in data["rows"]:
            if "ms" in row and "label" not in row:
                cases.setdefault((row["op"], row["case"], row["direction"]), {})[row["variant"]] = row
    lines = ["| op | case | dir | reference ms | fastest peer (ms) | fast variant | ms | x reference | x peer | rate |",
             "|---|---|---|---:|---|---|---:|---:|---:|---|"]
    for (op, case, direction), variants in cases.items():
        ref = variants.get("reference")
        peers = {k: v for k, v in variants.items() if k not in FAST and k != "reference"}
        best = min(peers.items(), key=lambda kv: kv[1]["ms"]) if peers else None
        for name in FAST:
            row = variants.get(name)
            if row is None:
                continue
            ref_ms = f"{ref['ms']:.3f}" if ref else ""
            x_ref = f"{ref['ms'] / row['ms']:.2f}" if ref else ""
            x_peer = f"{best[1]['ms'] / row['ms']:.2f}" if best else ""
            peer = f"{best[0]} ({best[1]['ms']:.3f})" if best else ""
            lines.append(f"| {op} | {case} | {direction} | {ref_ms} | {peer} | {name} | {row['ms']:.3f} | "
                         f"{x_ref} | {x_peer} | {_rate(row)} |")
    return lines


def _e2e_rows(data: dict) -> List[dict]:
    """An e2e result file's rows in the current form (``bench/e2e_step.py``'s ``rows``). Files written before it
    (``results`` per path, ``peak_memory_mb`` in MiB) are read as stage "?" rows with their memory in GiB."""
    if "rows" in data:
        return data["rows"]
    rows = []
    for name, r in data["results"].items():
        mib = r.get("peak_memory_mb")
        rows.append(dict(stage="?", token_rate=data.get("token_rate_ratio", 1), path=name, llm="none",
                         step_s=dict(median=r["step_s_median"], p10=None, p90=None),
                         tokens_per_s=r["tokens_per_s"], peak_memory_gib=None if mib is None else mib / 1024,
                         mfu=None, loss=r["loss"],
                         speedup_vs_reference=data.get("speedup") if name == "fast" else None))
    return rows


def e2e_table(files: List[Tuple[Path, dict]]) -> List[str]:
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    lines = ["| file | fusion | clips | stage | rate | path | LLM | step s median (p10-p90) | tokens/s | peak GiB "
             "| MFU | loss | x reference |", "|---|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for path, data in files:
        for r in _e2e_rows(data):
            s = r["step_s"]
            spread = f" ({s['p10']:.3f}-{s['p90']:.3f})" if s.get("p10") is not None else ""
            speedup = r.get("speedup_vs_reference")
            lines.append(f"| {path.name} | {data.get('fusion', '')} | {data.get('batch', '')} | {r['stage']} | "
                         f"{r['token_rate']} | {r['path']} | {r.get('llm', 'none')} | {s['median']:.3f}{spread} | "
                         f"{r['tokens_per_s']:.0f} | {fmt(r.get('peak_memory_gib'), '.2f')} | "
                         f"{fmt(r.get('mfu'), '.1%')} | {r['loss']:.5f} | {fmt(speedup, '.2f')} |")
    return lines


def train_run_table(files: List[Tuple[Path, dict]]) -> List[str]:
    lines = ["| device | ranks | steps | tokens/s | audio h/s | step ms | data wait | peak GiB | loss first -> last |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for _, d in files:
        lines.append(f"| {d['device']} | {d['nproc']} | {d['steps']} | {d['tokens_per_s']:.0f} | "
                     f"{d['audio_hours_per_s']:.3f} | {d['step_s'] * 1e3:.0f} | {d['data_wait_share']:.0%} | "
                     f"{d.get('peak_memory_gib', d.get('peak_memory_gb', 0.0)):.2f} | {d['loss_first']:.3f} -> "
                     f"{d['loss_last']:.3f} |")
    return lines


def sync_table(files: List[Tuple[Path, dict]]) -> List[str]:
    lines = ["| step | host transfers | inside alarm_kernels | CUDA syncs (torch) |", "|---|---:|---:|---:|"]
    for _, data in files:
        for label, d in (("from waveforms", data), ("from cached features", data.get("from_features", {}))):
            if d:
                lines.append(f"| {label} | {d['host_transfers']} | {d['host_transfers_in_kernels']} | "
                             f"{d.get('cuda_syncs')} |")
    return lines


def overhead_table(files: List[Tuple[Path, dict]]) -> List[str]:
    from bench.overhead import format_table

    return [line for _, data in files for line in format_table(data["rows"]).splitlines()]


def summarize(folder: Path) -> List[str]:
    """All tables for the results below ``folder`` (markdown lines)."""
    loaded = _load(folder)
    groups = {
        "Correctness against the float64 oracle": (correctness_table,
                                                   [f for f in loaded if "rows" in f[1] and "autotune" in f[1]]),
        "Kernels": (kernel_table, [f for f in loaded if "rows" in f[1] and "ceilings" in f[1]]),
        "End-to-end training step": (e2e_table, [f for f in loaded if f[1].get("bench") == "e2e_step"]),
        "Training run (torchrun)": (train_run_table, [f for f in loaded if f[1].get("bench") == "train_run"]),
        "Host syncs in one fast-path step (tiny model)": (sync_table,
                                                          [f for f in loaded if "host_transfers" in f[1]]),
        "Host cost per op call (tiny sizes, us)": (overhead_table,
                                                   [f for f in loaded if f[1].get("bench") == "overhead"]),
    }
    envs = [d.get("environment", d) for _, d in loaded]
    env = next((e for e in envs if "device" in e and "torch" in e), None)
    shas = sorted({e["git_sha"][:10] for e in envs if e.get("git_sha")})
    out = []
    if env:
        out.append(f"device: {env['device']} | torch {env['torch']} | triton {env.get('triton', '')} | "
                   f"git sha recorded: {', '.join(shas) or 'none'}")
    for title, (table, files) in groups.items():
        if files:
            out += ["", f"### {title}", "", *table(files)]
    if not out:
        raise ValueError(f"{folder}: no benchmark result files found")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a results folder (searched recursively for *.json)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"bench.summary: {args.folder}: not a folder", file=sys.stderr)
        return 2
    try:
        print("\n".join(summarize(args.folder)))
    except ValueError as exc:
        print(f"bench.summary: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plots of benchmark results: speedup over the reference per op and variant (matplotlib, Agg backend)."""
from __future__ import annotations

import collections
import statistics
from typing import Dict, List


def speedups_by_op(rows: List[dict]) -> Dict[str, Dict[str, float]]:
    """op -> variant -> geometric mean of ``speedup_vs_reference`` over the op's cases. Rows without a speedup
    (errors, interpreter rows, the reference itself) are left out."""
    collected: Dict[str, Dict[str, List[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in rows:
        speedup = row.get("speedup_vs_reference")
        if speedup and row["variant"] != "reference" and "label" not in row:
            collected[row["op"]][row["variant"]].append(speedup)
    return {op: {v: statistics.geometric_mean(s) for v, s in per.items()} for op, per in collected.items()}


def plot_speedups(rows: List[dict], path: str, title: str = "") -> str:
    """Write a grouped bar chart (one group per op, one bar per variant, log scale, 1x marked) to ``path``
    (PNG, written atomically); returns ``path``. Ops without any speedup get an empty group and a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alarm.fileio import atomic_write

    data = speedups_by_op(rows)
    ops = sorted({row["op"] for row in rows})
    variants = sorted({v for per in data.values() for v in per})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(ops) + 2), 4.0))
    width = 0.8 / max(1, len(variants))
    for i, variant in enumerate(variants):
        xs = [j + i * width for j, op in enumerate(ops) if variant in data.get(op, {})]
        ys = [data[op][variant] for op in ops if variant in data.get(op, {})]
        bars = ax.bar(xs, ys, width, label=variant)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ops))], ops, rotation=15, fontsize=8)
    ax.set_ylabel("speedup over reference (geo. mean of cases)")
    skipped = [op for op in ops if op not in data]
    note = f" (no speedup rows: {', '.join(skipped)})" if skipped else ""
    ax.set_title((title + note)[:120], fontsize=9)
    if variants:
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path

"""What a user sees of a run (rank 0 only): a progress bar on a terminal or plain log lines, a JSONL
metrics file (always), TensorBoard scalars when ``tensorboard`` is installed, and a loss-curve PNG.

``metrics.jsonl`` has one object per event: ``{"kind": "train"|"eval"|"sample"|"skip"|"end", "step", ...}``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

__all__ = ["MetricsLogger", "plot_metrics"]


class MetricsLogger:
    """Rank-0 logger. ``progress``: "bar" (tqdm), "lines" (one line per log) or "auto" (bar on a terminal)."""

    def __init__(self, run_dir: str, total_steps: int, start_step: int, enabled: bool, progress: str = "auto"):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.total = total_steps
        self.bar = None
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        if use_bar:
            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:
            self.tb = None
        self.t0, self.step0 = time.perf_counter(), start_step

    def log(self, kind: str, step: int, **values) -> None:
        """Append one event; train events also move the bar (or print a line) and go to TensorBoard."""
        if not self.enabled:
            return
        row = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a", encoding="utf-8") as fh:  # append-only log: a torn last line is tolerated
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)
        if kind == "train":
            elapsed = time.perf_counter() - self.t0
            done = step - self.step0
            eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
            short = {k: values[k] for k in ("loss", "grad_norm", "lr", "tokens_per_s", "audio_h_per_s",
                                            "data_wait", "peak_mem_gib") if k in values}
            if self.bar is not None:
                self.bar.n = step
                self.bar.set_postfix({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in short.items()},
                                     refresh=True)
            else:
                text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in short.items())
                print(f"step {step}/{self.total} {text} eta={eta:.0f}s", flush=True)
        elif kind in ("eval", "sample", "skip") and self.bar is None:
            print(f"[{kind}] step {step}: " + json.dumps(values, ensure_ascii=False)[:300], flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def plot_metrics(metrics_path: str, out_png: str, title: Optional[str] = None) -> Optional[str]:
    """Loss curve (train loss per step, eval loss per dataset) of a ``metrics.jsonl`` as a PNG; returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = [], {}
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("kind") == "train" and "loss" in row:
            train.append((row["step"], row["loss"]))
        elif row.get("kind") == "eval":
            for k, v in row.items():
                if k.startswith("loss/"):
                    evals.setdefault(k[5:], []).append((row["step"], v))
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train, strict=True), label="train loss", lw=1)
    for name, pts in sorted(evals.items()):
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"eval loss ({name})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per target token")
    ax.set_title(title or "ALARM training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from alarm.fileio import atomic_write
    atomic_write(out_png, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return out_png

"""What a kernel benchmark case is, and the helpers every benchmark shares. The runner (``python -m bench.ops``)
times every case's variants side by side in one process and reports time, achieved GB/s or TFLOP/s, fraction of
the measured device ceiling, speedup over the reference PyTorch, and peak memory. ``spread`` is the one summary of
repeated measurements (median and percentiles) that every benchmark in ``bench/`` reports."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch


@dataclass
class BenchCase:
    """One op at one shape.

    Attributes:
        op: public op name, e.g. "varlen_pool".
        name: shape/setting label, e.g. "fwd D=1024 N=16 L~1500 bf16".
        variants: label -> zero-argument callable running the work once (e.g. "reference", "triton",
            "cuda", "torch.compile", "sdpa_padded"). "reference" is the baseline for speedups.
        bytes_moved: minimum bytes a perfect kernel reads + writes (for GB/s); None if compute bound.
        flops: useful floating-point operations (for TFLOP/s); None if memory bound.
        direction: "fwd", "bwd" or "fwd+bwd".
    """

    op: str
    name: str
    variants: Dict[str, Callable[[], object]]
    bytes_moved: Optional[float] = None
    flops: Optional[float] = None
    direction: str = "fwd"
    notes: Dict[str, str] = field(default_factory=dict)


def fwd_bwd(fn: Callable[[], torch.Tensor], leaves: Sequence[torch.Tensor]) -> Callable[[], None]:
    """A zero-argument fwd+bwd variant: ``fn()``, then backward with a random cotangent drawn once per output
    shape and reused on every call, then ``.grad`` of every tensor in ``leaves`` reset to None."""
    grad: Dict[str, torch.Tensor] = {}

    def run() -> None:
        y = fn()
        if "g" not in grad or grad["g"].shape != y.shape:
            grad["g"] = torch.randn_like(y)
        y.backward(grad["g"])
        for t in leaves:
            t.grad = None

    return run


def compile_static(fn: Callable) -> Callable:
    """torch.compile(fn) with static shapes. Every case compiles the same function object's code with new
    constants and shapes, so the per-code recompile limit (8) is raised while these variants run;
    otherwise later cases would silently fall back to eager."""
    return torch._dynamo.config.patch(recompile_limit=64)(torch.compile(fn, dynamic=False))


def spread(values: Sequence[float], percentiles: Tuple[int, int] = (10, 90)) -> Dict[str, float]:
    """The spread of repeated measurements: ``{"median", "p<lo>", "p<hi>", "min", "max"}`` (default p10 and p90),
    in the values' unit. Percentiles by linear interpolation between the closest ranks (numpy's default
    ``method="linear"``: the same as ``statistics.quantiles(method="inclusive")``, ``torch.quantile`` and
    ``triton.testing.do_bench``'s quantiles), so every benchmark's spreads compare. ValueError for no values."""
    if len(values) == 0:
        raise ValueError("spread of no values")
    lo, hi = percentiles
    if not 0 <= lo <= 50 <= hi <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lo <= 50 <= hi <= 100, got {percentiles}")
    x = np.asarray(values, dtype=np.float64)
    p_lo, median, p_hi = np.percentile(x, [lo, 50, hi], method="linear")
    return {"median": float(median), f"p{lo}": float(p_lo), f"p{hi}": float(p_hi), "min": float(x.min()),
            "max": float(x.max())}


def git_state() -> Tuple[str, bool]:
    """``(sha, dirty)`` of this checkout, recorded with every result. ``ALARM_GIT_SHA`` wins: a copy sent to a GPU
    machine may carry a stale ``.git`` or none, so its sender names the commit (dirty is then False)."""
    if os.environ.get("ALARM_GIT_SHA"):
        return os.environ["ALARM_GIT_SHA"], False
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10,
                             cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=30,
                               cwd=root).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return sha or "unknown", bool(dirty)

"""What a kernel benchmark case is. The runner (``python -m bench.kernels``) times every case's
variants side by side in one process and reports time, achieved GB/s or TFLOP/s, fraction of the
measured device ceiling, speedup over the reference PyTorch, and peak memory."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional


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

"""Small shared helpers for op front ends and backends: input checks, output allocation, Triton config."""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, Optional, Sequence

import torch

from .backend import triton_interpreting

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

_nan_prefill = os.environ.get("ALARM_KERNELS_NAN_PREFILL", "0") == "1"


@contextlib.contextmanager
def nan_prefill(enabled: bool = True):
    """Within this context every output of every backend is allocated filled with NaN (testing aid:
    an element a kernel forgets to write then fails the parity check). Also set by
    ``ALARM_KERNELS_NAN_PREFILL=1``."""
    global _nan_prefill
    previous, _nan_prefill = _nan_prefill, enabled
    try:
        yield
    finally:
        _nan_prefill = previous


def empty_output(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate an output tensor; NaN-filled under :func:`nan_prefill` (floating dtypes only)."""
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    if _nan_prefill and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def check_tensor(
    x,
    name: str,
    *,
    ndim: Optional[int] = None,
    dtypes: Iterable[torch.dtype] = FLOAT_DTYPES,
    device: Optional[torch.device] = None,
) -> None:
    """Raise ValueError naming ``name`` if ``x`` is not a tensor of the given rank, dtype and device."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    dtypes = tuple(dtypes)
    if x.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {x.dtype}; supported: {dtypes}")
    if device is not None and x.device != torch.device(device):
        raise ValueError(f"{name} is on {x.device}, expected {device}")


def triton_autotune(configs, key, interpret_config: int = 0, **kwargs):
    """``triton.autotune`` on GPU; under ``TRITON_INTERPRET=1`` (where autotune needs a driver) the
    meta-parameters of ``configs[interpret_config]`` are fixed instead."""
    import triton

    if not triton_interpreting():
        return triton.autotune(configs=configs, key=key, **kwargs)
    fixed = dict(configs[interpret_config].kwargs)
    return triton.heuristics({name: (lambda _args, v=value: v) for name, value in fixed.items()})


def is_compiling() -> bool:
    """True while torch.compile / dynamo traces (skip host-side value checks then)."""
    return torch.compiler.is_compiling()

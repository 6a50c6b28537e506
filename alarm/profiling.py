"""NVTX ranges that mark the stages of an ALARM step (encoder, adapter, fusion, splice, llm, loss) so a
training step reads cleanly in Nsight Systems.

Uses the ``nvtx`` package (a no-op costing ~1 us when no profiler is attached); where it is missing (a
bare GPU image), falls back to ``torch.cuda.nvtx``, and on a CPU-only torch without it to a null context.
"""
from __future__ import annotations

import contextlib

import torch

try:
    import nvtx as _nvtx
except ImportError:  # pragma: no cover - depends on the image
    _nvtx = None

__all__ = ["nvtx_range"]


def nvtx_range(name: str):
    """Context manager marking ``name`` as an NVTX range on the profiler timeline."""
    if _nvtx is not None:
        return _nvtx.annotate(name)
    if torch.cuda.is_available():
        return torch.cuda.nvtx.range(name)
    return contextlib.nullcontext()

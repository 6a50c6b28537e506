"""CUDA-extension varlen pooling (``csrc/varlen_pool.cu``): same contract as ``reference.py``.

Outputs are allocated here (``empty_output``, so NaN prefill applies) and filled by the extension;
x / y must be CUDA tensors in fp32, fp16 or bf16.
"""
from __future__ import annotations

import torch

from .._ext import extension
from .._utils import empty_output


def forward(x, cu_seqlens, ratio: int, mode: str, total_y: int = -1):
    """x ``[total, D]`` -> (y ``[sum ceil(L_i/ratio), D]``, int32 cu_y); ``total_y`` as in the reference.
    cu_y comes from one scan launch (``varlen_pool_output_offsets``)."""
    ext = extension()
    cu_y = torch.empty_like(cu_seqlens)
    ext.varlen_pool_output_offsets(cu_seqlens, cu_y, ratio)
    y = empty_output((int(cu_y[-1]) if total_y < 0 else total_y, x.shape[1]), x.dtype, x.device)
    ext.varlen_pool_fwd(x, y, cu_seqlens, cu_y, ratio, mode == "max")
    return y, cu_y


def backward(grad_y, x, y, cu_seqlens, cu_y, ratio: int, mode: str):
    """grad_x ``[total, D]`` in x's dtype (same rule as :func:`reference.backward`)."""
    grad_x = empty_output(x.shape, x.dtype, x.device)
    extension().varlen_pool_bwd(grad_y, x, y, grad_x, cu_seqlens, cu_y, ratio, mode == "max")
    return grad_x

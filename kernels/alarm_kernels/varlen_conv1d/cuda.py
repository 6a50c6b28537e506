"""CUDA-extension varlen conv1d (``csrc/varlen_conv1d.cu``): same contract as ``reference.py``.

The GEMMs run through cuBLAS on gathered operands (im2col of x; col2im of ``grad_pre @ W``); the custom kernels
are the gathers and the GELU derivative.
The weight is re-laid out here as ``[k, C_in, C_out]`` (forward) / ``[k, C_out, C_in]`` (grad_x); outputs
are allocated here (``empty_output``, so NaN prefill applies). GELU saves the pre-activation.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._ext import extension
from .._utils import empty_output


def forward(
    x: Tensor, cu_seqlens: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int, activation: str,
    total_y: int = -1, max_len: int = -1,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(y [total_y, C_out], cu_y, pre)``; pre is the GELU pre-activation or an empty ``[0, C_out]``.
    ``total_y``: the output token count when known on the host (-1: read it); ``max_len`` is unused."""
    c_out, _, k = weight.shape
    ext = extension()
    cu_y = torch.empty_like(cu_seqlens)
    ext.varlen_conv1d_output_offsets(cu_seqlens, cu_y, k, stride, padding)  # one scan launch
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    gelu = activation == "gelu"
    y = empty_output((total_y, c_out), x.dtype, x.device)
    pre = empty_output((total_y if gelu else 0, c_out), x.dtype, x.device)
    if total_y > 0:
        w_t = weight.permute(2, 1, 0).contiguous()
        ext.varlen_conv1d_fwd(x, w_t, bias, y, pre, cu_seqlens, cu_y, stride, padding, gelu)
    return y, cu_y, pre


def backward(
    grad_y: Tensor,
    x: Tensor,
    cu_seqlens: Tensor,
    cu_y: Tensor,
    weight: Tensor,
    pre: Tensor,
    stride: int,
    padding: int,
    activation: str,
    need_dx: bool,
    need_dw: bool,
    max_len: int = -1,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(grad_x, grad_w, grad_b)`` as :func:`reference.backward` (grad_x / grad_w empty when not needed)."""
    c_out, c_in, k = weight.shape
    ext = extension()
    grad_x = empty_output((x.shape[0] if need_dx else 0, c_in), x.dtype, x.device)
    grad_w = empty_output((c_out if need_dw else 0, c_in, k), x.dtype, x.device)
    grad_b = empty_output((c_out,), x.dtype, x.device)
    if grad_y.shape[0] == 0:
        grad_x.zero_()
        grad_w.zero_()
        grad_b.zero_()
        return grad_x, grad_w, grad_b
    grad_pre = grad_y
    if activation == "gelu":
        grad_pre = torch.empty_like(grad_y)
        ext.varlen_conv1d_gelu_grad(grad_y, pre, grad_pre)
    if need_dx:
        w_t = weight.permute(2, 0, 1).contiguous()
        ext.varlen_conv1d_dx(grad_pre, w_t, grad_x, cu_seqlens, cu_y, stride, padding)
    if need_dw:
        ext.varlen_conv1d_dw(grad_pre, x, grad_w, grad_b, cu_seqlens, cu_y, stride, padding)
    else:
        grad_b.copy_(grad_pre.sum(0, dtype=torch.float32))
    return grad_x, grad_w, grad_b

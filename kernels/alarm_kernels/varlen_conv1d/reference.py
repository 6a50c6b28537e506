"""Plain-PyTorch varlen conv1d: the numerics oracle (run it in float64) and the CPU default.

It computes what the padded reference model computes: the packed sequences are scattered into a
zero-padded ``[N, C_in, T]`` batch, convolved with one ``F.conv1d`` call, and the valid output frames are
gathered back. Frames past a sequence's end are zeros, which is exactly the zero padding at its right
edge, so every valid output frame equals the per-sequence convolution. The backward is explicit
(``aten.gelu_backward``, then one ``aten.convolution_backward`` for both gradients on the padded batch): no
autograd inside.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import empty_output
from ..varlen import cu_seqlens_to_seqlens


def conv_out_lengths(lengths: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
    """int64 ``[N]``: output tokens per sequence, ``max(0, (L + 2p - k) // s + 1)`` for L > 0, 0 for L = 0."""
    out = torch.div(lengths + 2 * padding - kernel_size, stride, rounding_mode="floor") + 1
    return torch.where(lengths > 0, out.clamp(min=0), torch.zeros_like(out))


def conv_cu_seqlens(cu_seqlens: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
    """int32 ``[N+1]`` offsets of the conv output for the input offsets ``cu_seqlens``."""
    out_len = conv_out_lengths(cu_seqlens_to_seqlens(cu_seqlens), kernel_size, stride, padding)
    cu_y = torch.zeros_like(cu_seqlens)
    cu_y[1:] = torch.cumsum(out_len, 0).to(cu_seqlens.dtype)
    return cu_y


def phase_offsets(cu_seqlens: Tensor, stride: int, padding: int) -> Tensor:
    """int32 ``[stride, N+1]``: per phase ph, offsets of the sequences' input frames i (local index) with
    ``(i + padding) % stride == ph``, i.e. i = first_ph, first_ph + stride, ... with
    ``first_ph = (ph - padding) mod stride``. The fast backends' grad_x splits frames by phase: a frame of
    phase ph is reached only by taps ph, ph + stride, ... (used by the Triton backend)."""
    lengths = cu_seqlens_to_seqlens(cu_seqlens)
    first = torch.remainder(torch.arange(stride, device=cu_seqlens.device) - padding, stride)
    counts = torch.div(lengths[None, :] - first[:, None] + stride - 1, stride, rounding_mode="floor").clamp(min=0)
    cu_ph = torch.zeros(stride, lengths.numel() + 1, dtype=torch.int32, device=cu_seqlens.device)
    cu_ph[:, 1:] = torch.cumsum(counts, 1).to(torch.int32)
    return cu_ph


def _masks(cu_seqlens: Tensor, cu_y: Tensor, kernel_size: int, max_len: int = -1):
    """Padded length T (>= k so conv1d is defined), and bool masks ``[N, T]`` / ``[N, T_out]`` of valid frames.
    ``max_len``: the longest sequence when known on the host (-1: read it from the device)."""
    lengths = cu_seqlens_to_seqlens(cu_seqlens)
    out_len = cu_seqlens_to_seqlens(cu_y)
    if max_len < 0:
        max_len = int(lengths.max()) if lengths.numel() else 0
    t_in = max(max_len, kernel_size)
    in_mask = torch.arange(t_in, device=cu_seqlens.device)[None, :] < lengths[:, None]
    return t_in, in_mask, out_len


def _pad(x: Tensor, in_mask: Tensor) -> Tensor:
    """Packed ``[total, C]`` -> zero-padded NCT batch ``[N, C, T]``."""
    padded = x.new_zeros(in_mask.shape[0], in_mask.shape[1], x.shape[1])
    padded[in_mask] = x
    return padded.transpose(1, 2)


def forward(
    x: Tensor, cu_seqlens: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int, activation: str,
    total_y: int = -1, max_len: int = -1,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Varlen conv1d.

    Args:
        x: ``[total, C_in]``; cu_seqlens int32 ``[N+1]``; weight ``[C_out, C_in, k]``; bias ``[C_out]`` or None.
        activation: "none" or "gelu".
        total_y, max_len: output token count and longest input sequence when known on the host (-1: read from
            the device).
    Returns:
        ``(y [total_y, C_out], cu_y int32 [N+1], pre)``: pre is the pre-activation ``[total_y, C_out]``
        saved for the GELU backward, or an empty ``[0, C_out]`` tensor when activation is "none".
    """
    c_out, _, k = weight.shape
    cu_y = conv_cu_seqlens(cu_seqlens, k, stride, padding)
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    y = empty_output((total_y, c_out), x.dtype, x.device)
    pre = empty_output((total_y if activation == "gelu" else 0, c_out), x.dtype, x.device)
    if total_y > 0:
        _, in_mask, out_len = _masks(cu_seqlens, cu_y, k, max_len)
        out = F.conv1d(_pad(x, in_mask), weight, bias, stride=stride, padding=padding)  # [N, C_out, T_out]
        out_mask = torch.arange(out.shape[2], device=x.device)[None, :] < out_len[:, None]
        z = out.transpose(1, 2)[out_mask]
        if activation == "gelu":
            pre.copy_(z)
            y.copy_(F.gelu(z))
        else:
            y.copy_(z)
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
    """Explicit backward (``max_len`` as in :func:`forward`). ``grad_pre = grad_y * gelu'(pre)`` (or grad_y), then
    ``grad_x = conv1d_input(grad_pre)``, ``grad_w = conv1d_weight(x, grad_pre)``, ``grad_b = sum_t grad_pre``.

    Returns ``(grad_x [total, C_in] or empty [0, C_in] when not need_dx, grad_w [C_out, C_in, k] or empty
    [0, C_in, k] when not need_dw, grad_b [C_out])`` in x's dtype.
    """
    c_out, c_in, k = weight.shape
    total = x.shape[0]
    grad_pre = torch.ops.aten.gelu_backward(grad_y, pre) if activation == "gelu" else grad_y  # exact GELU's
    grad_x = empty_output((total if need_dx else 0, c_in), x.dtype, x.device)
    grad_w = empty_output((c_out if need_dw else 0, c_in, k), x.dtype, x.device)
    grad_b = empty_output((c_out,), x.dtype, x.device)
    grad_b.copy_(grad_pre.sum(0))
    if grad_pre.shape[0] == 0:
        grad_x.zero_()
        grad_w.zero_()
        return grad_x, grad_w, grad_b
    t_in, in_mask, out_len = _masks(cu_seqlens, cu_y, k, max_len)
    t_out = (t_in + 2 * padding - k) // stride + 1
    out_mask = torch.arange(t_out, device=x.device)[None, :] < out_len[:, None]
    g_pad = grad_pre.new_zeros(out_mask.shape[0], t_out, c_out)
    g_pad[out_mask] = grad_pre
    g_pad = g_pad.transpose(1, 2).contiguous()  # [N, C_out, T_out]
    # one convolution_backward for both gradients, as autograd runs it for nn.Conv1d, on contiguous NCT
    # tensors (strided ones take a path several times slower on CPU)
    x_pad = _pad(x, in_mask).contiguous() if need_dw else x.new_zeros(out_mask.shape[0], c_in, t_in)
    gx, gw, _ = torch.ops.aten.convolution_backward(g_pad, x_pad, weight, None, [stride], [padding], [1], False, [0],
                                                    1, [need_dx, need_dw, False])
    if need_dx:
        grad_x.copy_(gx.transpose(1, 2)[in_mask])
    if need_dw:
        grad_w.copy_(gw)
    return grad_x, grad_w, grad_b

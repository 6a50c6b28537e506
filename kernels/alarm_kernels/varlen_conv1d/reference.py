"""Plain-PyTorch varlen conv1d: the numerics oracle (run it in float64) and the CPU default.

It computes what the padded reference model computes: the packed sequences are scattered into a
zero-padded ``[N, C_in, T]`` batch, convolved with one ``F.conv1d`` call, and the valid output frames are
gathered back. Frames past a sequence's end are zeros, which is exactly the zero padding at its right
edge, so every valid output frame equals the per-sequence convolution. The backward is explicit
(``aten.gelu_backward``, then one ``aten.convolution_backward`` for both gradients on the padded batch): no
autograd inside.
"""
from __future__ import annotations

from itertools import accumulate
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _utils
from .._utils import as_dtype, empty_output
from ..varlen import PaddedLayout, cu_seqlens_to_seqlens, max_seqlen


def conv_out_lengths(lengths: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
    """int64 ``[N]``: output tokens per sequence, ``max(0, (L + 2p - k) // s + 1)`` for L > 0, 0 for L = 0."""
    out = (lengths + (2 * padding - kernel_size)).div_(stride, rounding_mode="floor").add_(1).clamp_(min=0)
    return torch.where(lengths > 0, out, 0)


def conv_cu_seqlens(cu_seqlens: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
    """int32 ``[N+1]`` offsets of the conv output for the input offsets ``cu_seqlens`` (tensor ops, no host read)."""
    out_len = conv_out_lengths(cu_seqlens.diff().long(), kernel_size, stride, padding)
    return F.pad(torch.cumsum(out_len, 0, dtype=torch.int32), (1, 0))


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



def _layouts(cu_seqlens: Tensor, total: int, kernel_size: int, stride: int, padding: int, total_y: int = -1,
             max_len: int = -1) -> Tuple[Tensor, PaddedLayout, PaddedLayout]:
    """(int32 output offsets, where the input frames sit in the zero-padded ``[N, T, C_in]`` batch, where the output
    frames sit in ``[N, T_out, C_out]``) by the route for these offsets (``T`` at least k, so conv1d is defined;
    ``total_y``, ``max_len`` < 0: read from the device on the device route)."""
    if _utils.offsets_on_host(cu_seqlens):
        bounds = cu_seqlens.tolist()
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        out_lengths = [max(0, (n + 2 * padding - kernel_size) // stride + 1) if n else 0 for n in lengths]
        t_in = max(max(lengths, default=0) if max_len < 0 else max_len, kernel_size)
        t_out = (t_in + 2 * padding - kernel_size) // stride + 1
        cu_y = torch.tensor(list(accumulate(out_lengths, initial=0)), dtype=torch.int32, device=cu_seqlens.device)
        return (cu_y, PaddedLayout.from_lengths(lengths, cu_seqlens.device, t_in),
                PaddedLayout.from_lengths(out_lengths, cu_seqlens.device, t_out))
    cu_y = conv_cu_seqlens(cu_seqlens, kernel_size, stride, padding)
    t_in = max(max_seqlen(cu_seqlens) if max_len < 0 else max_len, kernel_size)
    t_out = (t_in + 2 * padding - kernel_size) // stride + 1
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    return (cu_y, PaddedLayout.from_cu_seqlens(cu_seqlens, total, t_in),
            PaddedLayout.from_cu_seqlens(cu_y, total_y, t_out))


# what forward_saving keeps for the backward: ((the padded input [N, C_in, T] or None, then the input and the output
# layouts' sequence and position indices), (N, T, T_out)); empty without output frames
Saved = Tuple[Tuple[Optional[Tensor], ...], Optional[Tuple[int, int, int]]]


def forward_saving(
    x: Tensor, cu_seqlens: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int, activation: str,
    total_y: int = -1, max_len: int = -1,
) -> Tuple[Tuple[Tensor, Tensor, Tensor], Saved]:
    """:func:`forward`'s outputs and what :func:`backward` takes as ``saved`` (the layouts and the padded input)."""
    c_out, _, k = weight.shape
    cu_y, layout, layout_out = _layouts(cu_seqlens, x.shape[0], k, stride, padding, total_y, max_len)
    total_y = layout_out.total
    if total_y == 0:
        pre = empty_output((0, c_out), x.dtype, x.device)
        return (empty_output((0, c_out), x.dtype, x.device), cu_y, pre), ((), None)
    x_pad = layout.pad(x).transpose(1, 2)  # [N, C_in, T]
    # [N, C_out, T_out] -> packed
    z = layout_out.unpad(F.conv1d(x_pad, weight, bias, stride=stride, padding=padding).transpose(1, 2))
    saved = ((x_pad, layout.seq, layout.pos, layout_out.seq, layout_out.pos),
             (layout.n, layout.max_len, layout_out.max_len))
    # outputs in x's dtype (under autocast the conv runs in lower precision; GELU on its output, then the cast)
    if activation == "gelu":
        return (as_dtype(F.gelu(z), x.dtype), cu_y, as_dtype(z, x.dtype)), saved
    return (as_dtype(z, x.dtype), cu_y, empty_output((0, c_out), x.dtype, x.device)), saved


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
    return forward_saving(x, cu_seqlens, weight, bias, stride, padding, activation, total_y, max_len)[0]


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
    *,
    saved: Optional[Saved] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Explicit backward (``max_len`` as in :func:`forward`). ``grad_pre = grad_y * gelu'(pre)`` (or grad_y), then
    ``grad_x = conv1d_input(grad_pre)``, ``grad_w = conv1d_weight(x, grad_pre)``, ``grad_b = sum_t grad_pre``.
    ``saved``: from :func:`forward_saving` (recomputed when None).

    Returns ``(grad_x [total, C_in] or empty [0, C_in] when not need_dx, grad_w [C_out, C_in, k] or empty
    [0, C_in, k] when not need_dw, grad_b [C_out])`` in x's dtype.
    """
    c_out, c_in, k = weight.shape
    grad_pre = torch.ops.aten.gelu_backward(grad_y, pre) if activation == "gelu" else grad_y  # exact GELU's
    grad_b = grad_pre.sum(0)
    if grad_pre.shape[0] == 0:
        return (x.new_zeros(x.shape[0] if need_dx else 0, c_in), x.new_zeros(c_out if need_dw else 0, c_in, k),
                as_dtype(grad_b, x.dtype))
    if saved is None:
        _, layout, layout_out = _layouts(cu_seqlens, x.shape[0], k, stride, padding, grad_pre.shape[0], max_len)
        x_pad = None
    else:
        (x_pad, seq, pos, seq_out, pos_out), (n, t_in, t_out) = saved
        layout, layout_out = PaddedLayout(seq, pos, n, t_in), PaddedLayout(seq_out, pos_out, n, t_out)
    g_pad = layout_out.pad(grad_pre).transpose(1, 2).contiguous()  # [N, C_out, T_out]
    # one convolution_backward for both gradients, as autograd runs it for nn.Conv1d, on contiguous NCT
    # tensors (strided ones take a path several times slower on CPU)
    if need_dw:
        x_pad = (layout.pad(x).transpose(1, 2) if x_pad is None else x_pad).contiguous()
    else:
        x_pad = x.new_zeros(layout.n, c_in, layout.max_len)
    gx, gw, _ = torch.ops.aten.convolution_backward(g_pad, x_pad, weight, None, [stride], [padding], [1], False, [0],
                                                    1, [need_dx, need_dw, False])
    grad_x = as_dtype(layout.unpad(gx.transpose(1, 2)), x.dtype) if need_dx else x.new_empty(0, c_in)
    return grad_x, as_dtype(gw, x.dtype) if need_dw else x.new_empty(0, c_in, k), as_dtype(grad_b, x.dtype)

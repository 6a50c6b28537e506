"""Plain-PyTorch multi-encoder concatenation (+ optional projection): the numerics oracle (run it in
float64) and the CPU default. It materializes the concatenation (the fast backends never do).

Layout: stream e is packed ``[total_e, D_e]`` with offsets ``cu_e`` (int32 ``[N+1]``). Output sequence i
has ``L_i = max_e len_{e,i}`` rows; stream e fills rows ``[0, len_{e,i})`` of it in its feature columns
``[off_e, off_e + D_e)`` and contributes zeros below (pad at end).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..varlen import cu_seqlens_to_seqlens


def output_cu_seqlens(cu_seqlens: Sequence[Tensor]) -> Tensor:
    """int32 ``[N+1]`` offsets of the output: ``L_i = max_e len_{e,i}``."""
    lengths = torch.stack([cu[1:] - cu[:-1] for cu in cu_seqlens]).amax(0)
    cu_y = torch.zeros_like(cu_seqlens[0])
    cu_y[1:] = torch.cumsum(lengths, 0).to(cu_y.dtype)
    return cu_y


def output_rows(cu_e: Tensor, cu_y: Tensor, total_e: int) -> Tensor:
    """int64 ``[total_e]``: the output row each row of a stream lands in."""
    lengths = cu_seqlens_to_seqlens(cu_e)
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_e.device), lengths, output_size=total_e)
    return cu_y[:-1].long()[seq] + torch.arange(total_e, device=cu_e.device) - cu_e[:-1].long()[seq]


def concat(streams: Sequence[Tensor], cu_seqlens: Sequence[Tensor], cu_y: Tensor, total_y: int = -1) -> Tensor:
    """The materialized concatenation ``[total_y, sum D_e]`` (zeros where a stream is shorter);
    ``total_y = cu_y[-1]`` is read from the device when passed as -1."""
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    widths = [x.shape[1] for x in streams]
    out = streams[0].new_zeros(total_y, sum(widths))
    offset = 0
    for x, cu, width in zip(streams, cu_seqlens, widths, strict=True):
        out[output_rows(cu, cu_y, x.shape[0]), offset : offset + width] = x
        offset += width
    return out


def forward(
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    total_y: int = -1,
) -> Tuple[Tensor, Tensor]:
    """-> (y, cu_y): y ``[sum L_i, sum D_e]`` without weight, ``[sum L_i, D_out]`` =
    ``F.linear(concat, weight, bias)`` with it; cu_y int32 ``[N+1]``. ``total_y = sum L_i`` when the
    caller knows it (saves a device read), else -1."""
    cu_y = output_cu_seqlens(cu_seqlens)
    y = concat(streams, cu_seqlens, cu_y, total_y)
    if weight is not None:
        y = F.linear(y, weight, bias)
    return y, cu_y


def backward(
    grad_y: Tensor,
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    cu_y: Tensor,
    weight: Optional[Tensor],
    stream_grads: Sequence[bool],
    need_weight_grad: bool,
    need_bias_grad: bool,
) -> List[Tensor]:
    """Gradients, as one list: ``grad_streams[e]`` for each e with ``stream_grads[e]``, then grad_weight
    ``[D_out, sum D_e]`` if ``need_weight_grad``, then grad_bias ``[D_out]`` if ``need_bias_grad``.

    With ``C`` the concatenation: ``grad_C = grad_y @ weight`` (``grad_y`` itself without weight),
    ``grad_streams[e] = grad_C[rows_e, off_e:off_e + D_e]``, ``grad_weight = grad_y^T @ C``,
    ``grad_bias = grad_y.sum(0)``.
    """
    grad_c = grad_y @ weight if weight is not None else grad_y
    grads: List[Tensor] = []
    offset = 0
    for x, cu, needed in zip(streams, cu_seqlens, stream_grads, strict=True):
        if needed:
            rows = output_rows(cu, cu_y, x.shape[0])
            grads.append(grad_c[rows, offset : offset + x.shape[1]].contiguous())
        offset += x.shape[1]
    if need_weight_grad:
        grads.append(grad_y.t() @ concat(streams, cu_seqlens, cu_y, grad_y.shape[0]))
    if need_bias_grad:
        grads.append(grad_y.sum(0))
    return grads

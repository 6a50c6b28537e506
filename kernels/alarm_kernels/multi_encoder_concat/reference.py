"""Plain-PyTorch multi-encoder concatenation (+ optional projection): the numerics oracle (run it in
float64) and the CPU default. It materializes the concatenation (the fast backends never do).

Layout: stream e is packed ``[total_e, D_e]`` with offsets ``cu_e`` (int32 ``[N+1]``). Output sequence i
has ``L_i = max_e len_{e,i}`` rows; stream e fills rows ``[0, len_{e,i})`` of it in its feature columns
``[off_e, off_e + D_e)`` and contributes zeros below (pad at end).

The output offsets and each stream's output rows come from the offsets by one of two routes
(:func:`alarm_kernels._utils.offsets_on_host`): read on the host and built in Python (CPU), or derived by tensor
ops on the device (no host read). The eager autograd path keeps the rows and the concatenation for the backward
(:func:`forward_saving`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _utils
from ..varlen import cu_seqlens_to_seqlens

# what forward_saving keeps for the backward: ((each stream's output rows int64 [total_e]..., the materialized
# concatenation or None without a weight), no non-tensor values)
Saved = Tuple[Tuple[Optional[Tensor], ...], None]


def output_cu_seqlens(cu_seqlens: Sequence[Tensor]) -> Tensor:
    """int32 ``[N+1]`` offsets of the output: ``L_i = max_e len_{e,i}`` (tensor ops, no host read)."""
    lengths = torch.stack(list(cu_seqlens)).diff(dim=1).amax(0)
    return F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))


def output_rows(cu_e: Tensor, cu_y: Tensor, total_e: int) -> Tensor:
    """int64 ``[total_e]``: the output row each row of a stream lands in (tensor ops, no host read)."""
    shift = (cu_y[:-1] - cu_e[:-1]).repeat_interleave(cu_seqlens_to_seqlens(cu_e), output_size=total_e)
    return shift.add_(torch.arange(total_e, device=cu_e.device))


def _layout(cu_seqlens: Sequence[Tensor], totals: Sequence[int]) -> Tuple[Tensor, List[Tensor]]:
    """(int32 output offsets, each stream's int64 output rows) by the route for these offsets."""
    device = cu_seqlens[0].device
    if _utils.offsets_on_host(cu_seqlens[0]):
        bounds = [cu.tolist() for cu in cu_seqlens]
        cu_y = [0]
        for i in range(len(bounds[0]) - 1):
            cu_y.append(cu_y[-1] + max(b[i + 1] - b[i] for b in bounds))
        rows = []
        for b in bounds:
            stream_rows: List[int] = []
            for i in range(len(b) - 1):
                stream_rows += range(cu_y[i], cu_y[i] + b[i + 1] - b[i])
            rows.append(torch.tensor(stream_rows, dtype=torch.int64, device=device))
        return torch.tensor(cu_y, dtype=torch.int32, device=device), rows
    cu_y = output_cu_seqlens(cu_seqlens)
    return cu_y, [output_rows(cu, cu_y, total) for cu, total in zip(cu_seqlens, totals, strict=True)]


def _concat(streams: Sequence[Tensor], rows: Sequence[Tensor], total_y: int) -> Tensor:
    """The materialized concatenation ``[total_y, sum D_e]`` (zeros where a stream is shorter)."""
    out = streams[0].new_zeros(total_y, sum(x.shape[1] for x in streams))
    offset = 0
    for x, r in zip(streams, rows, strict=True):
        out[r, offset: offset + x.shape[1]] = x
        offset += x.shape[1]
    return out


def concat(streams: Sequence[Tensor], cu_seqlens: Sequence[Tensor], cu_y: Tensor, total_y: int = -1) -> Tensor:
    """The materialized concatenation ``[total_y, sum D_e]`` (zeros where a stream is shorter);
    ``total_y = cu_y[-1]`` is read from the device when passed as -1."""
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    return _concat(streams, _layout(cu_seqlens, [x.shape[0] for x in streams])[1], total_y)


def forward_saving(
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    total_y: int = -1,
) -> Tuple[Tuple[Tensor, Tensor], Saved]:
    """:func:`forward`'s outputs and what :func:`backward` takes as ``saved``."""
    cu_y, rows = _layout(cu_seqlens, [x.shape[0] for x in streams])
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    cat = _concat(streams, rows, total_y)
    if weight is None:
        return (cat, cu_y), ((*rows, None), None)
    return (F.linear(cat, weight, bias), cu_y), ((*rows, cat), None)


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
    return forward_saving(streams, cu_seqlens, weight, bias, total_y)[0]


def backward(
    grad_y: Tensor,
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    cu_y: Tensor,
    weight: Optional[Tensor],
    stream_grads: Sequence[bool],
    need_weight_grad: bool,
    need_bias_grad: bool,
    *,
    saved: Optional[Saved] = None,
) -> List[Tensor]:
    """Gradients, as one list: ``grad_streams[e]`` for each e with ``stream_grads[e]``, then grad_weight
    ``[D_out, sum D_e]`` if ``need_weight_grad``, then grad_bias ``[D_out]`` if ``need_bias_grad``.

    With ``C`` the concatenation: ``grad_C = grad_y @ weight`` (``grad_y`` itself without weight),
    ``grad_streams[e] = grad_C[rows_e, off_e:off_e + D_e]``, ``grad_weight = grad_y^T @ C``,
    ``grad_bias = grad_y.sum(0)``. ``saved``: from :func:`forward_saving` (recomputed when None).
    """
    if saved is None:
        rows, cat = _layout(cu_seqlens, [x.shape[0] for x in streams])[1], None
    else:
        *rows, cat = saved[0]
    grad_c = grad_y @ weight if weight is not None else grad_y
    grads: List[Tensor] = []
    offset = 0
    for x, r, needed in zip(streams, rows, stream_grads, strict=True):
        if needed:
            grads.append(grad_c[:, offset: offset + x.shape[1]].index_select(0, r))
        offset += x.shape[1]
    if need_weight_grad:
        grads.append(grad_y.t() @ (_concat(streams, rows, grad_y.shape[0]) if cat is None else cat))
    if need_bias_grad:
        grads.append(grad_y.sum(0))
    return grads

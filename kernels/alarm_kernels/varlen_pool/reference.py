"""Plain-PyTorch varlen pooling: the numerics oracle (run it in float64) and the CPU default.

Every pooling window is a run of consecutive frames of the packed ``x``. Two routes by size, the same semantics:

* **segments** (``x`` of at most :data:`SEGMENT_ELEMENTS` elements): one ``torch.segment_reduce`` over the window
  lengths, and for the backward one call of that op's own backward kernel (``aten::_segment_reduce_backward``,
  what autograd runs for it): one or two dispatches each way, where the call's host cost is what matters.
* **index** (larger): each frame's window index (one ``repeat_interleave``), ``scatter_reduce`` forward,
  ``index_add_`` / indexing backward: vectorized ATen ops, several times faster than ``segment_reduce``'s scalar CPU
  loops on millions of elements.

Mean spreads each window's gradient evenly over its frames; max sends it to the frames equal to the window's
maximum, split evenly among ties; a window whose maximum is NaN passes no gradient (no frame equals NaN), as the
Triton and CUDA kernels do. fp16 / bf16 means are summed in fp32 (``segment_reduce`` would sum in the input's dtype).

The window lengths and the output offsets come from the offsets by one of two routes
(:func:`alarm_kernels._utils.offsets_on_host`): on the CPU the offsets are read and the lengths are listed in Python
(a few integer operations per sequence, cheaper than tensor ops at small sizes); on a GPU tensor ops derive them on
the device without reading anything back (each window's sequence by ``repeat_interleave`` over the windows per
sequence, its length ``min(ratio, L - position)``). The eager autograd path keeps the lengths (and the index) for
the backward (:func:`forward_saving`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _utils

# most elements of x pooled by segment_reduce; larger inputs take the index route. On the 2-core dev CPU
# (OMP_NUM_THREADS=1) both routes cost the same near 2**15 elements (forward + backward); past that the index route wins
SEGMENT_ELEMENTS = 2**15
# what forward_saving keeps for the backward: ((frames per window int64 [total_y], window index int64 [total] or
# None), no non-tensor values)
Saved = Tuple[Tuple[Tensor, Optional[Tensor]], None]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def pooled_cu_seqlens(cu_seqlens: Tensor, ratio: int) -> Tensor:
    """Offsets of the pooled output: each length L becomes ceil(L / ratio) (tensor ops, no host read)."""
    # ceil(L / ratio) = (L - 1) // ratio + 1 (0 for L = 0): no int32 overflow whatever the ratio
    n_out = cu_seqlens.diff().sub_(1).div_(ratio, rounding_mode="floor").add_(1)
    return F.pad(torch.cumsum(n_out, 0, dtype=torch.int32), (1, 0))


def _host_windows(bounds: List[int], ratio: int) -> Tuple[List[int], List[int]]:
    """From the offsets as ints: (output offsets, frames per window)."""
    cu_y, sizes = [0], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        full, rest = divmod(b - a, ratio)
        sizes += [ratio] * full
        if rest:
            sizes.append(rest)
        cu_y.append(cu_y[-1] + full + (rest > 0))
    return cu_y, sizes


def _device_windows(cu_seqlens: Tensor, ratio: int, total_y: int) -> Tuple[Tensor, Tensor]:
    """(int32 output offsets, int64 frames per window ``[total_y]``) by tensor ops on the offsets' device
    (``total_y`` < 0: read from the offsets, one host read)."""
    cu_y = pooled_cu_seqlens(cu_seqlens, ratio)
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    sequence = torch.repeat_interleave(cu_y.diff(), output_size=total_y)  # each window's sequence
    start = torch.arange(total_y, device=cu_seqlens.device).sub_(cu_y[sequence]).mul_(ratio)  # first frame in it
    return cu_y, cu_seqlens.diff()[sequence].sub(start).clamp_(max=ratio)


def _windows(cu_seqlens: Tensor, ratio: int, total_y: int) -> Tuple[Tensor, Tensor]:
    """(int32 output offsets, int64 frames per window) by the route for these offsets."""
    if _utils.offsets_on_host(cu_seqlens):
        cu_y, sizes = _host_windows(cu_seqlens.tolist(), ratio)
        return (torch.tensor(cu_y, dtype=torch.int32, device=cu_seqlens.device),
                torch.tensor(sizes, dtype=torch.int64, device=cu_seqlens.device))
    return _device_windows(cu_seqlens, ratio, total_y)


def segment_route(x: Tensor) -> bool:
    """Whether ``x`` is pooled by ``segment_reduce`` (at most :data:`SEGMENT_ELEMENTS` elements)."""
    return x.numel() <= SEGMENT_ELEMENTS


def _window_index(lengths: Tensor, total: int) -> Tensor:
    """int64 ``[total]``: the window (output row) of each frame."""
    return torch.arange(lengths.shape[0], device=lengths.device).repeat_interleave(lengths, output_size=total)


def forward_saving(x: Tensor, cu_seqlens: Tensor, ratio: int, mode: str, total_y: int = -1
                   ) -> Tuple[Tuple[Tensor, Tensor], Saved]:
    """:func:`forward`'s outputs and what :func:`backward` takes as ``saved``."""
    cu_y, lengths = _windows(cu_seqlens, ratio, total_y)
    if segment_route(x):
        if mode == "mean" and x.dtype in _LOW_PRECISION:
            y = torch.segment_reduce(x.float(), "mean", lengths=lengths, unsafe=True).to(x.dtype)
        else:
            y = torch.segment_reduce(x, mode, lengths=lengths, unsafe=True)
        return (y, cu_y), ((lengths, None), None)
    index = _window_index(lengths, x.shape[0])
    y = x.new_zeros(lengths.shape[0], x.shape[1]).scatter_reduce(
        0, index[:, None].expand(-1, x.shape[1]), x, "mean" if mode == "mean" else "amax", include_self=False)
    return (y, cu_y), ((lengths, index), None)


def forward(x: Tensor, cu_seqlens: Tensor, ratio: int, mode: str, total_y: int = -1) -> Tuple[Tensor, Tensor]:
    """x ``[total, D]`` -> (y ``[sum ceil(L_i/ratio), D]``, int32 cu_y).
    ``total_y``: the output row count when known on the host (-1: read it from the device)."""
    return forward_saving(x, cu_seqlens, ratio, mode, total_y)[0]


def backward(grad_y, x, y, cu_seqlens, cu_y, ratio: int, mode: str, *, saved: Optional[Saved] = None):
    """grad_x ``[total, D]`` in x's dtype. Mean: each frame gets its window's gradient / frames in the window.
    Max: the gradient goes to the frames equal to the window max, split evenly among ties (none for a NaN max).
    ``saved``: from :func:`forward_saving` (recomputed when None)."""
    if saved is None:
        lengths = _windows(cu_seqlens, ratio, y.shape[0])[1]
        index = None if segment_route(x) else _window_index(lengths, x.shape[0])
    else:
        lengths, index = saved[0]
    if index is None:
        if mode == "mean":
            return torch.ops.aten._segment_reduce_backward(grad_y, y, x, "mean", lengths=lengths)
        # each frame's share of its window's gradient: 1 / ties on the maxima (and on NaN frames), 0 elsewhere. The unit
        # cotangent keeps the kernel's quirk out (it splits only positive gradients among ties: torch 2.13)
        share = torch.ops.aten._segment_reduce_backward(torch.ones_like(y), y, x, "max", lengths=lengths)
        return share.masked_fill_(x.isnan(), 0).mul_(grad_y.repeat_interleave(lengths, 0, output_size=x.shape[0]))
    if mode == "mean":
        return (grad_y / lengths[:, None].to(grad_y.dtype))[index]
    hit = (x == y[index]).to(grad_y.dtype)
    ties = torch.zeros_like(y, dtype=grad_y.dtype).index_add_(0, index, hit).clamp_(min=1)
    return hit * (grad_y / ties)[index]

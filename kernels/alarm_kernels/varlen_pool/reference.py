"""Plain-PyTorch varlen pooling: the numerics oracle (run it in float64) and the CPU default.

The pooling itself is one ``scatter_reduce`` over the frames' window index (mean or amax). The index and the output
offsets come from the offsets by one of two routes (:func:`alarm_kernels._utils.offsets_on_host`): on the CPU the
offsets are read and the index is built in Python (a few integer loops, cheaper than tensor ops at small sizes); on a
GPU tensor ops derive them on the device without reading anything back: a frame starts a window when its position
in its sequence is a multiple of ``ratio``, and the running count of window starts numbers the windows (read at
the sequence starts, it gives the output offsets). The eager autograd path keeps the index for the backward
(:func:`forward_saving`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _utils

# the window index [total] (int64) and, from the host route, the frames per window (None from the device route)
Saved = Tuple[Tensor, Optional[List[int]]]


def pooled_cu_seqlens(cu_seqlens: Tensor, ratio: int) -> Tensor:
    """Offsets of the pooled output: each length L becomes ceil(L / ratio) (tensor ops, no host read)."""
    # ceil(L / ratio) = (L - 1) // ratio + 1 (0 for L = 0): no int32 overflow whatever the ratio
    n_out = cu_seqlens.diff().sub_(1).div_(ratio, rounding_mode="floor").add_(1)
    return F.pad(torch.cumsum(n_out, 0, dtype=torch.int32), (1, 0))


def _host_windows(bounds: List[int], ratio: int) -> Tuple[List[int], List[int], List[int]]:
    """From the offsets as ints: (output offsets, each frame's window, frames per window)."""
    cu_y, index, sizes = [0], [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        full, rest = divmod(b - a, ratio)
        w = cu_y[-1]
        for j in range(w, w + full):
            index += [j] * ratio
        sizes += [ratio] * full
        if rest:
            index += [w + full] * rest
            sizes.append(rest)
        cu_y.append(w + full + (rest > 0))
    return cu_y, index, sizes


def _device_windows(cu_seqlens: Tensor, ratio: int, total: int) -> Tuple[Tensor, Tensor]:
    """(int32 output offsets, int64 window index ``[total]``) by tensor ops on the offsets' device."""
    starts = cu_seqlens[:-1].repeat_interleave(cu_seqlens.diff(), output_size=total)
    position = torch.arange(total, device=cu_seqlens.device).sub_(starts)
    so_far = torch.cumsum(position.remainder_(ratio) == 0, 0)  # windows started at or before each frame
    return F.pad(so_far, (1, 0))[cu_seqlens].to(torch.int32), so_far.sub_(1)


def _windows(cu_seqlens: Tensor, ratio: int, total: int) -> Tuple[Tensor, Saved]:
    """(int32 output offsets, (window index, frames per window or None)) by the route for these offsets."""
    if _utils.offsets_on_host(cu_seqlens):
        cu_y, index, sizes = _host_windows(cu_seqlens.tolist(), ratio)
        return (torch.tensor(cu_y, dtype=torch.int32, device=cu_seqlens.device),
                (torch.tensor(index, dtype=torch.int64, device=cu_seqlens.device), sizes))
    cu_y, index = _device_windows(cu_seqlens, ratio, total)
    return cu_y, (index, None)


def window_index(cu_seqlens: Tensor, ratio: int, total: int) -> Tensor:
    """int64 ``[total]``: the output row (pooling window) each input frame falls in."""
    return _windows(cu_seqlens, ratio, total)[1][0]


def forward_saving(x: Tensor, cu_seqlens: Tensor, ratio: int, mode: str, total_y: int = -1
                   ) -> Tuple[Tuple[Tensor, Tensor], Saved]:
    """:func:`forward`'s outputs and what :func:`backward` takes as ``saved``."""
    cu_y, saved = _windows(cu_seqlens, ratio, x.shape[0])
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    y = x.new_zeros(total_y, x.shape[1]).scatter_reduce(
        0, saved[0][:, None].expand(-1, x.shape[1]), x, "mean" if mode == "mean" else "amax", include_self=False)
    return (y, cu_y), saved


def forward(x: Tensor, cu_seqlens: Tensor, ratio: int, mode: str, total_y: int = -1) -> Tuple[Tensor, Tensor]:
    """x ``[total, D]`` -> (y ``[sum ceil(L_i/ratio), D]``, int32 cu_y).
    ``total_y``: the output row count when known on the host (-1: read it from the device)."""
    return forward_saving(x, cu_seqlens, ratio, mode, total_y)[0]


def backward(grad_y, x, y, cu_seqlens, cu_y, ratio: int, mode: str, *, saved: Optional[Saved] = None):
    """grad_x ``[total, D]``. Mean: each frame gets its window's gradient / frames in the window.
    Max: the gradient goes to the frames equal to the window max, split evenly among ties.
    ``saved``: from :func:`forward_saving` (recomputed when None)."""
    index, sizes = _windows(cu_seqlens, ratio, x.shape[0])[1] if saved is None else saved
    if mode == "mean":
        if sizes is not None and len(sizes) == y.shape[0]:
            counts = torch.tensor(sizes, dtype=grad_y.dtype, device=grad_y.device)
        else:
            counts = torch.bincount(index, minlength=y.shape[0]).to(grad_y.dtype)
        return (grad_y / counts[:, None])[index]
    hit = (x == y[index]).to(grad_y.dtype)
    ties = torch.zeros_like(y, dtype=grad_y.dtype).index_add_(0, index, hit)
    return hit * (grad_y / ties)[index]

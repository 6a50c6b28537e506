"""Plain-PyTorch varlen pooling: the numerics oracle (run it in float64) and the CPU default."""
from __future__ import annotations

import torch

from ..varlen import cu_seqlens_to_seqlens


def pooled_cu_seqlens(cu_seqlens: torch.Tensor, ratio: int) -> torch.Tensor:
    """Offsets of the pooled output: each length L becomes ceil(L / ratio)."""
    lengths = cu_seqlens_to_seqlens(cu_seqlens)
    out = torch.zeros_like(cu_seqlens)
    out[1:] = torch.cumsum((lengths + ratio - 1) // ratio, 0).to(cu_seqlens.dtype)
    return out


def window_index(cu_seqlens: torch.Tensor, ratio: int, total: int) -> torch.Tensor:
    """int64 ``[total]``: the output row (pooling window) each input frame falls in."""
    lengths = cu_seqlens_to_seqlens(cu_seqlens)
    seq_of_frame = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=cu_seqlens.device), lengths, output_size=total
    )
    pos_in_seq = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[seq_of_frame]
    return pooled_cu_seqlens(cu_seqlens, ratio)[:-1].long()[seq_of_frame] + pos_in_seq // ratio


def forward(x: torch.Tensor, cu_seqlens: torch.Tensor, ratio: int, mode: str, total_y: int = -1):
    """x ``[total, D]`` -> (y ``[sum ceil(L_i/ratio), D]``, int32 cu_y). Differentiable by autograd.
    ``total_y``: the output row count when known on the host (-1: read it from the device)."""
    cu_y = pooled_cu_seqlens(cu_seqlens, ratio)
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    index = window_index(cu_seqlens, ratio, x.shape[0])[:, None].expand(-1, x.shape[1])
    y = x.new_zeros(total_y, x.shape[1])
    if mode == "mean":
        y = y.scatter_reduce(0, index, x, reduce="mean", include_self=False)
    else:
        y = y.scatter_reduce(0, index, x, reduce="amax", include_self=False)
    return y, cu_y


def backward(grad_y, x, y, cu_seqlens, cu_y, ratio: int, mode: str):
    """grad_x ``[total, D]``. Mean: each frame gets its window's gradient / frames in the window.
    Max: the gradient goes to the frames equal to the window max, split evenly among ties."""
    index = window_index(cu_seqlens, ratio, x.shape[0])
    if mode == "mean":
        counts = torch.bincount(index, minlength=y.shape[0]).to(grad_y.dtype)
        return grad_y[index] / counts[index, None]
    hit = (x == y[index]).to(grad_y.dtype)
    ties = torch.zeros_like(y, dtype=grad_y.dtype).index_add_(0, index, hit)
    return hit * grad_y[index] / ties[index]

"""The two batch layouts the model's modules run on; every adapter and fusion has one ``forward`` that takes
either and returns the same kind.

- :class:`Packed`: sequences laid end to end (varlen), the layout of the ``alarm_kernels`` ops.
- :class:`Padded`: sequences stacked into one ``[B, T, ...]`` batch with zeros past each length, the layout
  of the published code (``nn.Conv1d``, SDPA with masks).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Union

from torch import Tensor

__all__ = ["Packed", "Padded", "LAYOUTS"]

LAYOUTS = ("packed", "padded")


class Packed(NamedTuple):
    """A packed batch of B sequences.

    data: ``[total, ...]`` (or a list of such tensors sharing the offsets, e.g. an adapter's selected encoder
    layers). cu_seqlens: int32 ``[B+1]`` offsets into ``data``'s first axis. lengths: the B sequence lengths
    as host ints (checked against ``cu_seqlens`` once per batch by whoever made them), or None: then each op
    reads its sizes from ``cu_seqlens`` on the device."""
    data: Union[Tensor, List[Tensor]]
    cu_seqlens: Tensor
    lengths: Optional[List[int]] = None


class Padded(NamedTuple):
    """A padded batch of B sequences.

    data: ``[B, T, ...]`` with zeros past each length (or a list of such tensors, e.g. an adapter's selected
    encoder layers). lengths: int64 (or int32) ``[B]`` tensor of valid frames per sequence."""
    data: Union[Tensor, List[Tensor]]
    lengths: Tensor

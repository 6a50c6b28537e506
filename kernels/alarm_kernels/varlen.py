"""The packed (varlen) convention and its helpers.

A batch of N sequences is one packed tensor ``[total, ...]`` plus ``cu_seqlens`` (int32, ``[N+1]``,
``cu_seqlens[0] == 0``, non-decreasing, ``cu_seqlens[-1] == total``), on the same device as the data.
Zero-length and one-token sequences are legal, and so is ``total < N``. Malformed metadata raises a
``ValueError`` naming the argument; nothing is ever inferred from position ids.

:class:`PaddedLayout` is the one home of the packed <-> zero-padded correspondence (``pad_packed`` / ``unpad``, the
reference backends' padded calls and the benchmarks' plain-PyTorch baselines use it).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from . import _utils

INT32_MAX = 2**31 - 1

__all__ = [
    "PaddedLayout",
    "validate_cu_seqlens",
    "seqlens_to_cu_seqlens",
    "cu_seqlens_to_seqlens",
    "pack",
    "unpack",
    "pad_packed",
    "unpad",
    "max_seqlen",
]


def validate_cu_seqlens(
    cu_seqlens: torch.Tensor,
    total: int | None = None,
    *,
    name: str = "cu_seqlens",
    device: torch.device | None = None,
    check_values: bool = True,
) -> list | None:
    """Raise ``ValueError`` (mentioning ``name``) unless ``cu_seqlens`` follows the varlen convention.

    Args:
        cu_seqlens: int32 tensor ``[N+1]``.
        total: the packed tensor's first dimension; ``cu_seqlens[-1]`` must equal it.
        device: the data's device; ``cu_seqlens`` must live there.
        check_values: also check the values (0 first, non-decreasing, last == total). This reads the
            tensor on the host (one device sync on GPU); pass False on hot paths whose metadata was
            already validated.
    Returns:
        The offsets as a Python list when the values were checked (callers reuse it instead of a second
        device read), else None.
    """
    if not isinstance(cu_seqlens, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"{name} must be a 1-D tensor [N+1] with N >= 0, got shape {tuple(cu_seqlens.shape)}")
    if device is not None and cu_seqlens.device != (device if isinstance(device, torch.device)
                                                    else torch.device(device)):
        raise ValueError(f"{name} is on {cu_seqlens.device} but the data is on {device}")
    if not check_values or torch.compiler.is_compiling():
        return None
    values = cu_seqlens.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {values[0]}")
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            raise ValueError(f"{name} must be non-decreasing; {name}[{i}]={values[i]} < {name}[{i-1}]={values[i-1]}")
    if total is not None and values[-1] != total:
        raise ValueError(f"{name}[-1]={values[-1]} must equal the packed length {total}")
    return values


def check_host_int(value, name: str, minimum: int = 0) -> int:
    """``value`` as an int (a host-side size passed by the caller); ValueError naming ``name`` unless it is
    an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} (a host-side size), got {value!r}")
    return value


def seqlens_to_cu_seqlens(seqlens: Sequence[int] | torch.Tensor, device=None) -> torch.Tensor:
    """Lengths ``[N]`` -> int32 offsets ``[N+1]`` starting at 0.

    Raises ValueError for negative lengths and for a total above ``2**31 - 1`` (int32 offsets would wrap).
    One host read of the lengths' minimum and sum (a device sync when they live on a GPU).
    """
    lengths = torch.as_tensor(seqlens, dtype=torch.int64, device=device)
    if lengths.dim() != 1:
        raise ValueError(f"seqlens must be 1-D, got shape {tuple(lengths.shape)}")
    if lengths.numel():
        smallest, total = torch.stack([lengths.min(), lengths.sum()]).tolist()
        if smallest < 0:
            raise ValueError(f"seqlens must be non-negative, got {smallest}")
        if total > INT32_MAX:
            raise ValueError(f"seqlens sum to {total}, more than int32 offsets can hold ({INT32_MAX}); "
                             "split the batch")
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = torch.cumsum(lengths, 0).to(torch.int32)
    return cu


def cu_seqlens_to_seqlens(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """int32 offsets ``[N+1]`` -> int64 lengths ``[N]``."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)


def max_seqlen(cu_seqlens: torch.Tensor) -> int:
    """Longest sequence length as a Python int (one host sync on GPU); 0 for N = 0."""
    if cu_seqlens.numel() <= 1:
        return 0
    return int(cu_seqlens_to_seqlens(cu_seqlens).max().item())


def pack(sequences: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """List of ``[L_i, ...]`` tensors -> (packed ``[sum L_i, ...]``, int32 ``cu_seqlens``)."""
    if len(sequences) == 0:
        raise ValueError("pack needs at least one sequence to know the feature shape")
    packed = torch.cat(list(sequences), 0)
    cu = seqlens_to_cu_seqlens([s.shape[0] for s in sequences], device=packed.device)
    return packed, cu


def unpack(packed: torch.Tensor, cu_seqlens: torch.Tensor) -> List[torch.Tensor]:
    """Inverse of :func:`pack`: views ``[L_i, ...]`` of ``packed``."""
    validate_cu_seqlens(cu_seqlens, packed.shape[0], device=packed.device)
    bounds = cu_seqlens.tolist()
    return [packed[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def pad_packed(packed: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int | None = None, value: float = 0.0):
    """Packed ``[total, ...]`` -> (padded ``[N, max_len, ...]``, bool mask ``[N, max_len]`` True on valid).
    ``max_len`` (default: the longest sequence) must be at least the longest sequence (ValueError)."""
    bounds = validate_cu_seqlens(cu_seqlens, packed.shape[0], device=packed.device)
    if bounds is None:  # while compiling
        longest = max_seqlen(cu_seqlens)
    else:
        longest = max((b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)), default=0)
    if max_len is not None and max_len < longest:
        raise ValueError(f"max_len={max_len} is below the longest sequence ({longest})")
    layout = PaddedLayout.of(cu_seqlens, packed.shape[0], longest if max_len is None else max_len)
    return layout.pad(packed, value), layout.mask()


def unpad(padded: torch.Tensor, lengths: torch.Tensor | Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Padded ``[N, T, ...]`` + lengths ``[N]`` -> (packed ``[sum lengths, ...]``, int32 ``cu_seqlens``)."""
    lengths = torch.as_tensor(lengths, device=padded.device, dtype=torch.int64)
    if lengths.numel() != padded.shape[0]:
        raise ValueError(f"lengths has {lengths.numel()} entries but padded has batch {padded.shape[0]}")
    if lengths.numel() and (int(lengths.max()) > padded.shape[1] or int(lengths.min()) < 0):
        raise ValueError(f"lengths must lie in [0, {padded.shape[1]}]")
    cu_seqlens = seqlens_to_cu_seqlens(lengths)
    total = int(cu_seqlens[-1])
    return PaddedLayout.of(cu_seqlens, total, padded.shape[1]).unpad(padded), cu_seqlens


class PaddedLayout:
    """Where the rows of a packed ``[total, ...]`` tensor sit in a zero-padded ``[n, max_len, ...]`` batch: packed row
    ``r`` is row ``pos[r]`` of sequence ``seq[r]``, or, when the layout covers only some sequences (``rows`` given),
    packed row ``rows[r]`` is.

    Built once per batch (the index tensors cost a few small host operations or tensor ops); padding is then one
    indexed write into zeros and unpadding one gather, on any device, with no host read. Two routes build it
    (:func:`alarm_kernels._utils.offsets_on_host` picks one in :meth:`of`): :meth:`from_lengths` from host ints (CPU
    offsets: a few integer loops cost less than a dozen small tensor ops) and :meth:`from_cu_seqlens` by tensor ops
    on the offsets' device (GPU: nothing read back); both give the same index tensors.

    Attributes:
        n: sequences (the padded batch size).
        max_len: padded rows per sequence (at least the longest sequence).
        total: packed rows covered (``sum`` of the lengths).
        seq, pos: int64 ``[total]``: each covered packed row's sequence and position in it.
        rows: int64 ``[total]``: the packed rows covered, in order, when the layout covers only some sequences of a
            larger packed tensor (:meth:`from_lengths` with ``starts``); None when it covers every packed row in order.
    """

    __slots__ = ("n", "max_len", "total", "seq", "pos", "rows")

    def __init__(self, seq: torch.Tensor, pos: torch.Tensor, n: int, max_len: int,
                 rows: Optional[torch.Tensor] = None):
        self.seq, self.pos, self.rows = seq, pos, rows
        self.n, self.max_len, self.total = n, max_len, seq.shape[0]

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], device, max_len: int = -1,
                     starts: Optional[Sequence[int]] = None, total: int = -1) -> "PaddedLayout":
        """Host route: sequences of ``lengths`` (ints), padded to ``max_len`` rows (-1: the longest). ``starts`` and
        ``total``: their first rows in a packed tensor of ``total`` rows, when they may be only some of its
        sequences (default: they are all of it, in order)."""
        longest = max(lengths, default=0)
        if max_len < 0:
            max_len = longest
        elif max_len < longest:
            raise ValueError(f"max_len={max_len} is below the longest sequence ({longest})")
        seq: List[int] = []
        pos: List[int] = []
        for i, length in enumerate(lengths):
            seq += [i] * length
            pos += range(length)
        if starts is not None:
            end = 0
            for start, length in zip(starts, lengths, strict=True):
                if start != end:
                    break
                end += length
            else:
                if end == total:
                    starts = None  # every row of the packed tensor, in order
        if starts is None:
            seq_t, pos_t = torch.tensor([seq, pos], dtype=torch.int64, device=device).unbind(0)
            return cls(seq_t, pos_t, len(lengths), max_len)
        rows = [start + p for start, length in zip(starts, lengths, strict=True) for p in range(length)]
        seq_t, pos_t, rows_t = torch.tensor([seq, pos, rows], dtype=torch.int64, device=device).unbind(0)
        return cls(seq_t, pos_t, len(lengths), max_len, rows_t)

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, total: int, max_len: int) -> "PaddedLayout":
        """Device route: the layout of the offsets ``cu_seqlens`` (int32 ``[N+1]``) by tensor ops on their device,
        nothing read back; ``total`` (``cu_seqlens[-1]``) and ``max_len`` (at least the longest sequence) are the
        caller's host ints (unchecked: a wrong one gives a wrong layout)."""
        starts = cu_seqlens[:-1].long()
        seq = torch.repeat_interleave(cu_seqlens.diff().long(), output_size=total)
        pos = torch.arange(total, device=cu_seqlens.device).sub_(starts[seq])
        return cls(seq, pos, cu_seqlens.shape[0] - 1, max_len)

    @classmethod
    def of(cls, cu_seqlens: torch.Tensor, total: int, max_len: int = -1) -> "PaddedLayout":
        """The layout of ``cu_seqlens`` by the route :func:`alarm_kernels._utils.offsets_on_host` picks: the offsets
        read on the host (CPU) or tensor ops on their device (``max_len`` < 0 is then read: one host read)."""
        if _utils.offsets_on_host(cu_seqlens):
            bounds = cu_seqlens.tolist()
            return cls.from_lengths([b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)], cu_seqlens.device,
                                    max_len)
        if max_len < 0:
            max_len = max_seqlen(cu_seqlens)
        return cls.from_cu_seqlens(cu_seqlens, total, max_len)

    def pad(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """Packed ``x [total, ...]`` (any strides; the full packed tensor when ``rows`` is set) -> fresh
        ``[n, max_len, ...]``, ``value`` past each sequence's end."""
        shape = (self.n, self.max_len) + tuple(x.shape[1:])
        padded = x.new_zeros(shape) if value == 0 else x.new_full(shape, value)
        padded[self.seq, self.pos] = x if self.rows is None else x.index_select(0, self.rows)
        return padded

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """The covered rows of ``padded [n, max_len, ...]`` (any strides) as a fresh packed ``[total, ...]``."""
        return padded[self.seq, self.pos]

    def unpad_into(self, packed: torch.Tensor, padded: torch.Tensor) -> None:
        """Write the covered rows of ``padded [n, max_len, ...]`` into their rows of ``packed`` (in place)."""
        if self.rows is None:
            packed.copy_(padded[self.seq, self.pos])
        else:
            packed.index_copy_(0, self.rows, padded[self.seq, self.pos])

    def mask(self) -> torch.Tensor:
        """bool ``[n, max_len]``: True on the rows that hold a packed row."""
        valid = torch.zeros(self.n, self.max_len, dtype=torch.bool, device=self.seq.device)
        valid[self.seq, self.pos] = True
        return valid

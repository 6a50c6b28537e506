"""The packed (varlen) convention and its helpers.

A batch of N sequences is one packed tensor ``[total, ...]`` plus ``cu_seqlens`` (int32, ``[N+1]``,
``cu_seqlens[0] == 0``, non-decreasing, ``cu_seqlens[-1] == total``), on the same device as the data.
Zero-length and one-token sequences are legal, and so is ``total < N``. Malformed metadata raises a
``ValueError`` naming the argument; nothing is ever inferred from position ids.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

INT32_MAX = 2**31 - 1

__all__ = [
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
    """Packed ``[total, ...]`` -> (padded ``[N, max_len, ...]``, bool mask ``[N, max_len]`` True on valid)."""
    validate_cu_seqlens(cu_seqlens, packed.shape[0], device=packed.device)
    lengths = cu_seqlens_to_seqlens(cu_seqlens)
    n = lengths.numel()
    if max_len is None:
        max_len = int(lengths.max().item()) if n else 0
    positions = torch.arange(max_len, device=packed.device)
    mask = positions[None, :] < lengths[:, None]
    padded = packed.new_full((n, max_len) + tuple(packed.shape[1:]), value)
    padded[mask] = packed
    return padded, mask


def unpad(padded: torch.Tensor, lengths: torch.Tensor | Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Padded ``[N, T, ...]`` + lengths ``[N]`` -> (packed ``[sum lengths, ...]``, int32 ``cu_seqlens``)."""
    lengths = torch.as_tensor(lengths, device=padded.device, dtype=torch.int64)
    if lengths.numel() != padded.shape[0]:
        raise ValueError(f"lengths has {lengths.numel()} entries but padded has batch {padded.shape[0]}")
    if lengths.numel() and (int(lengths.max()) > padded.shape[1] or int(lengths.min()) < 0):
        raise ValueError(f"lengths must lie in [0, {padded.shape[1]}]")
    mask = torch.arange(padded.shape[1], device=padded.device)[None, :] < lengths[:, None]
    return padded[mask], seqlens_to_cu_seqlens(lengths)

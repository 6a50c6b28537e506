"""``ModelBatch``: one micro-batch in the form the model consumes, independent of where it came from.

The trainer's collator (``alarm.train.data``) builds it from pre-tokenised ids and decoded audio or cached
frozen features; ``ALARMModel.forward`` builds it from strings. Exactly one audio source is set:
- ``waves`` + ``rates``: B float32 1-D CPU waveforms and their sample rates (Hz);
- ``prepared``: the encoders' front-end outputs for B clips, ``{encoder name: PreparedAudio}``
  (``ALARMModel.audio_front_ends()``, computed where the batch was collated: in DataLoader workers); it may come
  with ``waves`` + ``rates`` and hold only some encoders' inputs (``ALARMModel.worker_front_ends`` on a GPU: the
  front ends that are not device kernels), the model computing the others' from the waveforms;
- ``features``: cached frozen *encoder* outputs, ``{encoder name: (k x [total_e, D_e], int32 cu [B+1])}``;
- ``streams``: cached frozen *adapter* outputs (stage B), ``{encoder name: ([total_e, H], int32 cu [B+1])}``.

``lengths`` (optional, host-side): ``{encoder name: B ints}``, the per-clip row counts of ``features`` or
``streams`` (the lengths the offsets ``cu`` were built from). With them the packed layout knows every size on the
host and reads nothing back from the device; without them it reads all offsets once per batch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .splice import TextBatch

if TYPE_CHECKING:
    from .encoders import PreparedAudio

__all__ = ["ModelBatch", "source_lengths"]

Features = Dict[str, Tuple[List[Tensor], Tensor]]
Streams = Dict[str, Tuple[Tensor, Tensor]]


@dataclass
class ModelBatch:
    """Text ids (``TextBatch``) plus one audio source; ``n_examples`` is the host-side batch size B."""
    text: TextBatch
    waves: Optional[List[Tensor]] = None
    rates: Optional[List[int]] = None
    features: Optional[Features] = None
    streams: Optional[Streams] = None
    lengths: Optional[Dict[str, List[int]]] = None
    prepared: Optional[Dict[str, "PreparedAudio"]] = None

    def __post_init__(self):
        given = [name for name in ("waves", "prepared", "features", "streams") if getattr(self, name) is not None]
        if len(given) != 1 and given != ["waves", "prepared"]:
            raise ValueError("a ModelBatch needs exactly one audio source (waves, prepared, features or streams; "
                             f"or waves with some encoders' prepared inputs), got {given}")
        if self.waves is not None and (self.rates is None or len(self.rates) != len(self.waves)):
            raise ValueError("waves need one sample rate per clip")
        if self.lengths is not None and (self.waves is not None or self.prepared is not None):
            raise ValueError("lengths describe cached features or streams, not waves or prepared inputs")

    @property
    def n_examples(self) -> int:
        return self.text.cu_suffix.numel() - 1

    def _map(self, fn) -> "ModelBatch":
        text = replace(self.text, **{name: fn(getattr(self.text, name))
                                     for name in ("prefix", "suffix", "cu_suffix", "target", "cu_target")})
        feats = None if self.features is None else {
            k: ([fn(x) for x in layers], fn(cu)) for k, (layers, cu) in self.features.items()}
        streams = None if self.streams is None else {k: (fn(x), fn(cu)) for k, (x, cu) in self.streams.items()}
        prepared = None if self.prepared is None else {k: p.map(fn) for k, p in self.prepared.items()}
        # waves stay on the host: the model moves them to each encoder's front end
        return replace(self, text=text, features=feats, streams=streams, prepared=prepared)

    def to(self, device, non_blocking: bool = False) -> "ModelBatch":
        """Move ids, prepared inputs and cached features to ``device`` (waveforms stay on the CPU)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "ModelBatch":
        """Pinned host copies (called by ``DataLoader(pin_memory=True)``)."""
        if not torch.cuda.is_available():
            return self
        return self._map(lambda t: t.pin_memory())


def source_lengths(source: Dict[str, tuple], given: Optional[Dict[str, List[int]]] = None) -> Dict[str, List[int]]:
    """Per-clip rows of a packed audio source ``{name: (x or k x [total, D], int32 cu [B+1])}`` as host ints.

    ``given`` (e.g. ``ModelBatch.lengths``): checked on the host against each source's rows and B; the offsets
    are not read (they must be the offsets of these lengths). Otherwise every source's offsets are read back in
    one device transfer and validated (0 first, non-decreasing, last == rows): once per batch, so that the
    ops downstream can skip their own checks. ValueError naming the source on a mismatch.
    """
    rows = {name: (x[0] if isinstance(x, (list, tuple)) else x).shape[0] for name, (x, _) in source.items()}
    if given is not None:
        for name, (_, cu) in source.items():
            n = given.get(name)
            if (n is None or len(n) != cu.numel() - 1 or sum(n) != rows[name]
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in n)):
                raise ValueError(f"lengths[{name!r}] must be {cu.numel() - 1} non-negative ints summing to "
                                 f"{rows[name]} (the rows of that source), got {n!r}")
        return {name: list(given[name]) for name in source}
    cus = [cu for _, cu in source.values()]
    flat = torch.cat(cus).tolist()  # the batch's one device read
    out, start = {}, 0
    for name, cu in zip(source, cus, strict=True):
        offsets = flat[start:start + cu.numel()]
        start += cu.numel()
        lengths = [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        if cu.dtype != torch.int32 or offsets[0] != 0 or min(lengths, default=0) < 0 or offsets[-1] != rows[name]:
            raise ValueError(f"the offsets of {name!r} must be int32, start at 0, never decrease and end at its "
                             f"{rows[name]} rows, got {cu.dtype} {offsets}")
        out[name] = lengths
    return out

"""``ModelBatch``: one micro-batch in the form the model consumes, independent of where it came from.

The trainer's collator (``alarm.train.data``) builds it from pre-tokenised ids and decoded audio or cached
frozen features; ``ALARMModel.forward`` builds it from strings. Exactly one audio source is set:
- ``waves`` + ``rates``: B float32 1-D CPU waveforms and their sample rates (Hz);
- ``features``: cached frozen *encoder* outputs, ``{encoder name: (k x [total_e, D_e], int32 cu [B+1])}``;
- ``streams``: cached frozen *adapter* outputs (stage B), ``{encoder name: ([total_e, H], int32 cu [B+1])}``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .splice import TextBatch

__all__ = ["ModelBatch"]

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

    def __post_init__(self):
        given = [name for name in ("waves", "features", "streams") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a ModelBatch needs exactly one audio source (waves, features or streams), got {given}")
        if self.waves is not None and (self.rates is None or len(self.rates) != len(self.waves)):
            raise ValueError("waves need one sample rate per clip")

    @property
    def n_examples(self) -> int:
        return self.text.cu_suffix.numel() - 1

    def _map(self, fn) -> "ModelBatch":
        text = TextBatch(*(fn(t) for t in (self.text.prefix, self.text.suffix, self.text.cu_suffix, self.text.target,
                                           self.text.cu_target)), self.text.header_len)
        feats = None if self.features is None else {
            k: ([fn(x) for x in layers], fn(cu)) for k, (layers, cu) in self.features.items()}
        streams = None if self.streams is None else {k: (fn(x), fn(cu)) for k, (x, cu) in self.streams.items()}
        return replace(self, text=text, features=feats, streams=streams)  # waves stay on the host (feature extraction)

    def to(self, device, non_blocking: bool = False) -> "ModelBatch":
        """Move ids and cached features to ``device`` (waveforms stay on the CPU for feature extraction)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "ModelBatch":
        """Pinned host copies (called by ``DataLoader(pin_memory=True)``)."""
        if not torch.cuda.is_available():
            return self
        return self._map(lambda t: t.pin_memory())

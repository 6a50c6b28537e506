"""How frames are cut from each packed piece: the one description every front end and backend shares.

A piece of ``n`` samples yields ``count(n)`` frames; frame ``k`` covers the ``win`` samples starting at piece
position ``first + k * shift`` (``first`` may be negative). Positions outside ``[0, n)`` take their values by the
edge rule:

- ``"snip"`` (Kaldi ``snip_edges=True``): only frames inside the piece, after ``pad`` zero samples were added on
  each side (w2v-BERT's 160); ``count = 1 + (n + 2 pad - win) // shift`` (0 when shorter than a window).
- ``"reflect"`` (Kaldi ``snip_edges=False``): ``count = (n + shift // 2) // shift``, ``first = -(win // 2 - shift
  // 2)``; outside positions mirror into the piece with the edge sample repeated (Kaldi's rule: ``p < 0 -> -p - 1``,
  ``p >= n -> 2 n - 1 - p``, repeated until inside).
- ``"center"`` (``torch.stft(center=True, pad_mode="reflect")`` on a zero-padded piece, Whisper): ``first = -win //
  2``; ``p < 0 -> -p`` (mirror without repeating the edge), the piece is zero beyond ``n`` up to ``row`` samples
  and mirrors again at ``row`` (``p >= row -> 2 (row - 1) - p``; ``row=None``: zeros forever). ``count`` is the
  number of frames that touch a sample of the piece, ``ceil((n + win // 2) / shift)``, capped at ``row //
  shift``: every later frame is all zeros, so the caller fills it with the value of an all-zero frame.

Each frame is then conditioned: the frame's mean removed (``remove_dc``), pre-emphasis ``y[j] = x[j] - c x[j-1]``
with ``y[0] = (1 - c) x[0]``, multiplied by the window, zero padded to ``n_fft`` for the FFT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

EDGES = ("snip", "reflect", "center")


@dataclass(frozen=True)
class Framing:
    """Frame geometry and conditioning (see the module docstring)."""

    win: int
    shift: int
    n_fft: int
    edges: str
    window: str
    pad: int = 0
    row: Optional[int] = None
    remove_dc: bool = False
    preemphasis: float = 0.0
    blackman_coeff: float = 0.42

    @property
    def first(self) -> int:
        """Piece position of frame 0's first sample."""
        if self.edges == "snip":
            return -self.pad
        if self.edges == "reflect":
            return -(self.win // 2 - self.shift // 2)
        return -(self.win // 2)

    def count(self, n: int) -> int:
        """Frames of a piece of ``n`` samples."""
        if self.edges == "snip":
            total = n + 2 * self.pad
            return 0 if total < self.win else 1 + (total - self.win) // self.shift
        if self.edges == "reflect":
            return (n + self.shift // 2) // self.shift if n > 0 else 0
        touching = -(-(n + self.win // 2) // self.shift) if n > 0 else 0
        return touching if self.row is None else min(touching, self.row // self.shift)

    def counts(self, lengths: Sequence[int]) -> List[int]:
        """Frames of each piece."""
        return [self.count(n) for n in lengths]


def offsets_of(counts: Sequence[int]) -> List[int]:
    """``[0, c0, c0 + c1, ...]``: host offsets of the packed frames."""
    out = [0]
    for c in counts:
        out.append(out[-1] + c)
    return out


@dataclass(frozen=True)
class MelSpec:
    """What every frame goes through after framing: an FFT of ``n_fft`` points in ``fft_dtype``, optionally
    rounded to complex64 (``round_spectrum``: SeamlessM4TFeatureExtractor stores its float64 FFT that way), the
    power (or with ``use_power=False`` the magnitude) spectrum, times the float64 filterbank ``bank`` ``[n_fft // 2
    + 1, n_mels]`` scaled by ``scale``, then with ``log`` ("ln" / "log10") the log of ``max(energy, floor)``.

    ``bank`` is one of the cached tables of :mod:`.filters` (each backend casts it to the dtype it multiplies in)."""

    bank: torch.Tensor
    floor: float
    log: Optional[str] = "ln"
    scale: float = 1.0
    use_power: bool = True
    fft_dtype: Optional[torch.dtype] = None
    round_spectrum: bool = False

    @property
    def n_mels(self) -> int:
        """Mel bands (the filterbank's columns)."""
        return self.bank.shape[1]

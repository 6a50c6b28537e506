"""Seeds as pure functions of their purpose, and seeded blocks that leave every other random generator alone."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np
import torch

__all__ = ["seeded", "derived_seed"]


def derived_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on ``keys`` (e.g. ``(run seed, epoch, rank)``), well mixed
    (``numpy.random.SeedSequence``): a stream seeded from it is the same in every run that asks for the same
    keys, and draws nothing from the global generators."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextmanager
def seeded(seed: int, device: Optional[torch.device] = None) -> Iterator[None]:
    """Run the block with the CPU generator, and ``device``'s generator when it is a CUDA device, seeded with
    ``seed``; restore both afterwards.

    ``torch.manual_seed`` would also reseed every CUDA device (lazily, even before CUDA starts), which
    ``fork_rng`` does not undo: a trainer's per-rank CUDA seed set before the block would be lost, and every
    rank would draw the same dropout masks.
    """
    device = torch.device(device) if device is not None else None
    cuda = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for d in cuda:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(seed)
        yield

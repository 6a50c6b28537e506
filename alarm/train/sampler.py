"""The packing sampler: which examples form each micro-batch, on which rank, in which order.

The plan of an epoch is a pure function of ``(seed, epoch, costs, budget, world_size)``:
1. shuffle the examples with a generator seeded by ``(seed, epoch)``;
2. fill packs greedily in that order: an example joins the current pack while the pack's cost stays within
   ``budget``, otherwise it starts the next one (an example is never split; one costlier than the budget
   gets a pack of its own);
3. while the number of packs is not a multiple of ``world_size``, split the pack with the most examples
   in two (nothing is dropped or repeated);
4. sort packs by cost and deal them in rounds of ``world_size``: round r gives rank i its i-th pack, so
   the packs of one round cost about the same on every rank; then shuffle the order of the rounds.
Every rank therefore runs the same number of micro-batches per epoch, and no rank waits for a much
longer one. The sampler's whole state is ``(epoch, cursor)``, cursor = rounds already consumed.
"""
from __future__ import annotations

from typing import Iterator, List, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["example_cost", "plan_epoch", "PackingSampler"]


def example_cost(n_tokens: int, attention_cost_tokens: int = 0) -> float:
    """Cost of an example of ``n_tokens`` LLM tokens: ``L`` (+ ``L^2 / attention_cost_tokens`` when > 0)."""
    return float(n_tokens) + (n_tokens * n_tokens / attention_cost_tokens if attention_cost_tokens > 0 else 0.0)


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch)])


def plan_epoch(costs: Sequence[float], budget: float, world_size: int, seed: int, epoch: int) -> List[List[List[int]]]:
    """Rounds of packs: ``plan[r][rank]`` is the list of example indices rank ``rank`` runs in round ``r``.

    Raises ValueError when there are fewer examples than ranks (some rank would get nothing).
    """
    n = len(costs)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if n < world_size:
        raise ValueError(f"{n} training examples cannot feed {world_size} ranks: every rank needs at least one")
    rng = _rng(seed, epoch)
    packs: List[List[int]] = []
    current: List[int] = []
    used = 0.0
    for i in rng.permutation(n).tolist():
        if current and used + costs[i] > budget:
            packs.append(current)
            current, used = [], 0.0
        current.append(i)
        used += costs[i]
    if current:
        packs.append(current)
    while len(packs) % world_size:
        big = max(range(len(packs)), key=lambda j: (len(packs[j]), -j))
        half = len(packs[big]) // 2
        packs[big:big + 1] = [packs[big][:half], packs[big][half:]]
    pack_cost = [sum(costs[i] for i in p) for p in packs]
    order = sorted(range(len(packs)), key=lambda j: (-pack_cost[j], j))
    rounds = [[packs[j] for j in order[r:r + world_size]] for r in range(0, len(order), world_size)]
    return [rounds[r] for r in rng.permutation(len(rounds)).tolist()]


class PackingSampler(Sampler[List[int]]):
    """Batch sampler for ``DataLoader(batch_sampler=...)``: yields this rank's packs (lists of example
    indices) of epoch ``epoch`` from round ``cursor`` on. The training loop advances ``cursor`` as it
    consumes micro-batches and saves ``state()``; ``load_state`` resumes exactly there."""

    def __init__(self, costs: Sequence[float], budget: float, rank: int, world_size: int, seed: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.costs, self.budget = list(costs), float(budget)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.cursor = 0, 0
        self._plan_epoch, self._plan = None, None

    def plan(self) -> List[List[List[int]]]:
        """The current epoch's rounds (cached)."""
        if self._plan_epoch != self.epoch:
            self._plan = plan_epoch(self.costs, self.budget, self.world_size, self.seed, self.epoch)
            self._plan_epoch = self.epoch
        return self._plan

    def rounds_per_epoch(self) -> int:
        return len(self.plan())

    def __len__(self) -> int:
        return self.rounds_per_epoch() - self.cursor

    def __iter__(self) -> Iterator[List[int]]:
        for rnd in self.plan()[self.cursor:]:
            yield rnd[self.rank]

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])

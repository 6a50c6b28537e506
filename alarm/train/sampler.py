"""The packing sampler: which examples form each micro-batch, on which rank, in which optimizer step.

The plan of an epoch is a pure function of ``(seed, epoch, costs, budget, world_size, accumulation)``:
1. shuffle the examples with a generator seeded by ``(seed, epoch)``;
2. fill packs greedily in that order: an example joins the current pack while the pack's cost stays within
   ``budget``, otherwise it starts the next one (an example is never split; one costlier than the budget
   gets a pack of its own);
3. while the number of packs is not a multiple of ``world_size``, split the pack with the most examples
   in two (nothing is dropped or repeated);
4. cut the packs, in shuffled order, into *steps* of ``world_size * accumulation`` packs (the last step may
   hold fewer, always a multiple of ``world_size``); inside a step, sort the packs by cost and deal them:
   micro-batch m of rank r is pack ``m * world_size + r``, so the packs that run side by side cost about
   the same on every rank.
Every rank therefore runs the same number of micro-batches, and which examples an optimizer step sees
depends only on ``world_size * accumulation``: 1 rank x 4 micro-batches and 4 ranks x 1 see the same step
(with the loss normalised by the step's global target-token count, the same gradient).
The sampler's whole state is ``(epoch, cursor)``, cursor = optimizer steps already consumed in the epoch.
"""
from __future__ import annotations

from typing import Iterator, List, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["example_cost", "plan_epoch", "PackingSampler"]


def example_cost(n_tokens: int, attention_cost_tokens: int = 0) -> float:
    """Cost of an example of ``n_tokens`` LLM tokens: ``L`` (+ ``L^2 / attention_cost_tokens`` when > 0)."""
    return float(n_tokens) + (n_tokens * n_tokens / attention_cost_tokens if attention_cost_tokens > 0 else 0.0)


def plan_epoch(costs: Sequence[float], budget: float, world_size: int, accumulation: int, seed: int, epoch: int
               ) -> List[List[List[int]]]:
    """Optimizer steps of an epoch: ``plan[s][m * world_size + r]`` is the list of example indices that
    rank ``r`` runs as micro-batch ``m`` of step ``s``.

    Raises ValueError when there are fewer examples than ranks (some rank would get nothing).
    """
    n = len(costs)
    if world_size < 1 or accumulation < 1:
        raise ValueError(f"world_size and accumulation must be >= 1, got {world_size} and {accumulation}")
    if n < world_size:
        raise ValueError(f"{n} training examples cannot feed {world_size} ranks: every rank needs at least one")
    rng = np.random.default_rng([int(seed), int(epoch)])
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
    per_step = world_size * accumulation
    steps = []
    for s in range(0, len(packs), per_step):
        group = packs[s:s + per_step]
        steps.append(sorted(group, key=lambda p: -sum(costs[i] for i in p)))
    return steps


class PackingSampler(Sampler[List[int]]):
    """Batch sampler for ``DataLoader(batch_sampler=...)``: yields this rank's packs (lists of example
    indices) of epoch ``epoch``, from step ``cursor`` on, micro-batch after micro-batch. The training loop
    asks ``micro_batches(step)`` how many packs make a step, advances ``cursor`` after each step and saves
    ``state()``; ``load_state`` resumes exactly there."""

    def __init__(self, costs: Sequence[float], budget: float, rank: int, world_size: int, accumulation: int,
                 seed: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.costs, self.budget = list(costs), float(budget)
        self.rank, self.world_size, self.accumulation, self.seed = rank, world_size, accumulation, seed
        self.epoch, self.cursor = 0, 0
        self._plan_epoch, self._plan = None, None

    def plan(self) -> List[List[List[int]]]:
        """The current epoch's steps (cached)."""
        if self._plan_epoch != self.epoch:
            self._plan = plan_epoch(self.costs, self.budget, self.world_size, self.accumulation, self.seed,
                                    self.epoch)
            self._plan_epoch = self.epoch
        return self._plan

    def steps_per_epoch(self) -> int:
        """Optimizer steps in the current epoch (pack counts, so step counts, vary a little by epoch)."""
        return len(self.plan())

    def total_steps(self, epochs: int) -> int:
        """Optimizer steps in epochs 0..epochs-1."""
        return sum(len(plan_epoch(self.costs, self.budget, self.world_size, self.accumulation, self.seed, e))
                   for e in range(epochs))

    def micro_batches(self, step: int) -> int:
        """Micro-batches (per rank) in step ``step`` of the current epoch."""
        return len(self.plan()[step]) // self.world_size

    def __len__(self) -> int:
        return sum(self.micro_batches(s) for s in range(self.cursor, self.steps_per_epoch()))

    def __iter__(self) -> Iterator[List[int]]:
        for step in self.plan()[self.cursor:]:
            yield from step[self.rank::self.world_size]

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])

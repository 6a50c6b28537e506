"""The packing sampler: nothing split or dropped, budgets kept, ranks balanced, steps independent of the
split into ranks x micro-batches, exact resumption from (epoch, cursor)."""
import numpy as np
import pytest

from alarm.train.sampler import PackingSampler, example_cost, plan_epoch


def _costs(n=97, seed=0):
    rng = np.random.default_rng(seed)
    return [float(c) for c in rng.integers(20, 400, size=n)] + [900.0]  # one example over the budget


@pytest.mark.parametrize("world,accum", [(1, 1), (1, 4), (2, 2), (3, 1), (4, 1), (8, 2)])
def test_plan_covers_every_example_once_within_budget(world, accum):
    costs, budget = _costs(), 800
    plan = plan_epoch(costs, budget, world, accum, seed=1, epoch=0)
    seen = [i for step in plan for pack in step for i in pack]
    assert sorted(seen) == list(range(len(costs)))  # never dropped, never repeated, never split
    for step in plan:
        assert len(step) % world == 0 and 0 < len(step) <= world * accum
        for pack in step:
            assert pack, "empty pack"
            assert len(pack) == 1 or sum(costs[i] for i in pack) <= budget
    samplers = [PackingSampler(costs, budget, r, world, accum, seed=1) for r in range(world)]
    counts = {len(list(s)) for s in samplers}
    assert len(counts) == 1  # every rank runs the same number of micro-batches


def test_a_step_holds_the_same_examples_however_it_is_split():
    costs = [40.0] * 64  # 2 examples per pack, 32 packs: divisible by every world size below
    flat = {}
    for world, accum in [(1, 4), (2, 2), (4, 1)]:
        plan = plan_epoch(costs, 80, world, accum, seed=3, epoch=2)
        flat[(world, accum)] = [sorted(i for pack in step for i in pack) for step in plan]
    assert flat[(1, 4)] == flat[(2, 2)] == flat[(4, 1)]


def test_plan_is_a_pure_function_of_seed_and_epoch():
    costs = _costs()
    a = plan_epoch(costs, 700, 2, 2, seed=5, epoch=1)
    assert a == plan_epoch(costs, 700, 2, 2, seed=5, epoch=1)
    assert a != plan_epoch(costs, 700, 2, 2, seed=5, epoch=2)
    assert a != plan_epoch(costs, 700, 2, 2, seed=6, epoch=1)


def test_side_by_side_packs_have_similar_cost():
    costs = _costs(400, seed=2)[:-1]
    plan = plan_epoch(costs, 1200, 4, 2, seed=0, epoch=0)
    spreads = []
    for step in plan[:-1]:
        for m in range(len(step) // 4):
            c = [sum(costs[i] for i in step[m * 4 + r]) for r in range(4)]
            spreads.append(max(c) - min(c))
    assert np.median(spreads) < 0.25 * 1200


def test_resume_from_cursor_yields_the_rest_of_the_epoch():
    costs = _costs()
    full = PackingSampler(costs, 600, rank=1, world_size=2, accumulation=2, seed=9)
    everything = list(full)
    resumed = PackingSampler(costs, 600, rank=1, world_size=2, accumulation=2, seed=9)
    resumed.load_state({"epoch": 0, "cursor": 3})
    skipped = sum(full.micro_batches(s) for s in range(3))
    assert list(resumed) == everything[skipped:]
    assert len(resumed) == len(everything) - skipped


def test_fewer_examples_than_ranks_is_refused():
    with pytest.raises(ValueError, match="cannot feed 4 ranks"):
        plan_epoch([10.0, 10.0], 100, 4, 1, seed=0, epoch=0)


def test_attention_cost_grows_quadratically():
    assert example_cost(100) == 100.0
    assert example_cost(100, attention_cost_tokens=50) == 100.0 + 200.0

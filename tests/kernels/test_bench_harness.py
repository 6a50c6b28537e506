"""The benchmark runner: side-by-side timing, derived metrics, failures reported not fatal, JSON out."""
import json
import statistics
import sys

import numpy as np
import pytest
import torch

from bench import ops as runner
from bench.harness import BenchCase, spread


def _case():
    x = torch.randn(256, 256)
    y = torch.empty_like(x)

    def broken():
        raise RuntimeError("needs a GPU")

    return BenchCase(op="copy", name="256x256 fp32", bytes_moved=2 * x.numel() * 4,
                     variants={"reference": lambda: y.copy_(x), "twice": lambda: (y.copy_(x), y.copy_(x)),
                               "broken": broken})


def test_run_cases_reports_metrics_and_errors():
    device = torch.device("cpu")
    rows = runner.run_cases([_case()], device, {"copy_GBps": 10.0, "matmul_TFLOPs": 1.0}, budget_s=0.02,
                            progress=False)
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["reference"]["speedup_vs_reference"] == 1.0
    assert by_variant["twice"]["ms"] > 0 and by_variant["twice"]["GBps"] > 0
    assert by_variant["twice"]["frac_copy_bw"] == by_variant["twice"]["GBps"] / 10.0
    assert "needs a GPU" in by_variant["broken"]["error"]
    table = runner.format_table(rows)
    assert "| copy | 256x256 fp32 | fwd | twice |" in table and "n/a: RuntimeError" in table


def test_spread_interpolates_linearly_between_ranks():
    """p10 of 1..11 is 2 exactly; of 1..10 it lies 0.9 of the way from the 1st to the 2nd value (1.9); equal to
    statistics.quantiles(method="inclusive") and numpy's default percentile on fresh random values."""
    assert spread(list(range(1, 12))) == {"median": 6.0, "p10": 2.0, "p90": 10.0, "min": 1.0, "max": 11.0}
    s = spread([float(v) for v in range(10, 0, -1)])  # order does not matter
    assert s["p10"] == pytest.approx(1.9) and s["p90"] == pytest.approx(9.1) and s["median"] == 5.5
    x = np.random.default_rng(7).lognormal(size=37).tolist()
    deciles = statistics.quantiles(x, n=10, method="inclusive")
    got = spread(x)
    assert got["p10"] == pytest.approx(deciles[0]) and got["p90"] == pytest.approx(deciles[-1])
    assert got["median"] == pytest.approx(statistics.median(x))
    quartile = spread(x, (20, 80))
    assert set(quartile) == {"median", "p20", "p80", "min", "max"}
    assert quartile["p20"] == pytest.approx(np.percentile(x, 20)) and quartile["p80"] == pytest.approx(deciles[7])
    assert spread([3.5]) == {"median": 3.5, "p10": 3.5, "p90": 3.5, "min": 3.5, "max": 3.5}
    with pytest.raises(ValueError, match="no values"):
        spread([])
    with pytest.raises(ValueError, match="percentiles"):
        spread([1.0, 2.0], (60, 90))


def test_time_fn_orders_quantiles():
    stats = runner.time_fn(lambda: torch.randn(64, 64) @ torch.randn(64, 64), torch.device("cpu"), budget_s=0.02)
    assert 0 < stats["p20_ms"] <= stats["ms"] <= stats["p80_ms"]


def test_main_writes_json_with_environment(tmp_path, monkeypatch):
    module = type(runner)("bench.cases._fake")
    module.cases = lambda device, quick: [_case()]
    monkeypatch.setitem(sys.modules, "bench.cases._fake", module)
    monkeypatch.setattr(runner, "discover_case_modules", lambda only=None: ["_fake"])
    out = tmp_path / "r.json"
    assert runner.main(["--quick", "--budget", "0.01", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["environment"]["torch"] == torch.__version__ and "git_sha" in data["environment"]
    assert data["ceilings"]["copy_GBps"] > 0
    assert {r["variant"] for r in data["rows"]} == {"reference", "twice", "broken"}


def test_conv_cases_each_time_their_own_layer():
    """Every varlen_conv1d case runs on its own layer's tensors (not the last layer's): the padded reference
    and the packed variants output the case's C_out channels."""
    import re

    from bench.cases.varlen_conv1d import cases

    built = [c for c in cases(torch.device("cpu"), quick=True) if c.direction == "fwd"]
    assert len(built) == 2
    for case in built:
        c_out = int(re.search(r"->(\d+) ", case.name).group(1))
        assert "triton" in case.variants, sorted(case.variants)
        for label in ("reference", "triton"):
            assert case.variants[label]().shape[-1] == c_out, (case.name, label)


def test_fwd_bwd_reuses_one_cotangent_and_clears_leaf_grads():
    from bench.harness import fwd_bwd

    x = torch.randn(5, 3, requires_grad=True)
    seen = []

    def fn():
        y = x * 2.0
        y.register_hook(lambda g: seen.append(g.clone()))
        return y

    step = fwd_bwd(fn, (x,))
    step()
    step()
    assert x.grad is None and len(seen) == 2 and torch.equal(seen[0], seen[1])


def test_reference_variants_of_every_memory_bound_case_run_on_cpu():
    import importlib

    for op in ("varlen_pool", "varlen_conv1d", "weighted_layer_sum", "multi_encoder_concat"):
        built = importlib.import_module(f"bench.cases.{op}").cases(torch.device("cpu"), quick=True)
        assert {c.direction for c in built} == {"fwd", "fwd+bwd"}, op
        for case in built:
            case.variants["reference"]()

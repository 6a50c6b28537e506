"""``python -m bench``: kernel rows to JSON and PNG, interpreter rows labelled and kept out of speedups, and
``--compare`` of two result files (smoke size: a fake case module, no end-to-end step)."""
import json
import sys
from pathlib import Path

import pytest
import torch

import bench.__main__ as suite
from bench import ops as runner
from bench.harness import BenchCase
from bench.plot import speedups_by_op


def _cases(device, quick):
    x = torch.randn(128, 128)
    y = torch.empty_like(x)
    return [BenchCase(op="copy", name="128x128 fp32", bytes_moved=2 * x.numel() * 4,
                      variants={"reference": lambda: y.copy_(x), "twice": lambda: (y.copy_(x), y.copy_(x)),
                                "triton": lambda: y.copy_(x)})]


@pytest.fixture
def fake_cases(monkeypatch):
    module = type(runner)("bench.cases._fake")
    module.cases = _cases
    monkeypatch.setitem(sys.modules, "bench.cases._fake", module)
    monkeypatch.setattr(runner, "discover_case_modules", lambda only=None: ["_fake"])


def test_suite_writes_json_and_png_and_labels_interpreter_rows(tmp_path, fake_cases, capsys):
    assert suite.main(["--quick", "--budget", "0.01", "--no-e2e", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["complete"] and data["environment"]["git_sha"]
    rows = {r["variant"]: r for r in data["rows"]}
    assert rows["triton"]["label"] == runner.INTERPRETER_LABEL and "speedup_vs_reference" not in rows["triton"]
    assert rows["twice"]["speedup_vs_reference"] > 0
    assert set(speedups_by_op(data["rows"])["copy"]) == {"twice"}
    assert (tmp_path / "kernels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "triton: interpreter (correctness only)" in capsys.readouterr().out


def test_compare_prints_ratio_per_common_row(tmp_path):
    row = dict(op="copy", case="c", direction="fwd", variant="triton")
    (tmp_path / "a.json").write_text(json.dumps({"rows": [dict(row, ms=2.0), dict(row, variant="x", ms=1.0)]}))
    (tmp_path / "b.json").write_text(json.dumps({"rows": [dict(row, ms=1.0)]}))
    lines = suite.compare(str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert "| copy | c | fwd | triton | 2.000 | 1.000 | 0.50 |" in lines
    assert lines[-1].startswith("1 rows in both; 1 only in A, 0 only in B")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        suite.compare(str(tmp_path / "a.json"), str(tmp_path / "bad.json"))


def test_results_record_the_chosen_triton_configs(monkeypatch):
    """``triton_configs`` reports, per autotuned kernel of the package, the config chosen for each shape key."""
    import importlib

    import triton
    import triton.language as tl

    from alarm_kernels import _utils

    monkeypatch.setattr(_utils, "triton_interpreting", lambda: False)

    @_utils.triton_autotune(configs=[triton.Config({"BLOCK": 64}), triton.Config({"BLOCK": 128})], key=["n"])
    @triton.jit
    def _copy_kernel(src, n, BLOCK: tl.constexpr):
        tl.store(src + tl.arange(0, BLOCK), tl.load(src + tl.arange(0, BLOCK)))

    _copy_kernel.cache[(4096, "torch.float32")] = _copy_kernel.configs[1]
    monkeypatch.setattr(importlib.import_module("alarm_kernels.varlen_pool.triton"), "_copy_kernel", _copy_kernel,
                        raising=False)
    recorded = runner.triton_configs()["varlen_pool._copy_kernel"]
    assert list(recorded["configs"]) == ['[4096, "torch.float32"]']
    assert "BLOCK: 128" in recorded["configs"]['[4096, "torch.float32"]']


def test_compare_reads_training_step_results():
    """An e2e result file (it has ``rows`` too, without ``ms``) compares by its step medians."""
    path = Path(__file__).resolve().parents[2] / "bench" / "results" / "cpu-mixed-2026-12-04" / "e2e_step.json"
    lines = suite.compare(str(path), str(path))
    assert lines[-1].startswith("6 rows in both"), lines[-1]
    assert any("stage=B rate=1" in line and line.endswith("| 1.00 |") for line in lines)

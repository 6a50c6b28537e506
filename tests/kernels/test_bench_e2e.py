"""bench/e2e_step.py on the tiny model (CPU): the rows it writes (stages x token rates x paths), their statistics,
the backends and attention kernels it records, its FLOP census, the profile summary and its errors."""
import json
import sys

import pytest

from bench import e2e_step
from bench.step_profile import busy_and_gaps


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    args = ["--config", "quick", "--stages", "A,B", "--token-rates", "1,2", "--steps", "2", "--warmup", "1",
            "--clock", "process", "--out", str(out)]
    assert e2e_step.main(args) == 0
    return out, json.loads((out / "e2e_step.json").read_text())


def test_rows_cover_every_stage_rate_and_path_with_their_statistics(report):
    _, data = report
    assert data["complete"] and data["config"] == "quick" and data["clock"] == "process"
    assert data["packages"]["triton"] and data["git_sha"] and data["torch"]
    keys = {(r["stage"], r["token_rate"], r["path"], r["llm"]) for r in data["rows"]}
    assert keys == {(s, t, p, "none") for s in "AB" for t in (1, 2) for p in ("reference", "fast")}
    for r in data["rows"]:
        s = r["step_s"]
        assert r["steps"] == 2 and len(r["step_s_all"]) == 2
        assert s["min"] <= s["p10"] <= s["median"] <= s["p90"] <= s["max"]
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / s["median"])
        assert r["peak_memory_gib"] is None and r["mfu"] is None  # not measured on a CPU
    for r in (r for r in data["rows"] if r["path"] == "fast"):
        ref = next(x for x in data["rows"] if (x["stage"], x["token_rate"], x["path"]) ==
                   (r["stage"], r["token_rate"], "reference"))
        assert r["speedup_vs_reference"] == pytest.approx(ref["step_s"]["median"] / r["step_s"]["median"])
        assert r["loss_abs_diff_vs_reference"] < 1e-4 and r["tokens"] == ref["tokens"]


def test_backends_and_attention_kernels_are_recorded(report):
    _, data = report
    rows = {(r["stage"], r["token_rate"], r["path"]): r["backends"] for r in data["rows"]}
    fast_a, ref_a = rows[("A", 1, "fast")], rows[("A", 1, "reference")]
    # stage A's packed adapters run the fused ops; on CPU tensors "auto" is the reference backend
    assert {"weighted_layer_sum", "varlen_conv1d", "packed_attention"} <= set(fast_a["alarm_kernels"])
    assert all(b == ["reference"] for b in fast_a["alarm_kernels"].values())
    assert "varlen_pool" in rows[("B", 2, "fast")]["alarm_kernels"] or "varlen_pool" in rows[("A", 2, "fast")][
        "alarm_kernels"]
    assert "varlen_conv1d" not in rows[("B", 1, "fast")]["alarm_kernels"]  # stage B reads the adapters' outputs
    assert any("scaled_dot_product" in k for k in ref_a["aten_attention"])  # the padded path's SDPA
    assert data["attention"]["llm_padded"].startswith("sdpa")


def test_flop_census_per_stage(report):
    _, data = report
    a1, b1, b2 = data["census"]["A@1"], data["census"]["B@1"], data["census"]["B@2"]
    assert a1["flops"]["encoders_forward"] > 0 and b1["flops"]["encoders_forward"] == 0
    assert a1["flops"]["trainable_fwd_bwd"] > b1["flops"]["trainable_fwd_bwd"] > 0  # stage A trains the adapters
    for c in (a1, b1, b2):
        f = c["flops"]
        assert f["total"] == pytest.approx(sum(v for k, v in f.items() if k != "total"))
        assert c["llm_tokens"] == sum(c["llm_seq_lens"])
    assert b2["llm_tokens"] < b1["llm_tokens"] and b2["llm_targets"] == b1["llm_targets"]
    fast_b1 = next(r for r in data["rows"] if (r["stage"], r["token_rate"], r["path"]) == ("B", 1, "fast"))
    assert fast_b1["tokens"] == b1["llm_tokens"]  # the census's splice agrees with the model's step
    assert fast_b1["model_flops"] == b1["flops"]["total"]


def test_profile_summary_is_written(report):
    out, data = report
    for stage in "AB":
        p = data["profile"][stage]
        assert p["wall_s"] > 0 and p["top_ops"] and p["device_busy_s"] is None
        assert (out / f"profile_stage{stage}_fast.txt").read_text().count("\n") > 5


def test_busy_time_and_idle_gaps():
    g = busy_and_gaps([(30.0, 40.0, "c"), (0.0, 10.0, "a"), (5.0, 12.0, "b"), (100.0, 101.0, "d"), (41.0, 45.0, "e")])
    assert g["busy_us"] == 12 + 10 + 4 + 1 and g["span_us"] == 101
    assert [(x["gap_us"], x["after"], x["before"]) for x in g["gaps"]] == [(55.0, "e", "d"), (18.0, "b", "c")]
    assert busy_and_gaps([]) == dict(busy_us=0.0, span_us=0.0, gaps=[])


def test_unavailable_llm_variant_is_recorded_not_fatal(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "liger_kernel"] + ["liger_kernel"]:
        monkeypatch.setitem(sys.modules, name, None)
    args = ["--config", "quick", "--stages", "B", "--token-rates", "1", "--steps", "1", "--warmup", "1",
            "--llm-variants", "none,liger", "--no-profile", "--name", "variants", "--out", str(tmp_path)]
    assert e2e_step.main(args) == 0
    data = json.loads((tmp_path / "variants.json").read_text())
    assert {r["llm"] for r in data["rows"]} == {"none"} and "liger-kernel" in data["llm_variants_unavailable"]["liger"]
    assert data["profile"] == {} and data["fastest_llm_variant"] == {}


def test_fastest_llm_variant_per_stage_and_rate():
    row = lambda stage, llm, median, path="fast": dict(stage=stage, token_rate=1, path=path, llm=llm,  # noqa: E731
                                                       step_s=dict(median=median))
    rows = [row("B", "none", 1.0), row("B", "liger", 0.8), row("B", "fp8", 0.9), row("B", "none", 0.1, "reference"),
            row("A", "none", 2.0)]
    assert e2e_step.fastest_llm_variants(rows) == {"B@1": "liger"}


def test_usage_errors(tmp_path, capsys):
    assert e2e_step.main(["--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "needs a GPU" in capsys.readouterr().err
    for bad in (["--token-rates", "1,1"], ["--stages", "C"], ["--llm-variants", "fast"], ["--steps", "0"]):
        with pytest.raises(SystemExit) as exc:
            e2e_step.main(["--config", "quick", "--out", str(tmp_path), *bad])
        assert exc.value.code == 2

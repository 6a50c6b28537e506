"""bench/e2e_step.py on the tiny model (CPU): the rows it writes (stages x token rates x paths), their statistics,
the backends and attention kernels it records, its FLOP census (the encoders' against the FLOP counter), the
encoders it runs (``--encoders``; the full config's four at their published shapes, built on the meta device), the
profile summary and its errors."""
import json
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from alarm.model import ALARMConfig, ALARMModel
from alarm.model.batch import source_lengths
from alarm.model.encoders import build_encoder
from alarm.model.muq import MUQ_FEATURE
from alarm.model.tiny import MuQShape, synthetic_audio
from bench import e2e_step
from bench.flops import muq_flops, sslam_flops
from bench.step_profile import busy_and_gaps

FOUR = ["whisper", "w2v-bert", "muq", "sslam"]


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
    assert data["encoders"] == FOUR and data["front_ends_in_workers"] == FOUR  # off CUDA the workers compute them all
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
    for bad in (["--token-rates", "1,1"], ["--stages", "C"], ["--llm-variants", "fast"], ["--steps", "0"],
                ["--encoders", "whisper,beats"], ["--encoders", "muq,muq"]):
        with pytest.raises(SystemExit) as exc:
            e2e_step.main(["--config", "quick", "--out", str(tmp_path), *bad])
        assert exc.value.code == 2
    assert "argument --encoders: expected distinct encoders from whisper, w2v-bert, muq, sslam, got 'muq,muq'" in \
        capsys.readouterr().err
    # a set the fusion refuses: one line naming the argument, before any model is built
    assert e2e_step.main(["--config", "quick", "--encoders", "sslam", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "e2e_step: --encoders sslam with --fusion CA: fusion CA needs at least two encoders"]


def test_encoder_subset_runs_in_the_published_order_with_its_census(report, tmp_path):
    _, four = report
    args = ["--config", "quick", "--encoders", "sslam,whisper", "--stages", "A", "--token-rates", "1", "--steps", "1",
            "--warmup", "1", "--no-profile", "--name", "two", "--out", str(tmp_path)]
    assert e2e_step.main(args) == 0
    data = json.loads((tmp_path / "two.json").read_text())
    assert data["encoders"] == ["whisper", "sslam"] and data["front_ends_in_workers"] == ["whisper", "sslam"]
    assert [(r["stage"], r["path"]) for r in data["rows"]] == [("A", "reference"), ("A", "fast")]
    two_enc, four_enc = data["census"]["A@1"]["flops"], four["census"]["A@1"]["flops"]
    assert 0 < two_enc["encoders_forward"] < four_enc["encoders_forward"]
    assert data["census"]["A@1"]["llm_tokens"] == four["census"]["A@1"]["llm_tokens"]  # CA: the base stream's length


@pytest.fixture(scope="module")
def tiny4():
    torch.manual_seed(0)
    return ALARMModel(ALARMConfig.tiny("CA", n_encoders=4))


@pytest.mark.parametrize("name", FOUR)
def test_encoder_flops_match_the_flop_counter(tiny4, name):
    """Clips of several pieces and of one: the formula on all of them = the FLOP counter on each clip's run (a
    batch of one: w2v-BERT's formula leaves the batch's padding out; SDPA through its math kernel, which the
    counter sees on CPU; MuQ's log-mel, left out by the formula, taken off)."""
    enc, spec = tiny4.encoders[name], next(s for s in tiny4.config.encoders if s.name == name)
    # 20,600 samples: 129 SSLAM fbank frames, two 128-frame pieces
    clips = [torch.from_numpy(c) for c in synthetic_audio([2.0, 4.5, 1.2875], seed=1)]
    counted, samples, frames = 0, [], []
    for clip in clips:
        prepared = tiny4.prepare_audio([clip], [16000], [name])[name]
        with FlopCounterMode(display=False) as fc, sdpa_kernel(SDPBackend.MATH):
            out = {name: enc.run(prepared)}
        counted += fc.get_total_flops()
        if name == "muq":
            with FlopCounterMode(display=False) as fc:
                enc.model.model.preprocessing(prepared.inputs["wav"].float(), features=[MUQ_FEATURE])
            counted -= fc.get_total_flops()
        samples += prepared.samples
        frames += source_lengths(out)[name]
    assert e2e_step.encoder_flops(spec, enc, samples, frames) == counted


def test_full_config_builds_the_four_published_encoders():
    ca, p = e2e_step.full_config("CA"), e2e_step.full_config("P")
    assert [e.name for e in ca.encoders] == FOUR and ca.llm_config["hidden_size"] == 2560
    assert [e.adapter for e in ca.encoders] == ["conv", "conv", "mlp", "conv"]
    assert [e.adapter for e in p.encoders] == ["conv", "identity", "identity", "identity"]
    assert all(e.path is None and e.dtype == "bfloat16" for e in ca.encoders)  # random weights, no download
    subset = e2e_step.full_config("P", ["muq", "w2v-bert"])
    assert [(e.name, e.adapter) for e in subset.encoders] == [("w2v-bert", "conv"), ("muq", "identity")]
    with pytest.raises(ValueError, match="needs at least two encoders"):
        e2e_step.full_config("CA", ["whisper"])
    # 8 clips of 20, 18, 16, 14 s (the full config's): built on the meta device, nothing allocated
    _, seconds, _ = e2e_step.bench_setup("full", "CA", None, None, None)
    flops = {}
    for spec in ca.encoders:
        with torch.device("meta"):
            enc = build_encoder(spec)
        samples = [int(round(s * spec.sample_rate)) for s in seconds]
        flops[spec.name] = e2e_step.encoder_flops(spec, enc, samples, [int(s * 50) for s in seconds])
        if spec.name == "muq":
            assert enc.model.shape == MuQShape(dim=1024, layers=12, heads=16, ffn=4096, kernel=31, n_mels=128,
                                               n_fft=2048, hop=240, conv_channels=512)  # MuQ-large's
            assert flops["muq"] == muq_flops(enc.model.shape, [3000] * 8, blocks=12)  # one 30 s piece per clip
        if spec.name == "sslam":
            assert flops["sslam"] == sslam_flops(enc.model.cfg, [1024] * 16, blocks=12)  # two 10.24 s pieces each
    assert all(f > 1e12 for f in flops.values()), flops

"""The dry run of ``python -m bench.overhead`` (host cost per op call vs plain PyTorch): every op and direction is
timed side by side, both variants compute the same result, and the JSON records what a reader needs."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_overhead_dry_run_times_every_op_side_by_side(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)  # the CPU default backend (reference) is what is timed
    proc = subprocess.run([sys.executable, "-m", "bench.overhead", "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert result["bench"] == "overhead" and result["environment"]["git_sha"]
    assert result["clock"] == "process CPU time" and result["settings"]["dry_run"]
    rows = result["rows"]
    ops = {"varlen_pool", "varlen_conv1d", "weighted_layer_sum", "multi_encoder_concat", "packed_attention"}
    assert {r["op"] for r in rows} == ops
    assert {(r["op"], r["case"], r["direction"]) for r in rows} == {
        (r["op"], r["case"], d) for r in rows for d in ("fwd", "fwd+bwd")}
    for r in rows:
        assert r["backend"] == "reference"
        assert r["max_abs_diff"] < 1e-4, r  # the two variants compute the same result
        variants = ("torch", "alarm_kernels", "custom_op") + (() if r["op"] == "weighted_layer_sum" else ("padded",))
        for variant in variants:
            s = r[variant]
            assert 0 < s["p10_us"] <= s["median_us"] <= s["p90_us"], r
        for base, suffix in (("torch", ""), ("padded", "_vs_padded")):
            if base in variants:
                assert abs(r[f"ratio{suffix}"] - r["alarm_kernels"]["median_us"] / r[base]["median_us"]) < 1e-9
                assert r[f"ratio{suffix}_p10"] <= r[f"ratio{suffix}_p90"]
    assert "| varlen_pool |" in proc.stdout


def test_overhead_refuses_an_unknown_op(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.overhead", "--dry-run", "--ops", "varlen_poool", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown ops ['varlen_poool']" in proc.stderr
    assert "Traceback" not in proc.stderr

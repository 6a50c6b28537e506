"""bench.summary: markdown tables from a results folder (speedups computed from the rows, errors named)."""
import json

import pytest

from bench.summary import main, summarize


def _kernel_file(rows):
    return {"environment": {"device": "X", "torch": "t", "triton": "tr", "git_sha": "abc"},
            "ceilings": {"copy_GBps": 100.0}, "rows": rows, "complete": True}


def test_speedups_against_reference_and_best_peer(tmp_path):
    rows = [dict(op="op", case="c", direction="fwd", variant=v, ms=ms)
            for v, ms in (("reference", 4.0), ("torch.compile", 2.0), ("flex", 1.0), ("triton", 0.5), ("cuda", 2.0))]
    rows.append(dict(op="op", case="c", direction="fwd", variant="triton", ms=9.0, label="interpreter"))
    (tmp_path / "k.json").write_text(json.dumps(_kernel_file(rows)))
    lines = summarize(tmp_path)
    triton = next(line for line in lines if "| triton |" in line)
    cuda = next(line for line in lines if "| cuda |" in line)
    assert "| flex (1.000) | triton | 0.500 | 8.00 | 2.00 |" in triton
    assert "| cuda | 2.000 | 2.00 | 0.50 |" in cuda
    assert sum("| triton |" in line for line in lines) == 1  # the interpreter row is not a timing


def test_correctness_e2e_and_sync_files(tmp_path):
    (tmp_path / "correctness.json").write_text(json.dumps({"dtype": "bfloat16", "autotune": "0", "rows": [
        {"backend": "triton", "status": "ok"}, {"backend": "triton", "status": "failed"},
        {"backend": "cuda", "status": "ok"}]}))
    (tmp_path / "e2e_old.json").write_text(json.dumps({"bench": "e2e_step", "fusion": "CA", "batch": 8,
        "clip_seconds": 20.0, "speedup": 1.5, "results": {  # the form written before stages and rates were rows
            "reference": dict(step_s_median=3.0, tokens_per_s=100.0, peak_memory_mb=10240.0, loss=1.0),
            "fast": dict(step_s_median=2.0, tokens_per_s=150.0, peak_memory_mb=8192.0, loss=1.0)}}))
    row = dict(stage="B", token_rate=2, path="fast", llm="liger", step_s=dict(median=0.5, p10=0.45, p90=0.6),
               tokens_per_s=900.0, peak_memory_gib=40.5, mfu=0.351, loss=2.0, speedup_vs_reference=3.1)
    (tmp_path / "e2e_step.json").write_text(json.dumps({"bench": "e2e_step", "fusion": "CA", "batch": 8,
                                                         "rows": [row]}))
    (tmp_path / "syncs.json").write_text(json.dumps({"host_transfers": 5, "host_transfers_in_kernels": 1,
        "cuda_syncs": 7, "from_features": {"host_transfers": 2, "host_transfers_in_kernels": 0, "cuda_syncs": 3}}))
    (tmp_path / "train_run.json").write_text(json.dumps({"bench": "train_run", "device": "X", "nproc": 2,
        "steps": 60, "tokens_per_s": 1234.4, "audio_hours_per_s": 0.5, "step_s": 0.25, "data_wait_share": 0.1,
        "peak_memory_gib": 3.0, "loss_first": 6.0, "loss_last": 2.5}))
    text = "\n".join(summarize(tmp_path))
    assert "| X | 2 | 60 | 1234 | 0.500 | 250 | 10% | 3.00 | 6.000 -> 2.500 |" in text
    assert "| peak GiB |" in text and "GB |" not in text.replace("GB/s", "")
    assert "| correctness.json | triton | bfloat16 | 1 | 1 | 0 |" in text
    assert "| correctness.json | cuda | bfloat16 | 1 | 0 | 0 |" in text
    assert "| e2e_old.json | CA | 8 | ? | 1 | fast | none | 2.000 | 150 | 8.00 |  | 1.00000 | 1.50 |" in text
    new_row = ("| e2e_step.json | CA | 8 | B | 2 | fast | liger | 0.500 (0.450-0.600) | 900 | 40.50 | 35.1% | "
               "2.00000 | 3.10 |")
    assert new_row in text
    assert "| from cached features | 2 | 0 | 3 |" in text


def test_committed_h200_results_read():
    text = "\n".join(summarize(__import__("pathlib").Path(__file__).parents[2] / "bench/results/h200-2026-11-29"))
    assert "| correctness-triton.json | triton | bfloat16 | 79 | 0 | 0 |" in text
    assert "NVIDIA H200" in text


def test_bad_folder_and_bad_json(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no benchmark result files" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main([str(tmp_path)]) == 2
    assert "broken.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="broken.json"):
        summarize(tmp_path)


def test_overhead_file(tmp_path):
    stats = lambda us: {"median_us": us, "p10_us": us - 1, "p90_us": us + 1}  # noqa: E731
    (tmp_path / "overhead.json").write_text(json.dumps({"bench": "overhead", "environment": {"git_sha": "abc"},
        "rows": [dict(op="varlen_pool", case="mean", direction="fwd", backend="reference", torch=stats(10.0),
                      padded=stats(5.0), alarm_kernels=stats(12.0), custom_op=stats(30.0), ratio=1.2, ratio_p10=1.1,
                      ratio_p90=1.3,
                      ratio_vs_padded=2.4, ratio_vs_padded_p10=2.0, ratio_vs_padded_p90=2.8)]}))
    text = "\n".join(summarize(tmp_path))
    assert "Host cost per op call" in text
    assert ("| varlen_pool | mean | fwd | reference | 10.0 (9.0-11.0) | 5.0 (4.0-6.0) | 12.0 (11.0-13.0) | "
            "1.20 (1.10-1.30) | 2.40 (2.00-2.80) | 30.0 (29.0-31.0) |") in text

"""The CPU dry run of ``bench/gpu_check.sh``: stages run under their limits, each writes its JSON, and the
stage log records every stage (run or not selected). A subset of stages keeps it fast."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"
SELECTED = ("environment", "correctness-triton", "train_run", "e2e_stage_B", "e2e_stage_A", "llm_kernels",
            "overhead", "frontends")


def test_gpu_check_dry_run_writes_each_stage(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, ALARM_GPU_CHECK_ONLY=",".join(SELECTED))
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = {s["stage"]: s for s in map(json.loads, (tmp_path / "stages.jsonl").read_text().splitlines())}
    assert stages["environment"]["exit"] == 0 and stages["correctness-triton"]["exit"] == 0
    assert {stages[name]["status"] for name in ("attention", "memory_bound", "gemm", "syncs")} == {"not selected"}
    assert json.loads((tmp_path / "environment.json").read_text())["git_sha"]
    correctness = json.loads((tmp_path / "correctness-triton.json").read_text())
    assert correctness["complete"] and correctness["autotune"] == "0"
    assert correctness["rows"] and all(r["status"] == "ok" for r in correctness["rows"])
    assert stages["train_run"]["exit"] == 0  # a real torchrun training run of tiny ALARM-CA, on CPU here
    run = json.loads((tmp_path / "train_run.json").read_text())
    assert run["steps"] == 3 and run["tokens_per_s"] > 0 and run["loss_first"] > 0 and run["nproc"] == 1
    assert run["peak_memory_gib"] > 0

    for stage, name in (("A", "e2e_stage_A"), ("B", "e2e_stage_B")):
        assert stages[name]["exit"] == 0
        e2e = json.loads((tmp_path / f"{name}.json").read_text())
        assert e2e["complete"] and e2e["stages"] == [stage]
        assert e2e["encoders"] == ["whisper", "w2v-bert", "muq", "sslam"]  # ALARM-CA's four, as on the GPU
        assert {(r["token_rate"], r["path"]) for r in e2e["rows"]} == {(t, p) for t in (1, 2, 4)
                                                                       for p in ("reference", "fast")}
        assert (tmp_path / f"profile_stage{stage}_fast.txt").is_file()
    assert stages["llm_kernels"]["exit"] == 0
    llm = json.loads((tmp_path / "e2e_llm_kernels.json").read_text())
    assert llm["llm_variants"] == ["none", "fp8"] and llm["token_rates"] == [1]
    fp8_rows = [r for r in llm["rows"] if r["llm"] == "fp8"]
    if importlib.util.find_spec("torchao") is None:  # the fp8 extra is not in the CPU lock: the row says why
        assert not fp8_rows and "torchao" in llm["llm_variants_unavailable"]["fp8"]
    else:
        assert fp8_rows and fp8_rows[0]["loss_abs_diff_vs_fast_none"] > 0

    for name in ("overhead", "frontends"):
        assert stages[name]["exit"] == 0
        rows = json.loads((tmp_path / name / f"{name}.json").read_text())
        assert rows, name

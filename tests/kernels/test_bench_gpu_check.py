"""The CPU dry run of ``bench/gpu_check.sh``: stages run under their limits, each writes its JSON, and the
stage log records every stage (run, not selected). A subset of stages keeps it fast."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"


def test_gpu_check_dry_run_writes_each_stage(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, ALARM_GPU_CHECK_ONLY="environment,correctness-triton,train_run")
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
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

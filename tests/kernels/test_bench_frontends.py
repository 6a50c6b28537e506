"""The CPU dry run of ``python -m bench.frontends`` (what bench/gpu_check.sh runs as its front-end stage): every op
and variant timed at two thread counts, the JSON written, bad arguments refused with exit status 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "bench.frontends", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_frontends_dry_run_writes_every_variant(tmp_path):
    proc = _run("--dry-run", "--out", str(tmp_path), "--threads", "1,2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "frontends.json").read_text())
    assert result["complete"] and result["dry_run"] and result["environment"]["git_sha"]
    rows = result["rows"]
    expected = {("whisper_log_mel", "transformers"), ("whisper_log_mel", "reference"),
                ("w2v_bert_fbank", "transformers"), ("w2v_bert_fbank", "reference"),
                ("w2v_bert_fbank", "reference-fft32"), ("kaldi_fbank", "reference")}
    for threads in (1, 2):
        got = {(r["op"], r["variant"]) for r in rows if r["threads"] == threads}
        assert expected <= got, expected - got
    for r in rows:
        assert r["p10_ms"] <= r["ms"] <= r["p90_ms"] and r["ms"] > 0 and r["calls"] >= 5
        assert ("speedup_vs_transformers" in r) == (r["op"] != "kaldi_fbank" and r["variant"] != "transformers")


def test_frontends_bad_arguments_exit_2(tmp_path):
    for args in (["--cases", "9x9s"], ["--threads", "0"]):
        proc = _run("--dry-run", "--out", str(tmp_path), *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr

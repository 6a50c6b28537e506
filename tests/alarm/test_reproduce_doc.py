"""docs/reproduce.md is runnable: every command of the page is in scripts/reproduce_tiny.sh (which runs them in
order with tiny overrides), and the script's reduced run connects the files end to end: the corpus import feeds
the five stage-A runs (each on its published subset), their adapters feed the cache and ALARM-CA, ALARM-CA and
AL-Whisper-Instruct-R answer the four benchmarks, and the paper comparison reads the reports."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reproduce.md"
SCRIPT = REPO / "scripts" / "reproduce_tiny.sh"
NOT_RUN = "# not in scripts/reproduce_tiny.sh:"


def _logical_lines(text: str) -> list[str]:
    """Shell lines with backslash continuations joined and whitespace collapsed; comments and blanks dropped."""
    out, current = [], ""
    for line in text.splitlines():
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            words = " ".join(current.split())
            if words and not words.startswith("#"):
                out.append(words)
            current = ""
    return out


def _doc_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_every_command_of_the_doc_is_run_by_the_tiny_script():
    script = _logical_lines(SCRIPT.read_text(encoding="utf-8"))
    run, not_run = [], []
    for block in _doc_blocks():
        first = block.lstrip().splitlines()[0]
        if first.startswith(NOT_RUN):
            assert len(first) > len(NOT_RUN) + 10, f"a block not run gives no reason: {first!r}"
            not_run += _logical_lines(block)
        else:
            run += _logical_lines(block)
    assert len(run) >= 20 and len(not_run) >= 10  # the page's blocks were found
    missing = [c for c in run if not any(line.startswith(c) for line in script)]
    assert not missing, f"commands of docs/reproduce.md that scripts/reproduce_tiny.sh does not run: {missing}"
    # the tiny script adds nothing but tiny overrides to a doc command: every alarm/torchrun line starts with one
    commands = [line for line in script if line.split()[0] in ("alarm", "torchrun")]
    strays = [line for line in commands if not any(line.startswith(c) for c in run)]
    assert not strays, f"scripts/reproduce_tiny.sh runs commands docs/reproduce.md does not show: {strays}"


def test_reduced_tiny_reproduction_connects_end_to_end(tmp_path):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), str(work), "--reduced"], capture_output=True, text=True, env=env,
                          timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    report = json.loads((work / "data/alarm/report.json").read_text())
    matched = {name: c["matched"] for name, c in report["splits"]["train"]["datasets"].items()}
    assert set(matched) >= {"librispeech", "vctk", "nsynth", "esc50", "audioset", "clotho", "voxceleb1", "cameo",
                            "sonicmaster", "heysquad_human_filtered", "instructs2s"}
    assert all(matched.values()), matched

    held_out = {  # each stage-A run evaluated on the validation clips of its published subset, and only those
        "al_whisper_r": {"librispeech", "vctk", "nsynth", "esc50", "audioset", "clotho", "voxceleb1", "cameo",
                         "sonicmaster", "heysquad_human_filtered"},
        "al_w2vbert2_r": {"vctk", "cameo"}, "al_muq_r": {"nsynth", "sonicmaster"},
        "al_sslam_r": {"esc50", "audioset", "clotho"}, "al_whisper_instruct_r": {"heysquad_human_filtered"}}
    for run, datasets in held_out.items():
        summary = json.loads((work / "runs" / run / "summary.json").read_text())
        assert summary["steps"] == 2 and {k.split("/", 1)[1] for k in summary["eval"]} == datasets, run

    ca = load_file(str(work / "runs/alarm_ca/final/audio_side.safetensors"))
    for run, name in (("al_whisper_r", "whisper"), ("al_w2vbert2_r", "w2v-bert"), ("al_muq_r", "muq"),
                      ("al_sslam_r", "sslam")):
        stage_a = load_file(str(work / "runs" / run / "final/audio_side.safetensors"))
        adapter = {k: v for k, v in stage_a.items() if k.startswith(f"adapters.{name}.")}
        assert adapter and all(torch.equal(ca[k], v) for k, v in adapter.items()), run  # frozen through stage B
    index = json.loads((work / "cache/alarm_ca/index.json").read_text())
    manifests = [json.loads(line)["id"] for split in ("train", "validation")
                 for line in (work / f"data/alarm/{split}.jsonl").read_text().splitlines()]
    assert sorted(index["examples"]) == sorted(manifests)  # training and held-out clips cached
    assert json.loads((work / "runs/alarm_ca/summary.json").read_text())["eval"]

    for model, stem, n in (("alarm_ca", "mmau-test-mini", 4), ("alarm_ca", "mmar", 4), ("alarm_ca", "mmsu", 4),
                           ("alarm_ca", "airbench", 4), ("alarm_e", "mmsu", 4)):
        rep = json.loads((work / "out" / model / f"{stem}.report.json").read_text())
        assert rep["items"] == n and rep["paper"]["total"]["count"] == n and rep["strict"]["total"]["count"] == n
    ensemble = json.loads((work / "out/alarm_e/mmsu.jsonl.work/config.json").read_text())["models"]
    assert [Path(m).parent.name for m in ensemble] == ["alarm_ca", "al_whisper_instruct_r"]
    mmar = json.loads((work / "out/alarm_ca/mmar.report.json").read_text())["paper"]["total"]["accuracy"]
    assert re.search(rf"\| ALARM-CA \| mmar \| total \| 48\.7 \| {mmar:.1f} \|", proc.stdout)
    assert "| ALARM-E | mmau-test | task: speech | 73.7 | - | - | - | no out/alarm_e/mmau-test.report.json |" \
        in proc.stdout

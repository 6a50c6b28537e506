"""Helpers shared by the trainer's end-to-end tests (test_train.py, test_faults.py): a tiny corpus, a recipe,
``alarm`` run as a subprocess, and what a run folder holds."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from safetensors.torch import load_file

from alarm.train.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[2]
RATE = 16000


def write_corpus(folder: Path, n: int = 12, extra: tuple = ()) -> Path:
    """n short WAV clips (0.3-0.6 s) with a one-line manifest record each; ``extra`` adds raw records."""
    rng = np.random.default_rng(0)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = 0.3 + 0.3 * (i % 4) / 3
        t = np.arange(int(seconds * RATE)) / RATE
        x = (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        sf.write(folder / "audio" / f"c{i}.wav", x, RATE)
        rows.append({"id": f"c{i}", "audio": f"audio/c{i}.wav", "duration": seconds,
                     "dataset": ["tones", "beeps"][i % 2], "description": "", "prompt": "What is the pitch?",
                     "target": f"It is about {200 + 150 * i} hertz."})
    rows += list(extra)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def write_recipe(folder: Path, manifest: Path, out: Path, **sections) -> Path:
    """A tiny stage-A recipe (12 examples: 6 steps per epoch, 2 epochs, a checkpoint every 2 steps);
    ``sections`` update its sections."""
    recipe = {
        "model": {"preset": "tiny", "fusion": "sum", "n_encoders": 1, "stage": "A"},
        "data": {"train_manifest": str(manifest), "max_seconds": 5.0},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "batch": {"max_tokens": 1, "accumulation": 2},  # every example a pack of its own
        "run": {"out_dir": str(out), "epochs": 2, "save_every": 2, "log_every": 1, "progress": "lines",
                "device": "cpu", "plot": False},
    }
    for section, values in sections.items():
        recipe[section].update(values)
    path = folder / f"recipe-{out.name}.json"
    path.write_text(json.dumps(recipe))
    return path


def env():
    """The environment of a child ``alarm``: one thread, no torchrun variables."""
    out = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(key, None)
    return out


def alarm(*args, timeout=300):
    """``python -m alarm *args`` -> CompletedProcess (text output captured)."""
    return subprocess.run([sys.executable, "-m", "alarm", *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def params(run: Path) -> dict:
    return load_file(str(latest_checkpoint(str(run)) / "trainable.safetensors"))


def buffers(run: Path) -> dict:
    return load_file(str(latest_checkpoint(str(run)) / "buffers.safetensors"))


def train_rows(run: Path) -> list:
    """The ``train`` rows of a run's metrics.jsonl, in order (a resumed run appends the steps it redoes); a torn
    last line (a kill during the append) is left out."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row["kind"] == "train":
            rows.append(row)
    return rows


def losses(run: Path) -> dict:
    """step -> loss (the last logged for that step)."""
    return {r["step"]: r["loss"] for r in train_rows(run)}

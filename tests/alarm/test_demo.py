"""The main job (`alarm demo`) at a reduced size: the frozen text-trained LM reads the synthetic sound world
from text, and the trainer teaches the audio side to make it answer from audio alone."""
import json
from pathlib import Path

import pytest

from alarm.demo.run import run_demo

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_learns_to_answer_from_audio(tmp_path):
    result = run_demo(str(tmp_path), text_steps=300, train_clips=600, eval_clips=40,
                      overrides=("run.max_steps=500", "run.log_every=100", "run.save_every=0"))
    assert result["text_accuracy"] >= 0.9  # the LM knows the world from text
    before, after = result["audio_accuracy_before"]["all"], result["audio_accuracy_after"]["all"]
    assert before < 0.4  # an untrained audio side leaves the LM near chance (25%)
    assert after >= before + 0.1, (before, after)
    train = result["train"]
    assert train["steps"] == 500 and train["skipped_clips"] == 0
    assert Path(train["plot"]).is_file() and Path(train["model"], "audio_side.safetensors").is_file()
    assert json.loads((tmp_path / "demo.json").read_text())["audio_accuracy_after"]["all"] == after

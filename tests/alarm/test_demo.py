"""The embedded default job's training part: both paths train identically, the model saves and reloads."""
import json
import os

import pytest

from alarm.demo_train import train_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_tiny_paths_agree_and_model_round_trips(tmp_path):
    summary = train_tiny(steps=2, out_dir=str(tmp_path))
    assert len(summary["loss"]["fast"]) == 2 and summary["max_loss_gap"] < 1e-4
    assert summary["loss"]["fast"][1] < summary["loss"]["fast"][0]  # the step moved the loss downhill
    assert os.path.exists(tmp_path / "tiny-alarm-CA" / "alarm_config.json")
    assert json.loads((tmp_path / "train_tiny.json").read_text())["fusion"] == "CA"
    assert isinstance(summary["generation"], str)

"""Bad input to every ``alarm`` command ends with exit status 2 and one ``alarm: error:`` line naming the
file, line or argument (never a traceback), before any model is loaded and without touching the output;
internal errors keep their traceback."""
import importlib.util
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from alarm.cli import main
from alarm.model import ALARMConfig, ALARMModel

pytestmark = pytest.mark.usefixtures("one_thread")

GPU_VISIBLE = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-build message needs a machine without GPU")
VLLM_INSTALLED = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every input the table refers to, by short name."""
    d = tmp_path_factory.mktemp("cli")
    model = ALARMModel(ALARMConfig.tiny("sum", n_encoders=1, max_audio_seconds=3.0))
    model.save_pretrained(str(d / "model"))
    cfg_text = (d / "model" / "alarm_config.json").read_text()
    for name, config, weights in (
            ("bad_json_model", cfg_text[: len(cfg_text) // 2], None),
            ("unknown_field_model", json.dumps({**json.loads(cfg_text), "colour": "red"}), None),
            ("corrupt_weights_model", cfg_text, b"\x08\x00\x00\x00\x00\x00\x00\x00{broken"),
    ):
        (d / name).mkdir()
        (d / name / "alarm_config.json").write_text(config)
        (d / name / "audio_side.safetensors").write_bytes(
            weights if weights is not None else (d / "model" / "audio_side.safetensors").read_bytes())
    rate = 8000
    t = np.arange(rate) / rate
    sf.write(d / "clip.wav", 0.3 * np.sin(2 * np.pi * 440 * t), rate)
    sf.write(d / "long.wav", np.zeros(rate * 5, np.float32), rate)
    nan = np.zeros(100, np.float32)
    nan[3] = np.nan
    sf.write(d / "nan.wav", nan, rate, subtype="FLOAT")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio\n")
    (d / "latin1.jsonl").write_bytes(b'{"a": "caf\xe9"}\n')
    (d / "broken.json").write_text('[{"a": 1}, {"a": ]')
    labels = {"id": "a", "audio": "a.wav", "dataset": "d", "duration": 1.0, "schema": "speech",
              "labels": {"transcript": "hi"}}
    (d / "labels.jsonl").write_text(json.dumps(labels) + "\n")
    (d / "events_str.jsonl").write_text(json.dumps({**labels, "schema": "sound", "labels": {"events": "dog"}}) + "\n")
    (d / "bad_line.jsonl").write_text(json.dumps(labels) + "\n{oops\n")
    (d / "mmau.json").write_text(json.dumps([{"id": "q0", "audio_id": "a.wav", "question": "q", "choices": ["a", "b"],
                                            "answer": "a", "task": "sound", "difficulty": "easy"}]))
    (d / "lm").mkdir()
    (d / "lm" / "config.json").write_text("{}")  # passes the cheap model-folder check; never loaded
    (d / "old_run").mkdir()
    (d / "old_run" / "run.json").write_text(json.dumps({"config": {"seed": 123}, "model": "x"}))
    (d / "recipe.json").write_text(json.dumps({"model": {"preset": "tiny"}, "data": {
        "train_manifest": str(d / "labels.jsonl")}, "run": {"out_dir": str(d / "out_train")}}))
    return d


def _run_args(f, *extra, out="out_run"):
    return ["rephrase", "run", "--input", f"{f}/labels.jsonl", "--output-dir", f"{f}/{out}", "--model",
            f"{f}/lm", *extra]


def _gen(f, *extra, model="model", audio="clip.wav"):
    return ["generate", "--model", f"{f}/{model}", "--audio", f"{f}/{audio}", "--prompt", "What?", *extra]


# (id, argv builder, phrase of the message); every row must exit with status 2
TABLE = [
    ("gen-missing-audio", lambda f: _gen(f, audio="nope.wav"), "audio file not found: {f}/nope.wav"),
    ("gen-text-as-wav", lambda f: _gen(f, audio="text.wav"), "text.wav: Format not recognised"),
    ("gen-empty-wav", lambda f: _gen(f, audio="empty.wav"), "empty.wav: the file is empty"),
    ("gen-nan-wav", lambda f: _gen(f, audio="nan.wav"), "nan.wav contains NaN"),
    ("gen-missing-model", lambda f: _gen(f, model="nope"), "model folder not found: {f}/nope"),
    ("gen-bad-config-json", lambda f: _gen(f, model="bad_json_model"),
     "bad_json_model/alarm_config.json: invalid JSON"),
    ("gen-unknown-config-field", lambda f: _gen(f, model="unknown_field_model"), "unknown ALARMConfig fields"),
    ("gen-corrupt-weights", lambda f: _gen(f, model="corrupt_weights_model"),
     "cannot read weights {f}/corrupt_weights_model/audio_side.safetensors"),
    ("gen-long-clip-before-weights", lambda f: _gen(f, model="corrupt_weights_model", audio="long.wav"),
     "long.wav lasts more than the limit of 3.0 s (pass --crop"),
    ("gen-max-seconds-over-limit", lambda f: _gen(f, "--max-seconds", "10"), "exceeds the model's limit of 3.0 s"),
    ("gen-start-after-end", lambda f: _gen(f, "--start", "2"), "clip.wav: start 2.0 s is at or after its end"),
    ("gen-device-banana", lambda f: _gen(f, "--device", "banana"), "--device 'banana' is not a torch device"),
    ("gen-device-cuda", lambda f: _gen(f, "--device", "cuda"), "--device cuda: CUDA requested but", GPU_VISIBLE),
    ("gen-max-new-tokens", lambda f: _gen(f, "--max-new-tokens", "0"), "--max-new-tokens must be >= 1, got 0"),
    ("gen-thinking-negative", lambda f: _gen(f, "--max-thinking-tokens", "-5"), "--max-thinking-tokens must be >= -1"),
    ("eval-unknown-benchmark", lambda f: ["eval", "score", "--benchmark", "nope", "--input", f"{f}/mmau.json",
                                          "--output", f"{f}/out_eval.json"], "unknown benchmark 'nope'"),
    ("eval-missing-input", lambda f: ["eval", "score", "--benchmark", "mmau", "--input", f"{f}/nope.json",
                                      "--output", f"{f}/out_eval.json"], "--input: file not found: {f}/nope.json"),
    ("eval-not-utf8", lambda f: ["eval", "fill", "--benchmark", "mmau", "--input", f"{f}/latin1.jsonl",
                                 "--output", f"{f}/out_eval.json"], "latin1.jsonl:1: not UTF-8 text"),
    ("eval-broken-json", lambda f: ["eval", "fill", "--benchmark", "mmau", "--input", f"{f}/broken.json",
                                    "--output", f"{f}/out_eval.json"], "broken.json: invalid JSON at line 1"),
    ("eval-no-response", lambda f: ["eval", "fill", "--benchmark", "mmau", "--input", f"{f}/mmau.json",
                                    "--output", f"{f}/out_eval.json"], "item 0 ('q0') has no 'model_response' field"),
    ("describe-missing", lambda f: ["rephrase", "describe", "--input", f"{f}/nope.jsonl", "--output",
                                    f"{f}/out_desc.jsonl"], "--input: file not found"),
    ("describe-not-utf8", lambda f: ["rephrase", "describe", "--input", f"{f}/latin1.jsonl", "--output",
                                     f"{f}/out_desc.jsonl"], "latin1.jsonl:1: not UTF-8 text"),
    ("describe-events-string", lambda f: ["rephrase", "describe", "--input", f"{f}/events_str.jsonl", "--output",
                                          f"{f}/out_desc.jsonl"], "events_str.jsonl:1: 'events' must be a list"),
    ("describe-bad-line", lambda f: ["rephrase", "describe", "--input", f"{f}/bad_line.jsonl", "--output",
                                     f"{f}/out_desc.jsonl"], "bad_line.jsonl:2: malformed JSON"),
    ("run-thinking-budget", lambda f: _run_args(f, "--thinking-budget", "-5"), "--thinking-budget must be >= 0"),
    ("run-batch-size", lambda f: _run_args(f, "--batch-size", "0"), "--batch-size must be >= 1, got 0"),
    ("run-r0-max-tokens", lambda f: _run_args(f, "--r0-max-tokens", "0"), "--r0-max-tokens must be >= 1"),
    ("run-token-range", lambda f: _run_args(f, "--min-tokens", "100", "--max-tokens", "10"),
     "--max-tokens must be >= 100, got 10"),
    ("run-part", lambda f: _run_args(f, "--part", "2", "--num-parts", "2"), "--part must be between 0 and 1"),
    ("run-missing-input", lambda f: ["rephrase", "run", "--input", f"{f}/nope.jsonl", "--output-dir",
                                     f"{f}/out_run", "--model", f"{f}/lm"], "--input: file not found"),
    ("run-missing-model", lambda f: ["rephrase", "run", "--input", f"{f}/labels.jsonl", "--output-dir",
                                     f"{f}/out_run", "--model", f"{f}/nope/model"], "--model: model folder not found"),
    ("run-dtype", lambda f: _run_args(f, "--dtype", "bf17"), "--dtype must be one of auto, bfloat16"),
    ("run-device", lambda f: _run_args(f, "--device", "banana"), "--device 'banana' is not a torch device"),
    ("run-device-cuda", lambda f: _run_args(f, "--device", "cuda:0"), "CUDA requested but", GPU_VISIBLE),
    ("run-vllm-missing", lambda f: _run_args(f, "--backend", "vllm"), "--backend vllm needs the vllm package",
     VLLM_INSTALLED),
    ("run-events-string", lambda f: ["rephrase", "run", "--input", f"{f}/events_str.jsonl", "--output-dir",
                                     f"{f}/out_run", "--model", f"{f}/lm"], "'events' must be a list"),
    ("run-different-settings", lambda f: _run_args(f, out="old_run"), "holds a run with different settings"),
    ("demo-steps", lambda f: ["demo", "--steps", "0", "--out", f"{f}/out_demo"], "--steps must be >= 1, got 0"),
    ("cache-device", lambda f: ["cache", "--config", f"{f}/recipe.json", "--out", f"{f}/out_cache", "--device",
                                "banana"], "--device 'banana' is not a torch device"),
    ("cache-device-cuda", lambda f: ["cache", "--config", f"{f}/recipe.json", "--out", f"{f}/out_cache", "--device",
                                     "cuda"], "--device cuda: CUDA requested but", GPU_VISIBLE),
]


def _snapshot(folder):
    return {os.path.relpath(os.path.join(r, n), folder): open(os.path.join(r, n), "rb").read()
            for r, _, names in os.walk(folder) for n in names}


@pytest.mark.parametrize("argv,phrase", [pytest.param(*row[1:3], id=row[0], marks=row[3:]) for row in TABLE])
def test_bad_input_exits_2_with_one_line(files, capsys, argv, phrase):
    before = _snapshot(files)
    code = main(argv(files))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("alarm: error:")]
    assert len(lines) == 1, err
    assert phrase.format(f=files) in lines[0], lines[0]
    assert _snapshot(files) == before  # nothing written, nothing changed (no run.json, no output)


def test_internal_errors_keep_their_traceback(monkeypatch):
    import alarm.commands.eval as eval_cmd

    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(eval_cmd, "_score", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["eval", "score", "--benchmark", "mmau", "--input", "x", "--output", "y"])


def test_relative_audio_paths_resolve_against_the_labels_folder(tmp_path, monkeypatch):
    from alarm.data.descriptions import read_label_items
    from alarm.rephrase.pipeline import Pipeline, PipelineConfig

    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    sf.write(data / "clips" / "a.wav", np.zeros(800, np.float32), 8000)
    row = {"id": "a", "audio": "clips/a.wav", "dataset": "d", "duration": 0.1, "schema": "speech",
           "labels": {"transcript": "hi"}}
    (data / "labels.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "b", "audio": "gone.wav"}))
    monkeypatch.chdir(tmp_path)  # somewhere else than the labels' folder
    items = read_label_items("data/labels.jsonl")
    assert items[0].audio == str((data / "clips" / "a.wav").resolve())
    cfg = PipelineConfig(input="data/labels.jsonl", output_dir=str(tmp_path / "out"), check_audio=True)
    _, rejects = Pipeline(cfg, _SilentBackend()).process_shard(items, 0)
    assert {r["id"]: r["reason"] for r in rejects} == {"b": "audio_missing", "a": "empty_r0"}


class _SilentBackend:
    """Answers every prompt with nothing (enough to run the pre-filter)."""

    def __init__(self):
        from alarm.model.tiny import tiny_tokenizer
        self.tokenizer = tiny_tokenizer()

    def generate(self, prompts, **kwargs):
        from alarm.rephrase.backends import Generation
        return [Generation("", 0, True, False) for _ in prompts]


def test_recipe_overrides_may_follow_options(capsys):
    from alarm.cli import build_parser, parse

    args = parse(build_parser(), ["cache", "--config", "r.yaml", "model.preset=tiny", "--out", "c", "--level",
                                  "adapter", "data.num_workers=0", "run.device=cpu"])
    assert args.overrides == ["model.preset=tiny", "data.num_workers=0", "run.device=cpu"]
    assert args.out == "c" and args.level == "adapter"
    assert parse(build_parser(), ["train", "--config", "r.yaml", "--resume", "never", "a.b=1"]).overrides == ["a.b=1"]
    for argv in (["cache", "--config", "r.yaml", "a.b=1", "--out", "c", "stray"],
                 ["train", "--config", "r.yaml", "a.b=1", "--unknown", "x"],
                 ["eval", "fill", "--benchmark", "mmau", "--input", "i", "--output", "o", "a.b=1"]):
        with pytest.raises(SystemExit) as exc:
            parse(build_parser(), argv)
        assert exc.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err

"""Benchmark loaders/scorers (alarm/eval/benchmarks.py) and ``alarm eval`` on hand-made prediction files."""
import argparse
import json

import pytest

from alarm.commands import eval as eval_cmd
from alarm.eval.benchmarks import exact_match, get_benchmark, load_items, score, string_match

DOGS = ["dog barking", "cat meowing", "dog growling", "bird singing"]
PEOPLE = ["man", "woman", "man and woman"]
NUMBERS = ["2", "3", "12", "23"]


@pytest.mark.parametrize("answer, pred, choices, ok", [
    ("dog barking", "dog barking", DOGS, True),
    ("dog barking", "Dog Barking.", DOGS, True),                  # case and punctuation
    ("dog barking", "I hear a barking dog", DOGS, True),          # order and extra words
    ("dog barking", "dog", DOGS, False),                          # missing answer word
    ("dog barking", "dog barking, maybe growling", DOGS, False),  # word unique to a wrong choice
    ("dog barking", "", DOGS, False),                             # empty prediction
    ("dog barking", "...", DOGS, False),                          # no words at all
    ("man", "man", PEOPLE, True),
    ("man", "man and woman", PEOPLE, False),                      # answer words all inside a wrong choice
    ("man and woman", "man", PEOPLE, False),
    ("man and woman", "a man and a woman", PEOPLE, True),
    ("3", "3", NUMBERS, True),
    ("3", "There are 3 speakers", NUMBERS, True),
    ("3", "13", NUMBERS, False),                                  # numbers are whole tokens
    ("3", "3 or 2", NUMBERS, False),
    ("12", "12", NUMBERS, True),
    ("12", "1 2", NUMBERS, False),
])
def test_string_match(answer, pred, choices, ok):
    assert string_match(answer, pred, choices) is ok


def test_exact_match():
    assert exact_match("Happy", " happy. ")
    assert exact_match("New  York", "new york")
    assert not exact_match("happy", "happy sad")
    assert not exact_match("happy", "")
    assert not exact_match("", "")


def _write(tmp_path, name, items, jsonl=False):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(i) for i in items) if jsonl else json.dumps(items))
    return p


def _mmau(pred, answer="dog barking", task="sound", diff="easy", sub="Event", choices=DOGS):
    item = {"id": pred, "audio_id": "a.wav", "question": "What?", "choices": choices, "answer": answer,
            "task": task, "difficulty": diff, "category": "Perception", "sub-category": sub, "split": "test-mini"}
    if pred is not None:
        item["model_prediction"] = pred
    return item


def test_mmau_scores(tmp_path):
    items = [_mmau("dog barking"), _mmau("dog", diff="hard"), _mmau("3", "3", "speech", "medium", "Count", NUMBERS),
             _mmau("13", "3", "speech", "hard", "Count", NUMBERS), _mmau(None, task="music", sub="Genre"),
             _mmau("man", "man", "speech", "easy", "Gender", PEOPLE)]
    bench = get_benchmark("MMAU")
    report = score(bench, load_items(_write(tmp_path, "mmau.json", items), bench))
    assert report["total"] == {"correct": 3, "count": 6, "accuracy": 50.0}
    assert report["missing_predictions"] == 1
    g = report["groups"]
    assert g["task"]["sound"]["correct"] == 1 and g["task"]["sound"]["count"] == 2
    assert g["task"]["speech"] == {"correct": 2, "count": 3, "accuracy": round(200 / 3, 4)}
    assert g["task"]["music"] == {"correct": 0, "count": 1, "accuracy": 0.0}
    assert g["difficulty"]["hard"]["correct"] == 0 and g["difficulty"]["hard"]["count"] == 2
    assert g["sub-category"]["Count"]["correct"] == 1


def test_mmar_scores_jsonl(tmp_path):
    def it(pred, modality, cat, sub, ok_answer="man"):
        return {"id": pred, "audio_path": "x.wav", "question": "Who?", "choices": PEOPLE, "answer": ok_answer,
                "modality": modality, "category": cat, "sub-category": sub, "model_prediction": pred}
    items = [it("man", "speech", "Semantic Layer", "Speaker"), it("woman", "speech", "Semantic Layer", "Speaker"),
             it("the man", "mix-sound-speech", "Perception Layer", "Counting"),
             it("", "mix-sound-speech", "Perception Layer", "Counting")]
    bench = get_benchmark("mmar")
    report = score(bench, load_items(_write(tmp_path, "mmar.jsonl", items, jsonl=True), bench))
    assert report["total"]["correct"] == 2 and report["total"]["accuracy"] == 50.0
    assert report["groups"]["modality"]["speech"]["correct"] == 1
    assert report["groups"]["category"]["Perception Layer"] == {"correct": 1, "count": 2, "accuracy": 50.0}


def _lettered(pred, answer, task, **extra):
    item = {"question": "Q?", "choice_a": "happy", "choice_b": "sad", "choice_c": "angry", "choice_d": "neutral",
            "answer_gt": answer, "task_name": task, **extra}
    if pred is not None:
        item["model_prediction"] = pred
    return item


def test_mmsu_exact_match(tmp_path):
    items = [_lettered("Happy.", "happy", "emotion", category="perception", **{"sub-category": "paralinguistics"}),
             _lettered("happy sad", "happy", "emotion", category="perception", **{"sub-category": "paralinguistics"}),
             _lettered("sad", "sad", "sarcasm", category="reasoning", **{"sub-category": "semantics"}),
             _lettered("", "angry", "sarcasm", category="reasoning", **{"sub-category": "semantics"})]
    bench = get_benchmark("mmsu")
    report = score(bench, load_items(_write(tmp_path, "mmsu.jsonl", items, jsonl=True), bench))
    assert report["total"]["correct"] == 2
    assert report["groups"]["category"]["perception"]["correct"] == 1
    assert report["groups"]["category"]["reasoning"]["correct"] == 1
    assert report["groups"]["task_name"]["emotion"]["count"] == 2
    # answers given as a letter are mapped to that choice's text
    letter = {k: v for k, v in _lettered("sad", "x", "t").items() if k != "answer_gt"}
    assert bench.is_correct({**letter, "answer": "B"}) and not bench.is_correct({**letter, "answer": "A"})


def test_airbench_categories(tmp_path):
    items = [_lettered("happy", "happy", "Speaker_Emotion_Recontion", dataset_name="iemocap"),
             _lettered("sad", "happy", "Speaker_Emotion_Recontion", dataset_name="iemocap"),
             _lettered("angry", "angry", "Music_Genre_Classification", dataset_name="gtzan"),
             _lettered("neutral", "neutral", "Acoustic_Scene_Classification", dataset_name="tut")]
    bench = get_benchmark("air-bench")
    report = score(bench, load_items(_write(tmp_path, "air.json", items), bench))
    assert report["total"] == {"correct": 3, "count": 4, "accuracy": 75.0}
    assert report["groups"]["category"] == {
        "music": {"correct": 1, "count": 1, "accuracy": 100.0},
        "sound": {"correct": 1, "count": 1, "accuracy": 100.0},
        "speech": {"correct": 1, "count": 2, "accuracy": 50.0}}


def test_bad_inputs(tmp_path):
    bench = get_benchmark("mmau")
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("nope")
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path / "none.json", bench)
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(_mmau("x")) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON"):
        load_items(p, bench)
    p.write_text(json.dumps([_mmau("x"), {"question": "no choices"}]))
    with pytest.raises(ValueError, match=r"item 1: missing field"):
        load_items(p, bench)


def _cli(argv):
    parser = argparse.ArgumentParser()
    eval_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_fill_then_score(tmp_path, capsys):
    items = [_mmau(None) for _ in range(4)]
    for item, out in zip(items, ["<think>hmm</think><answer>0</answer>", "<answer>2</answer>",
                                 "<answer>9</answer>", "no idea"]):
        item["model_output"] = out
    raw = _write(tmp_path, "raw.json", items)
    filled = tmp_path / "filled.json"
    assert _cli(["eval", "fill", "--benchmark", "mmau", "--input", str(raw), "--output", str(filled)]) == 0
    got = json.loads(filled.read_text())
    assert [g["model_prediction"] for g in got] == ["dog barking", "dog growling", "", ""]
    assert [g["answer_status"] for g in got] == ["ok", "ok", "out_of_range", "no_answer_tag"]
    report_path = tmp_path / "report.json"
    capsys.readouterr()
    assert _cli(["eval", "score", "--benchmark", "mmau", "--input", str(filled), "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["total"] == {"correct": 1, "count": 4, "accuracy": 25.0}
    table = capsys.readouterr().out
    assert "| task | sound | 25.00 | 1 / 4 |" in table and "**25.00**" in table


def test_alarm_cli_main(tmp_path, capsys):
    from alarm.cli import main

    items = [_lettered("happy", "happy", "Speaker_Emotion_Recontion", dataset_name="iemocap")]
    out = tmp_path / "r.json"
    assert main(["eval", "score", "--benchmark", "airbench", "--input", str(_write(tmp_path, "a.json", items)),
                 "--output", str(out)]) == 0
    assert json.loads(out.read_text())["total"]["accuracy"] == 100.0
    assert "| category | speech | 100.00 | 1 / 1 |" in capsys.readouterr().out

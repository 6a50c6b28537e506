"""Benchmark scoring (alarm/eval/benchmarks.py): adversarial prediction sets whose expected outcomes were worked
out by hand from each official script's published rule, file validation, ``fill`` keys, and the CLI."""
import json

import pytest

from alarm.cli import main
from alarm.eval.benchmarks import fill_item, get_benchmark, load_items, score, string_match

MISSING = object()  # the item has no prediction key at all
DOGS = ["dog barking", "cat meowing", "dog growling", "bird singing"]
PEOPLE = ["man", "woman", "man and woman"]
DUP = ["dog", "dog", "cat"]
NUM = ["2", "3", "12", "23"]

# (choices, answer, prediction, official outcome). MMAU and MMAR share the rule: a prediction is right when it
# holds every word of the answer and no word that only a wrong choice has; items without the key are skipped;
# a non-string prediction makes the official script raise. Strict: the same rule, every item counts.
STRING_CASES = [
    (DOGS, "dog barking", "dog barking", 1),
    (DOGS, "dog barking", "Dog Barking.", 1),                # case and punctuation
    (DOGS, "dog barking", "DOG BARKING!!!", 1),
    (DOGS, "dog barking", "I hear a barking dog", 1),        # order and extra words
    (DOGS, "dog barking", "The answer is: dog barking", 1),
    (DOGS, "dog barking", "dog-barking", 1),
    (DOGS, "dog barking", "dog barking\n", 1),
    (DOGS, "dog barking", "(A) dog barking", 1),             # a letter prefix is one more harmless word
    (DOGS, "dog barking", "dog", 0),
    (DOGS, "dog barking", "barking", 0),
    (DOGS, "dog barking", "dog barking or dog growling", 0),  # two options named
    (DOGS, "dog barking", "dog barking, not cat", 0),
    (DOGS, "dog barking", "cat meowing", 0),
    (DOGS, "dog barking", "dog growling", 0),
    (DOGS, "dog barking", "A", 0),                           # letter only
    (DOGS, "dog barking", "0", 0),                           # index only
    (DOGS, "dog barking", "dog_barking", 0),                 # "_" is a word character: one unknown token
    (DOGS, "dog barking", "\uff44\uff4f\uff47 \uff42\uff41\uff52\uff4b\uff49\uff4e\uff47", 0),  # full-width
    (DOGS, "dog barking", "", 0),                            # empty: counted, wrong
    (DOGS, "dog barking", "   ", 0),
    (DOGS, "dog barking", "...", 0),
    (DOGS, "dog barking", None, "error"),                    # null: the official script raises
    (DOGS, "dog barking", 0, "error"),                       # non-strings are never turned into strings
    (DOGS, "dog barking", ["dog barking"], "error"),
    (DOGS, "dog barking", {"text": "dog barking"}, "error"),
    (DOGS, "dog barking", MISSING, "skip"),
    (PEOPLE, "man", "man", 1),
    (PEOPLE, "man", "a man", 1),
    (PEOPLE, "man", "woman", 0),                             # options that contain each other
    (PEOPLE, "man", "man and woman", 0),
    (PEOPLE, "man and woman", "man and woman", 1),
    (PEOPLE, "man and woman", "woman and man", 1),
    (PEOPLE, "man and woman", "man", 0),
    (DUP, "dog", "dog", 1),                                  # duplicated options
    (DUP, "dog", "cat", 0),
    (NUM, "3", "3", 1),
    (NUM, "3", "three", 0),                                  # numbers as words
    (NUM, "3", "13", 0),
    (NUM, "3", "3 or 2", 0),
    (NUM, "3", "There are 3 speakers", 1),
    (NUM, "3", "Option 3", 1),
    (NUM, "12", "1 2", 0),
    (NUM, "12", "12", 1),
]

# MMSU (in this order: its script reuses the last parsed letter for an empty or "None" response):
# (response, answer_gt, official, strict). Options A-D: happy, sad, angry, neutral.
MMSU_CASES = [
    ("", "sad", "error", 0),         # empty before any parsed letter: the script's variable is unset (NameError)
    ("B", "sad", 1, 1),
    ("", "sad", 1, 0),               # empty: scored with the previous letter B
    ("None", "happy", 0, 0),         # "None" too: B against A
    (MISSING, "sad", 1, 0),          # no key: read as "", previous letter B
    ("A", "sad", 0, 0),
    ("", "happy", 1, 0),             # previous letter is now A
    ("b", "sad", "skip", 0),         # lower case is no letter
    ("(B)", "sad", 1, 1),            # second-to-last character
    ("The answer is B.", "sad", 1, 1),
    ("The answer is B", "sad", "skip", 0),
    ("B. sad", "sad", 1, 1),
    ("Answer: B", "sad", 0, 0),      # first character "A"
    ("Answer: B", "happy", 1, 1),    # ... right by accident
    ("A dog", "happy", 1, 1),
    ("sad", "sad", "skip", 0),       # option text instead of a letter
    (None, "sad", "skip", 0),        # null and other non-strings: skipped by the script's try/except
    (1, "sad", "skip", 0),
    (["B"], "sad", "skip", 0),
    ("\uff22", "sad", "skip", 0),     # full-width B
    (" B ", "sad", 1, 1),
    ("B\n", "sad", 1, 1),
    ("\nB", "sad", 1, 1),
    ("C", "sad", 0, 0),
    ("D", "neutral", 1, 1),
    ("BA", "sad", 1, 1),             # two letters: the first
    ("A or B", "sad", 0, 0),         # two options named
    ("xB.", "sad", 1, 1),
    ("<answer>1</answer>", "sad", "skip", 0),
    ("B)", "sad", 1, 1),
    ("(b)", "sad", "skip", 0),
    ("option B", "sad", "skip", 0),
    ("The correct option is (B).", "sad", "skip", 0),
    ("Both", "sad", 1, 1),           # any text starting with B reads as B
    ("Definitely A", "happy", 0, 0),  # ... and with D as D
    ("CB.", "sad", 0, 0),
    ("", "angry", 1, 0),             # previous letter C
    ("A", "happy", 1, 1),
    ("None", "sad", 0, 0),           # previous letter A
    ("D.", "neutral", 1, 1),
    ("  ", "sad", 0, 0),             # previous letter D
]

# AIR-Bench foundation: the same letter rule; empty, "None" and unparseable responses are skipped (fail_num);
# a missing or non-string response makes the script raise. (response, answer_gt, official, strict, two_options)
AIR_CASES = [
    ("B", "sad", 1, 1), ("A", "sad", 0, 0), ("", "sad", "skip", 0), ("None", "sad", "skip", 0),
    (MISSING, "sad", "error", 0), (None, "sad", "error", 0), (2, "sad", "error", 0), (["B"], "sad", "error", 0),
    ("b", "sad", "skip", 0), ("(B)", "sad", 1, 1), ("The answer is B.", "sad", 1, 1),
    ("The answer is B", "sad", "skip", 0), ("B. sad", "sad", 1, 1), ("Answer: B", "sad", 0, 0),
    ("Answer: B", "happy", 1, 1), ("sad", "sad", "skip", 0), ("\uff22", "sad", "skip", 0), (" B ", "sad", 1, 1),
    ("B\n", "sad", 1, 1), ("C", "sad", 0, 0), ("D", "neutral", 1, 1), ("BA", "sad", 1, 1),
    ("A or B", "sad", 0, 0), ("xB.", "sad", 1, 1), ("<answer>1</answer>", "sad", "skip", 0), ("B)", "sad", 1, 1),
    ("(b)", "sad", "skip", 0), ("option B", "sad", "skip", 0), ("Both", "sad", 1, 1),
    ("Definitely A", "happy", 0, 0), ("CB.", "sad", 0, 0), ("  ", "sad", "skip", 0), ("\n", "sad", "skip", 0),
    ("1", "sad", "skip", 0), ("A.", "happy", 1, 1), ("(D)", "neutral", 1, 1), ("E", "sad", "skip", 0),
    ("ABCD", "sad", 0, 0),
]
AIR_TWO_OPTION_CASES = [("B", "no", 1, 1), ("C", "no", 0, 0), ("A", "yes", 1, 1)]  # choice_c/choice_d are null

LETTERED = {"choice_a": "happy", "choice_b": "sad", "choice_c": "angry", "choice_d": "neutral"}
OFFICIAL = {1: 1, 0: 0, "skip": "skipped", "error": "script_error"}


def _put(item, key, value):
    if value is not MISSING:
        item[key] = value
    return item


def _write(tmp_path, name, items):
    p = tmp_path / name
    if name.endswith(".jsonl"):
        p.write_text("".join(json.dumps(i) + "\n" for i in items))
    else:
        p.write_text(json.dumps(items))
    return p


def _check(bench_name, items, expected, tmp_path, name):
    """Score ``items`` (after a round trip through a file) and compare every item with its expected outcome."""
    bench = get_benchmark(bench_name)
    items = load_items(_write(tmp_path, name, items), bench)
    report = score(bench, items)
    got = [(it["official_match"], it["match"]) for it in items]
    assert got == [(OFFICIAL[o], s) for o, s in expected]
    counted = [o for o, _ in expected if o in (0, 1)]
    assert report["official"]["total"]["count"] == len(counted)
    assert report["official"]["total"]["correct"] == sum(counted)
    assert len(report["official"]["script_errors"]) == sum(o == "error" for o, _ in expected)
    assert sum(report["official"]["skipped"].values()) == sum(o == "skip" for o, _ in expected)
    assert report["strict"]["total"] == {"correct": sum(s for _, s in expected), "count": len(expected),
                                         "accuracy": round(100 * sum(s for _, s in expected) / len(expected), 4)}
    return report


@pytest.mark.parametrize("bench_name", ["mmau", "mmar"])
def test_string_match_benchmarks_adversarial(tmp_path, bench_name):
    assert len(STRING_CASES) >= 40
    key = get_benchmark(bench_name).official_key
    items = []
    for i, (choices, answer, pred, _) in enumerate(STRING_CASES):
        base = {"id": f"i{i}", "question": "What?", "choices": choices, "answer": answer}
        base.update({"task": "sound", "difficulty": "easy", "audio_id": "a.wav"} if bench_name == "mmau" else
                    {"modality": "sound", "category": "Signal Layer", "audio_path": "a.wav"})
        items.append(_put(base, key, pred))
    expected = [(o, int(o == 1)) for *_, o in STRING_CASES]
    report = _check(bench_name, items, expected, tmp_path, f"{bench_name}.json")
    assert report["strict"]["malformed"] == {"missing": 1, "non_string": 4, "unparseable": 3}
    for choices, answer, pred, o in STRING_CASES:  # the rule itself, item by item
        if isinstance(pred, str):
            assert string_match(answer, pred, choices) is (o == 1), pred


def test_mmsu_adversarial(tmp_path):
    assert len(MMSU_CASES) >= 40
    items = [_put({"id": i, "question": "Q?", **LETTERED, "answer_gt": ans, "audio_path": "/a.wav",
                   "category": "perception", "sub-category": "emotion"}, "response", resp)
             for i, (resp, ans, _, _) in enumerate(MMSU_CASES)]
    report = _check("mmsu", items, [(o, s) for _, _, o, s in MMSU_CASES], tmp_path, "mmsu.jsonl")
    assert [e["id"] for e in report["official"]["script_errors"]] == [0]


def test_airbench_adversarial(tmp_path):
    assert len(AIR_CASES) + len(AIR_TWO_OPTION_CASES) >= 40
    items = [_put({"uniq_id": i, "question": "Q?", **LETTERED, "answer_gt": ans, "path": "a.wav",
                   "task_name": "Speaker_Emotion_Recontion", "dataset_name": "iemocap"}, "response", resp)
             for i, (resp, ans, _, _) in enumerate(AIR_CASES)]
    two = {"choice_a": "yes", "choice_b": "no", "choice_c": None, "choice_d": None}
    items += [{"uniq_id": 100 + i, "question": "Q?", **two, "answer_gt": ans, "path": "b.wav", "response": resp,
               "task_name": "Speaker_Number_Verification", "dataset_name": "voxceleb1"}
              for i, (resp, ans, _, _) in enumerate(AIR_TWO_OPTION_CASES)]
    expected = [(o, s) for _, _, o, s in AIR_CASES + AIR_TWO_OPTION_CASES]
    report = _check("airbench", items, expected, tmp_path, "air.jsonl")
    rows = report["official"]["groups"]["task_name+dataset_name"]
    assert rows["Speaker_Number_Verification_voxceleb1"] == {"correct": 2, "count": 3, "accuracy": round(200 / 3, 4)}


def test_airbench_leaderboard_average(tmp_path):
    """Per-task accuracies pool the task's datasets; a category is the mean of its tasks; the average is the mean
    of the speech, sound and music means (not the mean over items)."""
    plan = [("Speaker_Emotion_Recontion", "iemocap", "BA"), ("Speaker_Emotion_Recontion", "meld", "BB"),
            ("Speech_Grounding", "librispeech", "B"), ("SOUND_AQA", "avqa", "BA"),  # task names: any case
            ("vocal_sound_classification", "VocalSound", "A"), ("Music_AQA", "music_avqa", "B")]
    items = [{"uniq_id": f"{t}{d}{k}", "question": "Q?", **LETTERED, "answer_gt": "sad", "path": "x.wav",
              "task_name": t, "dataset_name": d, "response": r}
             for t, d, responses in plan for k, r in enumerate(responses)]
    bench = get_benchmark("airbench")
    report = score(bench, load_items(_write(tmp_path, "air.json", items), bench))
    off = report["official"]
    assert off["groups"]["task_name+dataset_name"]["Speaker_Emotion_Recontion_iemocap"]["accuracy"] == 50.0
    assert off["groups"]["task_name"]["Speaker_Emotion_Recontion"]["accuracy"] == 75.0
    assert off["category_means"] == {"speech": 87.5, "sound": 25.0, "music": 100.0}
    assert off["average"] == round((87.5 + 25.0 + 100.0) / 3, 4)
    assert off["total"]["accuracy"] == round(100 * 6 / 9, 4)  # the micro average differs


def _mmau_item(i, **kw):
    return {"id": f"x{i}", "question": "What?", "choices": DOGS, "answer": "dog barking", "task": "sound",
            "difficulty": "easy", "audio_id": "a.wav", **kw}


@pytest.mark.parametrize("bench_name, content, message", [
    ("mmau", "", "empty file"),
    ("mmau", "[]", "no items"),
    ("mmau", json.dumps([_mmau_item(0), _mmau_item(0)]), r"item 1: duplicate id 'x0' \(first at .*item 0\)"),
    ("mmau", json.dumps([_mmau_item(0, choices="dog barking")]), "item 0: choices must be a list"),
    ("mmau", json.dumps([_mmau_item(0, answer="dog")]), r"item 0: answer 'dog' is not one of the options"),
    ("mmau", json.dumps([_mmau_item(0), {k: v for k, v in _mmau_item(1).items() if k != "answer"}]),
     r"item 1: missing field\(s\) \['answer'\]"),  # (no answer at all: withheld, tested in test_eval_run)
    ("mmau", json.dumps([_mmau_item(0, choices=["dog barking", 3])]), "options must be non-empty strings"),
    ("mmau", json.dumps([_mmau_item(0), "text"]), "item 1: expected a JSON object"),
    ("mmau", json.dumps([_mmau_item(0, difficulty="tricky")]), "difficulty 'tricky' is not one of"),
    ("mmsu", json.dumps({"id": 1, **LETTERED, "answer_gt": None, "audio_path": "a.wav"}) + "\n",
     r"mmsu.jsonl:1: answer_gt must be a non-empty string, got None"),
    ("airbench", json.dumps([{"uniq_id": 1, **LETTERED, "answer_gt": "sad", "path": "a", "task_name": "Dance_Steps",
                              "dataset_name": "d"}]), "unknown AIR-Bench task 'Dance_Steps'"),
])
def test_malformed_benchmark_files_are_errors(tmp_path, capsys, bench_name, content, message):
    name = "mmsu.jsonl" if bench_name == "mmsu" else "bench.json"
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        load_items(tmp_path / name, get_benchmark(bench_name))
    capsys.readouterr()
    rc = main(["eval", "score", "--benchmark", bench_name, "--input", str(tmp_path / name),
               "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("alarm: error: ") and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_fill_writes_the_official_keys(tmp_path, capsys):
    responses = ["<think>hmm</think><answer>1</answer>", "<answer>9</answer>", "no idea", None]
    cases = {
        "mmau": (lambda i: _mmau_item(i, answer="cat meowing"), "model_output", ["cat meowing", "", "", ""]),
        "mmar": (lambda i: {**_mmau_item(i, answer="cat meowing"), "modality": "sound", "category": "Signal Layer",
                            "audio_path": "a.wav"}, "answer_prediction", ["cat meowing", "", "", ""]),
        "mmsu": (lambda i: {"id": i, **LETTERED, "answer_gt": "sad", "audio_path": "a.wav"}, "response",
                 ["B", "?", "?", "?"]),
        "airbench": (lambda i: {"uniq_id": i, **LETTERED, "answer_gt": "sad", "path": "a", "task_name": "Sound_AQA",
                                "dataset_name": "avqa"}, "response", ["B", "?", "?", "?"]),
    }
    for name, (make, key, expected) in cases.items():
        items = [{**make(i), "model_response": r} for i, r in enumerate(responses)]
        out = tmp_path / f"{name}-filled.jsonl"
        assert main(["eval", "fill", "--benchmark", name, "--input", str(_write(tmp_path, f"{name}.json", items)),
                     "--output", str(out)]) == 0
        got = [json.loads(line) for line in out.read_text().splitlines()]
        assert [g[key] for g in got] == expected
        assert [g["model_response"] for g in got] == responses  # the raw response has its own key
        assert [g["answer_status"] for g in got] == ["ok", "out_of_range", "no_answer_tag", "empty"]
        report = score(get_benchmark(name), got)
        assert report["official"]["total"]["correct"] == report["strict"]["total"]["correct"] == 1
        assert report["strict"]["total"]["count"] == 4
    capsys.readouterr()
    items = [{**_mmau_item(0), "model_response": "<answer>0</answer>"}, _mmau_item(1)]
    rc = main(["eval", "fill", "--benchmark", "mmau", "--input", str(_write(tmp_path, "m.json", items)),
               "--output", str(tmp_path / "o.json")])
    assert rc == 2 and "item 1 ('x1') has no 'model_response'" in capsys.readouterr().err


def test_letter_fill_on_a_two_option_airbench_item():
    bench = get_benchmark("airbench")
    item = {"uniq_id": 1, "choice_a": "yes", "choice_b": "no", "choice_c": None, "choice_d": None,
            "answer_gt": "no", "path": "a", "task_name": "Speaker_Number_Verification", "dataset_name": "v"}
    assert fill_item(bench, item, "<answer>1</answer>") == "ok" and item["response"] == "B"
    assert fill_item(bench, item, "<answer>2</answer>") == "out_of_range" and item["response"] == "?"


def test_score_cli_prints_both_columns(tmp_path, capsys):
    items = [_mmau_item(0, model_output="dog barking"), _mmau_item(1, model_output="cat"), _mmau_item(2)]
    assert main(["eval", "score", "--benchmark", "mmau", "--input", str(_write(tmp_path, "p.json", items)),
                 "--output", str(tmp_path / "r.json"), "--scored-items", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "| **total** | mmau | **50.00 (1/2)** | **33.33 (1/3)** |" in out
    assert "skipped 1 item(s)" in out
    assert [it["match"] for it in json.loads((tmp_path / "s.json").read_text())] == [1, 0, 0]

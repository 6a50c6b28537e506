"""``--protocol paper``: the ALARM repository's own answer parsing (generate_vllm_mcqa.py) and scoring
(scripts/benchmarks/evaluation/{mmau,mmar,mmsu,airbench}.py), checked against outcomes worked out by hand from
those scripts, side by side with the upstream official and the strict outcomes of the same responses.

The scripts' rules, as read (every case below names the one it exercises):
- parsing: text after the last "<answer>" (whole response if none; case-sensitive; thinking not skipped), cut
  at the first "</answer>", stripped; Python ``int()`` of it, 0 when that fails; the option at that Python
  index (negative from the end); out of range: the number's own text.
- MMAU/MMAR: the upstream string match on ``model_prediction``; no key: skipped; a non-string: the script stops.
- MMSU: str(prediction) and str(answer_gt), stripped and without newlines, equal; no key reads as ""; every item
  counts; total and per-category accuracies pool items (micro).
- AIR-Bench: the same equality after a prediction "None" becomes choice_a; no key: the script stops; per
  task+dataset, total, per task (pooled over datasets).
"""
import copy
import json
from pathlib import Path

import pytest

from alarm.cli import main
from alarm.eval.benchmarks import fill_item, get_benchmark, load_items, markdown_table, score
from alarm.eval.mcqa import (AMBIGUOUS, NOT_INDEX, OK, PAPER_INDEX, PAPER_NEGATIVE_INDEX, PAPER_NOT_INTEGER,
                             PAPER_NOT_STRING, PAPER_OUT_OF_RANGE, parse_answer, parse_answer_paper)

DATA = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
DOGS = ["dog barking", "cat meowing", "dog growling", "bird singing"]
NUM = ["2", "3", "12", "23"]

# (response, options, published parsing: (prediction text, rule), this project's parsing: (status, index))
PARSE_CASES = [
    ("<think>hmm</think>\n\n<answer>1</answer>", DOGS, ("cat meowing", PAPER_INDEX), (OK, 1)),
    ("<answer> 2 </answer>", DOGS, ("dog growling", PAPER_INDEX), (OK, 2)),                  # stripped
    ("<answer>\n1\n</answer>", DOGS, ("cat meowing", PAPER_INDEX), (OK, 1)),
    ("<answer>1</answer> then <answer>3</answer>", DOGS, ("bird singing", PAPER_INDEX), (OK, 3)),  # the last tag
    ("<think>maybe <answer>0</answer></think> It is the cat.", DOGS,                          # thinking not skipped
     ("dog barking", PAPER_INDEX), ("no_answer_tag", None)),
    ("<ANSWER>1</ANSWER>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (OK, 1)),               # tag is case-sensitive
    ("<answer>3", DOGS, ("bird singing", PAPER_INDEX), ("no_answer_tag", None)),              # no closing tag
    ("2", DOGS, ("dog growling", PAPER_INDEX), ("no_answer_tag", None)),                      # no tag: whole text
    ("The answer is 2", DOGS, ("dog barking", PAPER_NOT_INTEGER), ("no_answer_tag", None)),
    ("<answer>(1)</answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (OK, 1)),             # int() fails: option 0
    ("<answer>1.</answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (OK, 1)),
    ("<answer>Option_1</answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (OK, 1)),
    ("<answer>cat meowing</answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (OK, 1)),     # option text: option 0
    ("<answer>2 3</answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (NOT_INDEX, None)),
    ("<answer>1e0</answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (NOT_INDEX, None)),
    ("<answer>0x2</answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (NOT_INDEX, None)),
    ("<answer></answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), ("empty", None)),
    ("<answer>1</answer>\n<answer>", DOGS, ("dog barking", PAPER_NOT_INTEGER), (OK, 1)),     # last tag is empty
    ("", DOGS, ("dog barking", PAPER_NOT_INTEGER), ("empty", None)),
    (None, DOGS, ("dog barking", PAPER_NOT_STRING), ("empty", None)),
    ("<answer>-1</answer>", DOGS, ("bird singing", PAPER_NEGATIVE_INDEX), (NOT_INDEX, None)),  # Python indexing
    ("<answer>-4</answer>", DOGS, ("dog barking", PAPER_NEGATIVE_INDEX), (NOT_INDEX, None)),
    ("<answer>-0</answer>", DOGS, ("dog barking", PAPER_INDEX), (NOT_INDEX, None)),
    ("<answer>-5</answer>", DOGS, ("-5", PAPER_OUT_OF_RANGE), (NOT_INDEX, None)),            # its own text
    ("<answer>4</answer>", DOGS, ("4", PAPER_OUT_OF_RANGE), ("out_of_range", None)),
    ("<answer>007</answer>", DOGS, ("7", PAPER_OUT_OF_RANGE), ("out_of_range", None)),       # int's text, not raw
    ("<answer>99999999999999999999</answer>", DOGS, ("99999999999999999999", PAPER_OUT_OF_RANGE),
     ("out_of_range", None)),
    ("<answer>+2</answer>", DOGS, ("dog growling", PAPER_INDEX), (NOT_INDEX, None)),         # int() accepts a sign
    ("<answer>0_1</answer>", DOGS, ("cat meowing", PAPER_INDEX), (NOT_INDEX, None)),         # ... and "_"
    ("<answer>\u0661</answer>", DOGS, ("cat meowing", PAPER_INDEX), (OK, 1)),                # Arabic-Indic 1
    ("<answer>\uff11</answer>", DOGS, ("cat meowing", PAPER_INDEX), (OK, 1)),                # full-width 1
    ("<answer><answer>2</answer>", DOGS, ("dog growling", PAPER_INDEX), (NOT_INDEX, None)),
    ("<answer>3</answer>", NUM, ("23", PAPER_INDEX), (OK, 3)),                               # index, not text "3"
    ("<answer>12</answer>", NUM, ("12", PAPER_OUT_OF_RANGE), (OK, 2)),                       # text that is an option
    ("<answer>-2</answer>", NUM, ("12", PAPER_NEGATIVE_INDEX), (NOT_INDEX, None)),
    ("<answer>yes</answer>", ["Yes.", "yes"], ("Yes.", PAPER_NOT_INTEGER), (OK, 1)),         # exact before fuzzy
    ("<answer>Yes.</answer>", ["Yes.", "yes"], ("Yes.", PAPER_NOT_INTEGER), (OK, 0)),
    ("<answer> yes </answer>", ["Yes.", "yes"], ("Yes.", PAPER_NOT_INTEGER), (OK, 1)),
    ("<answer>YES</answer>", ["Yes.", "yes"], ("Yes.", PAPER_NOT_INTEGER), (AMBIGUOUS, None)),  # two texts fit
    ("<answer>Dog</answer>", ["dog", "dog", "cat"], ("dog", PAPER_NOT_INTEGER), (OK, 0)),    # one text twice
    ("<answer>1</answer>", ["dog", "dog", "cat"], ("dog", PAPER_INDEX), (OK, 1)),
]


@pytest.mark.parametrize("response, options, paper, project", PARSE_CASES)
def test_parsing_both_ways(response, options, paper, project):
    got = parse_answer_paper(response, options)
    assert (got.text, got.rule) == paper
    assert got.index is None if got.rule == PAPER_OUT_OF_RANGE else options[got.index] == got.text
    mine = parse_answer(response, options)
    assert (mine.status, mine.index) == project


OFFICIAL = {1: 1, 0: 0, "skip": "skipped", "error": "script_error"}


def _round_trip(tmp_path, name, items):
    path = tmp_path / name
    path.write_text(json.dumps(items))
    return path


def _fill_and_score(tmp_path, bench_name, items, name="bench.json"):
    """Load a file (validation included), fill every item's model_response both ways, score all three ways."""
    bench = get_benchmark(bench_name)
    loaded = load_items(_round_trip(tmp_path, name, items), bench)
    for item in loaded:
        fill_item(bench, item, item["model_response"], "paper")
    return loaded, score(bench, loaded, "paper")


def _outcomes(items):
    return [(it["paper_match"], it["official_match"], it["match"]) for it in items]


def _expected(cases):
    return [(OFFICIAL[p], OFFICIAL[o], s) for *_, (p, o, s) in cases]


# MMAU/MMAR: (choices, answer, response) -> (paper, official, strict)
STRING_CASES = [
    (DOGS, "dog barking", "<answer>0</answer>", (1, 1, 1)),
    (DOGS, "dog barking", "<answer>1</answer>", (0, 0, 0)),
    (DOGS, "dog barking", "<answer>(0)</answer>", (1, 1, 1)),        # paper: not an integer -> option 0
    (DOGS, "dog barking", "<answer>(1)</answer>", (1, 0, 0)),        # ... which happens to be right
    (DOGS, "dog barking", "It barks.", (1, 0, 0)),                   # no tag: option 0; official: "" is wrong
    (DOGS, "cat meowing", "It barks.", (0, 0, 0)),
    (DOGS, "cat meowing", "<answer>cat meowing</answer>", (0, 1, 1)),  # text: the project reads it, paper not
    (DOGS, "bird singing", "<answer>-1</answer>", (1, 0, 0)),        # negative index from the end
    (DOGS, "dog barking", "<answer>-4</answer>", (1, 0, 0)),
    (DOGS, "dog barking", "<answer>7</answer>", (0, 0, 0)),          # out of range: "7", no answer word
    (DOGS, "dog barking", "<think><answer>0</answer></think> a cat", (1, 0, 0)),  # tag inside the thinking
    (DOGS, "cat meowing", "<ANSWER>1</ANSWER>", (0, 1, 1)),           # upper-case tag: paper option 0
    (NUM, "12", "<answer>12</answer>", (1, 1, 1)),                    # out of range, its text is the answer
    (NUM, "12", "<answer>2</answer>", (1, 1, 1)),
    (NUM, "3", "<answer>3</answer>", (0, 0, 0)),                      # index 3 is "23"
    (["dog", "dog", "cat"], "dog", "<answer>1</answer>", (1, 1, 1)),  # duplicated option: text matches
    (["Man", "Woman"], "man", "<answer>0</answer>", (1, 1, 1)),       # answer differs in case: words ignore case
]


@pytest.mark.parametrize("bench_name", ["mmau", "mmar"])
def test_string_match_benchmarks(tmp_path, bench_name):
    extra = ({"task": "sound", "difficulty": "easy", "audio_id": "a.wav"} if bench_name == "mmau" else
             {"modality": "sound", "category": "Signal Layer", "audio_path": "a.wav"})
    items = [{"id": f"i{i}", "question": "Q?", "choices": c, "answer": a, "model_response": r, **extra}
             for i, (c, a, r, _) in enumerate(STRING_CASES)]
    items, report = _fill_and_score(tmp_path, bench_name, items)
    assert _outcomes(items) == _expected(STRING_CASES)
    assert report["paper"]["total"] == {"correct": 11, "count": 17, "accuracy": round(1100 / 17, 4)}
    assert report["official"]["total"]["correct"] == report["strict"]["total"]["correct"] == 8
    assert report["answer_case_mismatch"] == ["i16"]
    assert report["paper"]["parse"] == {PAPER_INDEX: 7, PAPER_NEGATIVE_INDEX: 2, PAPER_NOT_INTEGER: 6,
                                        PAPER_OUT_OF_RANGE: 2}


def test_string_match_paper_key_missing_or_not_text(tmp_path):
    """Scored as the scripts score a file made elsewhere: no model_prediction is skipped, a null one stops them."""
    base = {"question": "Q?", "choices": DOGS, "answer": "dog barking", "task": "sound", "difficulty": "easy",
            "audio_id": "a.wav"}
    items = [{**base, "id": "a", "model_prediction": "dog barking"}, {**base, "id": "b"},
             {**base, "id": "c", "model_prediction": None}, {**base, "id": "d", "model_prediction": "cat"}]
    bench = get_benchmark("mmau")
    report = score(bench, load_items(_round_trip(tmp_path, "m.json", items), bench), "paper")
    paper = report["paper"]
    assert paper["total"] == {"correct": 1, "count": 2, "accuracy": 50.0}
    assert paper["skipped"] == {"no_prediction_key": 1}
    assert paper["script_errors"] == [{"id": "c", "reason": "model_prediction is not a string"}]
    assert paper["parse"] == {}  # no paper_parse fields: not filled here


LETTERED = {"choice_a": "happy", "choice_b": "sad", "choice_c": "angry", "choice_d": "neutral"}

# MMSU: (choices, answer_gt, response) -> (paper, official, strict); MMSU's official rule: a letter is right when
# its own option equals answer_gt; "?" (what fill writes for an unreadable answer) is skipped.
MMSU_CASES = [
    (LETTERED, "sad", "<answer>1</answer>", (1, 1, 1)),
    (LETTERED, "sad", "<answer>0</answer>", (0, 0, 0)),
    (LETTERED, "sad", "It is sad.", (0, "skip", 0)),                 # paper: option 0 "happy"
    (LETTERED, "happy", "It is sad.", (1, "skip", 0)),               # ... right by accident
    (LETTERED, "sad", "<answer>-3</answer>", (1, "skip", 0)),        # options[-3] is "sad"
    (LETTERED, "sad", "<answer>4</answer>", (0, "skip", 0)),         # "4" is no option
    ({**LETTERED, "choice_b": "Sad"}, "sad", "<answer>1</answer>", (0, 0, 0)),  # answer differs in case
    ({**LETTERED, "choice_c": "sad"}, "sad", "<answer>2</answer>", (1, 1, 1)),  # duplicate: either letter
    ({**LETTERED, "choice_c": "sad"}, "sad", "<answer>1</answer>", (1, 1, 1)),
    ({"choice_a": "yes", "choice_b": "no", "choice_c": None, "choice_d": None}, "no", "<answer>2</answer>",
     (0, "skip", 0)),                                                 # paper: null choice_c reads "None"
    ({"choice_a": "  sad\n", "choice_b": "happy"}, "  sad\n", "<answer>0</answer>", (1, 1, 1)),
]


def test_mmsu(tmp_path):
    items = [{"id": i, "question": "Q?", **c, "answer_gt": a, "audio_path": "/a.wav", "model_response": r,
              "category": "perception", "sub-category": "emotion"} for i, (c, a, r, _) in enumerate(MMSU_CASES)]
    items, report = _fill_and_score(tmp_path, "mmsu", items)
    assert _outcomes(items) == _expected(MMSU_CASES)
    assert [it["model_prediction"] for it in items][-2:] == ["None", "  sad\n"]
    assert report["paper"]["total"]["correct"] == 6 and report["paper"]["total"]["count"] == 11
    assert report["official"]["total"] == {"correct": 4, "count": 6, "accuracy": round(400 / 6, 4)}
    assert report["answer_case_mismatch"] == [6]


# AIR-Bench: AIR-Bench's official script compares a letter with the FIRST letter whose option equals answer_gt and
# exits when there is none; the paper's replaces a prediction "None" by choice_a.
AIR_CASES = [
    (LETTERED, "sad", "<answer>1</answer>", (1, 1, 1)),
    (LETTERED, "sad", "no tag", (0, "skip", 0)),
    (LETTERED, "happy", "no tag", (1, "skip", 0)),
    (LETTERED, "neutral", "<answer>-1</answer>", (1, "skip", 0)),
    ({"choice_a": "yes", "choice_b": "no", "choice_c": None, "choice_d": None}, "yes", "<answer>2</answer>",
     (1, "skip", 0)),                                                 # "None" -> choice_a, right
    ({"choice_a": "yes", "choice_b": "no", "choice_c": None, "choice_d": None}, "no", "<answer>3</answer>",
     (0, "skip", 0)),                                                 # "None" -> choice_a, wrong
    ({"choice_a": "yes", "choice_b": "no"}, "no", "<answer>3</answer>", (0, "skip", 0)),  # keys absent: "3"
    ({"choice_a": "Yes", "choice_b": "None", "choice_c": "No"}, "None", "<answer>1</answer>", (0, 1, 1)),
    ({"choice_a": "dog", "choice_b": "dog", "choice_c": "cat"}, "dog", "<answer>1</answer>", (1, 0, 0)),  # 2nd copy
    ({"choice_a": "dog", "choice_b": "dog", "choice_c": "cat"}, "dog", "<answer>0</answer>", (1, 1, 1)),
    ({"choice_a": "Rising", "choice_b": "Falling"}, "rising", "<answer>0</answer>", (0, "error", 0)),  # exit(1)
    ({"choice_a": "Rising", "choice_b": "Falling"}, "rising", "no tag", (0, "skip", 0)),
]


def test_airbench(tmp_path):
    items = [{"uniq_id": i, "question": "Q?", **c, "answer_gt": a, "path": "a.wav", "model_response": r,
              "task_name": "Speaker_Emotion_Recontion", "dataset_name": "iemocap"}
             for i, (c, a, r, _) in enumerate(AIR_CASES)]
    items, report = _fill_and_score(tmp_path, "airbench", items)
    assert _outcomes(items) == _expected(AIR_CASES)
    assert report["official"]["script_errors"] == [
        {"id": 10, "reason": "answer_gt equals no option exactly (the script exits)"}]
    assert report["paper"]["script_errors"] == [] and report["answer_case_mismatch"] == [10, 11]
    assert report["paper"]["total"]["correct"] == 6 and report["paper"]["total"]["count"] == 12


def test_airbench_task_with_no_readable_response(tmp_path):
    """The upstream script lists the task, never counts an item of it, then fails printing its row (KeyError):
    reported as a script error of that task; the paper's script counts every item (option 0)."""
    def item(i, task, dataset, response):
        return {"uniq_id": i, **LETTERED, "answer_gt": "happy", "path": "x.wav", "task_name": task,
                "dataset_name": dataset, "model_response": response}
    items = [item(0, "Vocal_Sound_Classification", "VocalSound", "<answer>0</answer>"),
             item(1, "Music_AQA", "music_avqa", "I cannot tell"), item(2, "Music_AQA", "music_avqa", ""),
             item(3, "Music_AQA", "other", "<answer>1</answer>")]
    items, report = _fill_and_score(tmp_path, "airbench", items)
    assert report["official"]["script_errors"] == [{"task": "Music_AQA_music_avqa", "reason": (
        "no response of this task+dataset could be read (KeyError when the script prints its row)")}]
    assert report["official"]["skipped"] == {"unparseable_response": 2}
    assert report["paper"]["groups"]["task_name+dataset_name"]["Music_AQA_music_avqa"] == {
        "correct": 2, "count": 2, "accuracy": 100.0}
    assert "task+dataset 'Music_AQA_music_avqa'" in markdown_table(report)


def test_paper_averaging(tmp_path):
    """Totals pool items; MMSU also per category (pooled over its sub-categories) and per category and
    sub-category; AIR-Bench per task+dataset, per task (pooled over datasets), category means, average."""
    mmsu = [("perception", "emotion", "sad"), ("perception", "emotion", "happy"), ("perception", "pitch", "sad"),
            ("reasoning", "intent", "sad"), ("reasoning", "intent", "sad"), ("reasoning", "intent", "sad"),
            ("reasoning", "intent", "x")]
    items = [{"id": i, **LETTERED, "answer_gt": "sad", "audio_path": "a", "category": c, "sub-category": s,
              "model_prediction": p} for i, (c, s, p) in enumerate(mmsu)]
    items.append({"id": 99, **LETTERED, "answer_gt": "sad", "audio_path": "a", "model_prediction": "sad"})
    bench = get_benchmark("mmsu")
    paper = score(bench, load_items(_round_trip(tmp_path, "s.json", items), bench), "paper")["paper"]
    assert paper["total"] == {"correct": 6, "count": 8, "accuracy": 75.0}
    assert paper["groups"]["category"] == {  # the script's record.get("category", ""): no category is ""
        "": {"correct": 1, "count": 1, "accuracy": 100.0},
        "perception": {"correct": 2, "count": 3, "accuracy": round(200 / 3, 4)},
        "reasoning": {"correct": 3, "count": 4, "accuracy": 75.0}}
    assert paper["groups"]["category | sub-category"]["perception | emotion"]["accuracy"] == 50.0

    plan = [("Speaker_Emotion_Recontion", "iemocap", ["sad", "happy"]), ("Speaker_Emotion_Recontion", "meld",
            ["sad", "sad"]), ("Speech_Grounding", "librispeech", ["sad"]), ("Sound_AQA", "avqa", ["happy", "None"]),
            ("Music_AQA", "music_avqa", ["sad"])]
    items = [{"uniq_id": f"{t}{d}{k}", **LETTERED, "answer_gt": "sad", "path": "x", "task_name": t,
              "dataset_name": d, "model_prediction": p} for t, d, preds in plan for k, p in enumerate(preds)]
    bench = get_benchmark("airbench")
    paper = score(bench, load_items(_round_trip(tmp_path, "a.json", items), bench), "paper")["paper"]
    assert paper["groups"]["task_name+dataset_name"]["Speaker_Emotion_Recontion_iemocap"]["accuracy"] == 50.0
    assert paper["groups"]["task_name"]["Speaker_Emotion_Recontion"]["accuracy"] == 75.0  # 3/4, not (50+100)/2
    assert paper["groups"]["task_name"]["Sound_AQA"]["accuracy"] == 0.0  # "None" -> choice_a "happy"
    assert paper["category_means"] == {"speech": 87.5, "sound": 0.0, "music": 100.0}
    assert paper["average"] == 62.5 and paper["total"]["accuracy"] == round(100 * 5 / 8, 4)


def test_case_mismatch_is_accepted_with_a_warning_other_answers_refused(tmp_path, caplog):
    base = {"question": "Q?", "audio_path": "a", "choice_a": "Rising", "choice_b": "Falling"}
    path = _round_trip(tmp_path, "c.json", [{**base, "id": 1, "answer_gt": "rising"}])
    with caplog.at_level("WARNING"):
        load_items(path, get_benchmark("mmsu"))
    assert "1 item(s) whose answer_gt matches an option only up to case (first: 1, 'rising'" in caplog.text
    assert "never count them correct" in caplog.text
    path = _round_trip(tmp_path, "d.json", [{**base, "id": 1, "answer_gt": "rise"}])
    with pytest.raises(ValueError, match="answer_gt 'rise' is not one of the options"):
        load_items(path, get_benchmark("mmsu"))


def test_cli_fill_and_score_with_the_paper_protocol(tmp_path, capsys):
    items = [{"id": f"i{i}", "question": "Q?", "choices": DOGS, "answer": "dog barking", "task": "sound",
              "difficulty": "easy", "audio_id": "a.wav", "model_response": r}
             for i, r in enumerate(["<answer>0</answer>", "no idea", "<answer>2</answer>"])]
    raw, filled, report = tmp_path / "raw.json", tmp_path / "filled.json", tmp_path / "report.json"
    raw.write_text(json.dumps(items))
    assert main(["eval", "fill", "--benchmark", "mmau", "--input", str(raw), "--output", str(filled),
                 "--protocol", "paper"]) == 0
    out = capsys.readouterr().out
    assert f"model_prediction (published parsing): {{'{PAPER_INDEX}': 2, '{PAPER_NOT_INTEGER}': 1}}" in out
    assert [it["model_prediction"] for it in json.loads(filled.read_text())] == DOGS[:1] * 2 + DOGS[2:3]
    assert main(["eval", "score", "--benchmark", "mmau", "--input", str(filled), "--output", str(report),
                 "--protocol", "paper"]) == 0
    out = capsys.readouterr().out
    assert "| level | group | official (%) | paper (%) | strict (%) |" in out
    assert "| **total** | mmau | **33.33 (1/3)** | **66.67 (2/3)** | **33.33 (1/3)** |" in out
    saved = json.loads(report.read_text())
    assert list(saved)[:6] == ["benchmark", "items", "prediction_key", "official", "paper", "strict"]
    assert main(["eval", "score", "--benchmark", "mmau", "--input", str(filled), "--output", str(report)]) == 0
    assert "paper" not in json.loads(report.read_text())
    with pytest.raises(SystemExit) as stop:  # argparse: usage line and exit status 2
        main(["eval", "score", "--benchmark", "mmau", "--input", str(filled), "--output", str(report),
              "--protocol", "papers"])
    assert stop.value.code == 2 and "invalid choice: 'papers'" in capsys.readouterr().err


@pytest.mark.parametrize("name, filename", [("mmau", "mmau-test-mini.json"), ("mmar", "MMAR-meta.jsonl")])
def test_real_metadata_paper_fallbacks(name, filename):
    """On the real files: an index fills that option's text and scores as the official rule does; an unreadable
    answer is option 0 and "-1" the last option, right exactly when that option is (or, by the official rule's
    word sets, reads as) the answer. The exceptions list is the one test_eval_real_metadata.py checks."""
    from test_eval_real_metadata import ACCEPTED_WRONG_OPTIONS

    bench = get_benchmark(name)
    items = load_items(DATA / filename, bench)
    accepted = set(ACCEPTED_WRONG_OPTIONS[name])
    for response, last in [("<think>...</think> I cannot tell.", False), ("<answer>-1</answer>", True)]:
        filled = [copy.deepcopy(it) for it in items]
        for it in filled:
            fill_item(bench, it, response, "paper")
        report = score(bench, filled, "paper")
        for it in filled:
            i = len(it["choices"]) - 1 if last else 0
            assert it["model_prediction"] == it["choices"][i]
            right = it["choices"][i] == it["answer"] or (it["id"], i) in accepted
            assert it["paper_match"] == int(right), (it["id"], i)
        assert report["official"]["total"]["correct"] == 0  # "" everywhere: wrong, counted
    filled = [copy.deepcopy(it) for it in items]
    for k, it in enumerate(filled):
        fill_item(bench, it, f"<answer>{k % len(it['choices'])}</answer>", "paper")
    score(bench, filled, "paper")
    assert all(it["paper_match"] == it["official_match"] == it["match"] for it in filled)

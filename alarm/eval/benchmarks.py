"""Loaders and scorers for MMAU, MMSU, MMAR and AIR-Bench foundation in their official metadata formats.

Every benchmark file is a JSON list (or JSONL) of items in the benchmark's own schema with the model's
answer in ``model_prediction`` (the chosen option's *text*, as ``alarm.eval.mcqa`` produces it).

- MMAU (``task``, ``difficulty``, ``category``, ``sub-category``; ``choices``, ``answer``) and MMAR
  (``modality``, ``category``, ``sub-category``; ``choices``, ``answer``): string match. Words are
  lower-cased ``\\w+`` runs; a prediction is right when it contains every word of the answer and no word
  that belongs only to a wrong choice; an empty prediction is wrong.
- MMSU (``choice_a``..``choice_d``, ``answer_gt``, ``task_name``, ``category``, ``sub-category``) and
  AIR-Bench foundation (``choice_a``..``choice_d``, ``answer_gt``, ``task_name``, ``dataset_name``):
  exact match of the normalised texts (whitespace collapsed, case folded, trailing period dropped).

Unlike the official scripts, an item without ``model_prediction`` is not skipped: it counts as wrong
and is reported in ``missing_predictions`` (skipping inflates accuracy).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_WORD = re.compile(r"\b\w+\b")
PREDICTION_KEY = "model_prediction"


def words(text) -> set[str]:
    return set(_WORD.findall(str(text).lower()))


def string_match(answer: str, prediction: str, choices: list[str]) -> bool:
    """MMAU/MMAR rule: all answer words present, no word unique to a wrong choice, non-empty prediction."""
    pred, ans = words(prediction), words(answer)
    if not pred:
        return False
    wrong = set()
    for choice in choices:
        cw = words(choice)
        if cw != ans:
            wrong |= cw - ans
    return ans <= pred and pred.isdisjoint(wrong)


def normalize(text) -> str:
    return " ".join(str(text).split()).rstrip(".").casefold()


def exact_match(answer: str, prediction: str) -> bool:
    """MMSU/AIR-Bench rule: the normalised prediction equals the normalised answer (empty is wrong)."""
    p = normalize(prediction)
    return bool(p) and p == normalize(answer)


def _lettered_choices(item) -> list[str]:
    return [item[k] for k in ("choice_a", "choice_b", "choice_c", "choice_d") if item.get(k) not in (None, "")]


def _mmsu_answer(item) -> str:
    if "answer_gt" in item:
        return item["answer_gt"]
    ans = str(item["answer"]).strip()
    letters = {"A": "choice_a", "B": "choice_b", "C": "choice_c", "D": "choice_d"}
    return item[letters[ans.upper()]] if ans.upper() in letters else ans


_AIRBENCH_SOUND = {"Audio_Grounding", "Vocal_Sound_Classification", "Acoustic_Scene_Classification",
                   "Sound_Question_Answering"}


def _airbench_category(item) -> str:
    if item.get("category"):
        return item["category"]
    task = str(item.get("task_name", ""))
    if task.startswith("Music"):
        return "music"
    return "sound" if task in _AIRBENCH_SOUND else "speech"


@dataclass(frozen=True)
class Benchmark:
    """How to read one benchmark's items: required fields, options, answer, grouping levels, the match rule."""

    name: str
    required: tuple[str, ...]
    options: Callable[[dict], list]
    answer: Callable[[dict], str]
    levels: tuple[tuple[str, Callable[[dict], object]], ...]
    rule: str  # "string_match" | "exact_match"

    def is_correct(self, item: dict) -> bool:
        pred = item.get(PREDICTION_KEY)
        pred = "" if pred is None else str(pred)
        if self.rule == "string_match":
            return string_match(self.answer(item), pred, [str(c) for c in self.options(item)])
        return exact_match(self.answer(item), pred)


def _field(*names):
    def get(item):
        for n in names:
            if item.get(n) not in (None, ""):
                return item[n]
        return None
    return get


BENCHMARKS = {
    "mmau": Benchmark("mmau", ("choices", "answer", "task"), lambda it: list(it["choices"]), lambda it: it["answer"],
                      (("task", _field("task")), ("difficulty", _field("difficulty")),
                       ("category", _field("category")), ("sub-category", _field("sub-category", "sub_category"))),
                      "string_match"),
    "mmar": Benchmark("mmar", ("choices", "answer", "modality"), lambda it: list(it["choices"]),
                      lambda it: it["answer"],
                      (("modality", _field("modality")), ("category", _field("category")),
                       ("sub-category", _field("sub-category", "sub_category"))), "string_match"),
    "mmsu": Benchmark("mmsu", ("choice_a", "task_name"), _lettered_choices, _mmsu_answer,
                      (("task_name", _field("task_name")), ("category", _field("category")),
                       ("sub-category", _field("sub-category", "sub_category"))), "exact_match"),
    "airbench": Benchmark("airbench", ("choice_a", "answer_gt", "task_name"), _lettered_choices,
                          lambda it: it["answer_gt"],
                          (("task_name", _field("task_name")), ("category", _airbench_category),
                           ("dataset_name", _field("dataset_name"))), "exact_match"),
}
ALIASES = {"air-bench": "airbench", "airbench-foundation": "airbench", "air-bench-foundation": "airbench"}


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[key]


def load_items(path: str | Path, benchmark: Benchmark) -> list[dict]:
    """Read a JSON list or JSONL file of benchmark items, checking each has the benchmark's fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        where = [f"{path}: item {i}" for i in range(len(items))]
    else:
        items, where = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line: {e.msg}") from None
            where.append(f"{path}:{lineno}")
    for item, loc in zip(items, where, strict=True):
        if not isinstance(item, dict):
            raise ValueError(f"{loc}: expected a JSON object, got {type(item).__name__}")
        missing = [k for k in benchmark.required if k not in item]
        if missing:
            raise ValueError(f"{loc}: missing field(s) {missing} required by {benchmark.name}")
    return items


def _acc(correct: int, count: int) -> dict:
    return {"correct": correct, "count": count, "accuracy": round(100.0 * correct / count, 4) if count else 0.0}


def score(benchmark: Benchmark, items: list[dict]) -> dict:
    """Accuracy (percent) in total and per value of each grouping level; items are marked with ``match``."""
    groups: dict[str, dict[str, list[int]]] = {name: {} for name, _ in benchmark.levels}
    correct = missing = 0
    for item in items:
        ok = benchmark.is_correct(item)
        item["match"] = int(ok)
        correct += ok
        missing += item.get(PREDICTION_KEY) is None
        for name, get in benchmark.levels:
            value = get(item)
            if value is not None:
                cell = groups[name].setdefault(str(value), [0, 0])
                cell[0] += ok
                cell[1] += 1
    return {
        "benchmark": benchmark.name,
        "rule": benchmark.rule,
        "total": _acc(correct, len(items)),
        "missing_predictions": missing,
        "groups": {name: {v: _acc(*c) for v, c in sorted(cells.items())} for name, cells in groups.items() if cells},
    }


def markdown_table(report: dict) -> str:
    """The report as one markdown table: level, group, accuracy, correct/count."""
    rows = ["| level | group | accuracy (%) | correct / count |", "|---|---|---:|---:|"]
    for level, cells in report["groups"].items():
        for value, c in cells.items():
            rows.append(f"| {level} | {value} | {c['accuracy']:.2f} | {c['correct']} / {c['count']} |")
    t = report["total"]
    rows.append(f"| **total** | {report['benchmark']} | **{t['accuracy']:.2f}** | {t['correct']} / {t['count']} |")
    return "\n".join(rows)

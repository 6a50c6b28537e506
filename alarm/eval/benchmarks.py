"""MMAU, MMAR, MMSU and AIR-Bench foundation: loading, filling predictions, and scoring two ways.

Items stay in each benchmark's own metadata format (a JSON list, or JSONL):

| benchmark | id | options, answer | prediction key read by the official script |
|---|---|---|---|
| mmau | ``id`` | ``choices``, ``answer`` | ``model_output`` (option text) |
| mmar | ``id`` | ``choices``, ``answer`` | ``answer_prediction`` (option text) |
| mmsu | ``id`` | ``choice_a``..``choice_d``, ``answer_gt`` | ``response`` (option letter) |
| airbench | ``uniq_id`` | ``choice_a``..``choice_d``, ``answer_gt`` | ``response`` (option letter) |

``fill_item`` writes that key from a raw model response (kept under ``model_response``), so the official
scripts run unchanged on the project's files. ``score`` reports two numbers per group:

- **official**: what the benchmark's official script computes on the same file. MMAU/MMAR (string match:
  the prediction holds every word of the answer and no word found only in a wrong choice) skip items
  without the key. MMSU and AIR-Bench read a letter: the first character when it is A-D, else the
  second-to-last character when that is A-D ("(B)", "The answer is B."); AIR-Bench skips other responses
  (its ``fail_num``); MMSU skips unparseable and non-string responses, and scores an empty or "None"
  response with the letter of the last parsed response before it (a stale variable in its script). Items
  on which the official script would stop with an exception (a non-string MMAU/MMAR prediction, a missing
  or non-string AIR-Bench response, an empty MMSU response before any parsed one) are listed in
  ``script_errors`` and left out. Skipped items are counted per reason.
- **strict**: every item counts; the same matching rule; a missing, non-string or unparseable
  prediction is wrong.

AIR-Bench is also reported per task+dataset (the rows the official script prints), per task, per category
(mean of its tasks' accuracies) and as the leaderboard average (mean of the speech, sound and music means).

A malformed benchmark file is a ValueError naming the item: not a list of objects, empty, a duplicate or
missing id, options not a list of strings, a missing answer, an answer that is not one of the options, an
unknown AIR-Bench task, an MMAU task/difficulty or MMAR modality/category that its official script does not
know.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .mcqa import OK, parse_answer

RESPONSE_KEY = "model_response"
LETTERS = "ABCD"
MALFORMED_LETTER = "?"
_LETTER_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")
_WORD = re.compile(r"\b\w+\b")
_MISSING = object()

# AIR-Bench foundation task -> category (keys lower-case; the real task names, misspellings included,
# plus their corrected spellings)
AIRBENCH_TASKS = {
    **dict.fromkeys(["speech_grounding", "spoken_language_identification", "speaker_gender_recognition",
                     "speaker_emotion_recontion", "speaker_emotion_recognition", "speech_emotion_recognition",
                     "speaker_age_prediction", "speech_entity_reconition", "speech_entity_recognition",
                     "speaker_intent_classification", "intent_classification", "speaker_number_verification",
                     "synthesized_voice_detection"], "speech"),
    **dict.fromkeys(["audio_grounding", "vocal_sound_classification", "acoustic_scene_classification",
                     "sound_aqa", "sound_question_answering"], "sound"),
    **dict.fromkeys(["music_instruments_classfication", "music_instruments_classification",
                     "music_instrument_classification", "music_genre_recognition", "music_genre_classification",
                     "music_midi_pitch_analysis", "music_midi_velocity_analysis", "music_aqa",
                     "music_question_answering", "music_mood_recognition", "music_emotion_detection"], "music"),
}
AIRBENCH_CATEGORIES = ("speech", "sound", "music")
# grouping values the MMAU and MMAR official scripts hard-code (any other value makes them raise)
_FIXED_VALUES = {
    "mmau": {"task": {"sound", "music", "speech"}, "difficulty": {"easy", "medium", "hard"}},
    "mmar": {"modality": {"sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech",
                          "mix-sound-music-speech"},
             "category": {"Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer"}},
}


def words(text: str) -> set[str]:
    """Lower-cased ``\\w+`` tokens, as the MMAU/MMAR official scripts tokenize."""
    return set(_WORD.findall(text.lower()))


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


def official_letter(response: str) -> str | None:
    """MMSU/AIR-Bench letter rule on a string: first char if A-D, else second-to-last if A-D, else None."""
    p = response.strip().replace("\n", "")
    if not p or p == "None":
        return None
    if p[0] in LETTERS:
        return p[0]
    if len(p) > 1 and p[-2] in LETTERS:
        return p[-2]
    return None


def _airbench_category(item) -> str:
    return AIRBENCH_TASKS[str(item["task_name"]).lower()]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's schema: id key, option layout, official prediction key, grouping levels, audio path."""

    name: str
    id_key: str
    lettered: bool  # choice_a..choice_d + answer_gt (else choices + answer)
    official_key: str
    required: tuple[str, ...]
    levels: tuple[tuple[str, Callable[[dict], object]], ...]
    audio_path: Callable[[dict], str]

    def options(self, item: dict) -> list[str]:
        if self.lettered:
            return [item[k] for k in _LETTER_KEYS if item.get(k) not in (None, "")]
        return list(item["choices"])

    def answer(self, item: dict) -> str:
        return item["answer_gt"] if self.lettered else item["answer"]

    def answer_key(self) -> str:
        return "answer_gt" if self.lettered else "answer"


def _get(*names):
    def get(item):
        for n in names:
            if item.get(n) not in (None, ""):
                return item[n]
        return None
    return get


def _rel(path: str) -> str:
    """A metadata audio path made relative ("./a/b.wav" and "/a/b.wav" -> "a/b.wav")."""
    path = str(path)
    while path.startswith("./") or path.startswith("/"):
        path = path[2:] if path.startswith("./") else path[1:]
    return path


def _airbench_audio(item) -> str:
    path = f"{item['task_name']}_{item['dataset_name']}/{_rel(item['path'])}"
    return path[:-3] + "flac" if item["task_name"] == "Audio_Grounding" else path


BENCHMARKS = {
    "mmau": Benchmark("mmau", "id", False, "model_output", ("task", "difficulty", "audio_id"),
                      (("task", _get("task")), ("difficulty", _get("difficulty")), ("category", _get("category")),
                       ("sub-category", _get("sub-category"))), lambda it: _rel(it["audio_id"])),
    "mmar": Benchmark("mmar", "id", False, "answer_prediction", ("modality", "category", "audio_path"),
                      (("modality", _get("modality")), ("category", _get("category")),
                       ("sub-category", _get("sub-category"))), lambda it: _rel(it["audio_path"])),
    "mmsu": Benchmark("mmsu", "id", True, "response", ("audio_path",),
                      (("category", _get("category")), ("sub-category", _get("sub-category"))),
                      lambda it: _rel(it["audio_path"])),
    "airbench": Benchmark("airbench", "uniq_id", True, "response", ("task_name", "dataset_name", "path"),
                          (("task_name+dataset_name", lambda it: f"{it['task_name']}_{it['dataset_name']}"),
                           ("task_name", _get("task_name")), ("category", _airbench_category)), _airbench_audio),
}
ALIASES = {"air-bench": "airbench", "airbench-foundation": "airbench", "air-bench-foundation": "airbench"}


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[key]


def validate_items(bench: Benchmark, items: list, where: list[str]) -> None:
    """Raise a ValueError naming the first malformed item (rules in the module docstring)."""
    if not items:
        raise ValueError(f"{where[0] if where else 'benchmark file'}: no items")
    seen: dict = {}
    for item, loc in zip(items, where, strict=True):
        if not isinstance(item, dict):
            raise ValueError(f"{loc}: expected a JSON object, got {type(item).__name__}")
        missing = [k for k in (bench.id_key, bench.answer_key(), *bench.required) if k not in item]
        if missing:
            raise ValueError(f"{loc}: missing field(s) {missing} required by {bench.name}")
        iid = item[bench.id_key]
        if not isinstance(iid, (str, int)) or isinstance(iid, bool):
            raise ValueError(f"{loc}: {bench.id_key} must be a string or an integer, got {iid!r}")
        if str(iid) in seen:
            raise ValueError(f"{loc}: duplicate {bench.id_key} {iid!r} (first at {seen[str(iid)]})")
        seen[str(iid)] = loc
        if bench.lettered:
            if not isinstance(item.get("choice_a"), str) or not item["choice_a"]:
                raise ValueError(f"{loc}: choice_a must be a non-empty string")
            opts = [item[k] for k in _LETTER_KEYS if item.get(k) not in (None, "")]
        else:
            opts = item.get("choices")
            if not isinstance(opts, list):
                raise ValueError(f"{loc}: choices must be a list of strings, got {type(opts).__name__}")
        if not opts or not all(isinstance(o, str) for o in opts):
            raise ValueError(f"{loc}: options must be non-empty strings, got {opts!r}")
        ans = item[bench.answer_key()]
        if not isinstance(ans, str) or not ans:
            raise ValueError(f"{loc}: {bench.answer_key()} must be a non-empty string, got {ans!r}")
        if ans not in opts:
            raise ValueError(f"{loc}: {bench.answer_key()} {ans!r} is not one of the options {opts}")
        if bench.name == "airbench" and str(item["task_name"]).lower() not in AIRBENCH_TASKS:
            raise ValueError(f"{loc}: unknown AIR-Bench task {item['task_name']!r}")
        for field, allowed in _FIXED_VALUES.get(bench.name, {}).items():
            if item[field] not in allowed:
                raise ValueError(f"{loc}: {field} {item[field]!r} is not one of {sorted(allowed)} (the official "
                                 f"{bench.name} script only knows these)")


def read_items(path: str | Path) -> tuple[list, list[str]]:
    """A JSON list or JSONL file -> (items, a location string per item)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        return items, [f"{path}: item {i}" for i in range(len(items))] or [str(path)]
    items, where = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: malformed JSON line: {e.msg}") from None
        where.append(f"{path}:{lineno}")
    return items, where


def load_items(path: str | Path, bench: Benchmark) -> list[dict]:
    """Read and validate a benchmark file (ValueError naming the item when malformed)."""
    items, where = read_items(path)
    validate_items(bench, items, where or [str(path)])
    return items


def fill_item(bench: Benchmark, item: dict, response) -> str:
    """Parse ``response`` and write the official prediction key, ``model_response`` (the raw response),
    ``answer_status`` and ``answer_index``. Returns the status.

    The official key gets the option text (MMAU, MMAR; "" when malformed, which their scripts count as
    wrong) or the option letter (MMSU, AIR-Bench; ``"?"`` when malformed, which both scripts skip: an empty
    string would make the MMSU script reuse the previous item's letter)."""
    options = bench.options(item)
    parsed = parse_answer(response, options)
    item[RESPONSE_KEY] = response
    item["answer_status"] = parsed.status
    item["answer_index"] = parsed.index
    if parsed.status != OK:
        item[bench.official_key] = MALFORMED_LETTER if bench.lettered else ""
    elif bench.lettered:
        present = [k for k in _LETTER_KEYS if item.get(k) not in (None, "")]
        item[bench.official_key] = LETTERS[_LETTER_KEYS.index(present[parsed.index])]
    else:
        item[bench.official_key] = parsed.text
    return parsed.status


def _letter_correct(item: dict, letter: str) -> bool:
    return item.get(_LETTER_KEYS[LETTERS.index(letter)], "") == item["answer_gt"]


def _judge(bench: Benchmark, items: list[dict]) -> tuple[list, list, dict, dict, list]:
    """Per item: official verdict (True/False, or "skipped"/"script_error": not counted) and strict verdict;
    skip and malformed counts; ids of the script errors."""
    official, strict, skipped, malformed, errors = [], [], defaultdict(int), defaultdict(int), []
    stale = None  # MMSU's script reuses the last parsed letter for empty responses
    for item in items:
        iid = item[bench.id_key]
        value = item.get(bench.official_key, _MISSING)
        if value is _MISSING:
            malformed["missing"] += 1
        elif not isinstance(value, str):
            malformed["non_string"] += 1
        if bench.lettered:
            letter = official_letter(value) if isinstance(value, str) else None
            ok = letter is not None and _letter_correct(item, letter)
            if isinstance(value, str) and letter is None:
                malformed["unparseable"] += 1
        else:
            ok = isinstance(value, str) and string_match(bench.answer(item), value, bench.options(item))
            if isinstance(value, str) and not words(value):
                malformed["unparseable"] += 1
        strict.append(ok)
        verdict = "skipped"
        if bench.name in ("mmau", "mmar"):
            if value is _MISSING:
                skipped["no_prediction_key"] += 1
            elif not isinstance(value, str):
                errors.append(iid)
                verdict = "script_error"
            else:
                verdict = ok
        elif bench.name == "mmsu":
            raw = "" if value is _MISSING else value
            if not isinstance(raw, str):
                skipped["non_string_response"] += 1
            else:
                p = raw.strip().replace("\n", "")
                if p and p != "None":
                    if letter is None:
                        skipped["unparseable_response"] += 1
                    else:
                        stale, verdict = letter, ok
                elif stale is None:
                    errors.append(iid)
                    verdict = "script_error"
                else:
                    verdict = _letter_correct(item, stale)
        else:  # airbench
            if value is _MISSING or not isinstance(value, str):
                errors.append(iid)
                verdict = "script_error"
            elif letter is None:
                skipped["unparseable_response"] += 1
            else:
                verdict = ok
        official.append(verdict)
    return official, strict, dict(skipped), dict(malformed), errors


def _acc(correct: int, count: int) -> dict:
    return {"correct": correct, "count": count, "accuracy": round(100.0 * correct / count, 4) if count else None}


def _summary(bench: Benchmark, items: list[dict], verdicts: list) -> dict:
    counted = [(it, v) for it, v in zip(items, verdicts, strict=True) if isinstance(v, bool)]
    out = {"total": _acc(sum(v for _, v in counted), len(counted)), "groups": {}}
    for level, get in bench.levels:
        cells: dict = defaultdict(lambda: [0, 0])
        for it, v in counted:
            key = get(it)
            if key is not None:
                cells[str(key)][0] += v
                cells[str(key)][1] += 1
        out["groups"][level] = {k: _acc(*c) for k, c in sorted(cells.items())}
    if bench.name == "airbench":
        tasks: dict = defaultdict(list)
        for task, cell in out["groups"]["task_name"].items():
            if cell["count"]:
                tasks[AIRBENCH_TASKS[task.lower()]].append(cell["accuracy"])
        cats = {c: round(sum(v) / len(v), 4) for c in AIRBENCH_CATEGORIES if (v := tasks.get(c))}
        out["category_means"] = cats
        out["average"] = round(sum(cats.values()) / len(cats), 4) if cats else None
    return out


def score(bench: Benchmark, items: list[dict]) -> dict:
    """Official and strict accuracies (percent) in total and per group. Items get ``match`` (strict 0/1) and
    ``official_match`` (0/1, or "skipped" / "script_error" for items the official script does not count)."""
    official, strict, skipped, malformed, errors = _judge(bench, items)
    for item, ok, off in zip(items, strict, official, strict=True):
        item["match"] = int(ok)
        item["official_match"] = int(off) if isinstance(off, bool) else off
    return {
        "benchmark": bench.name, "items": len(items), "prediction_key": bench.official_key,
        "official": {**_summary(bench, items, official), "skipped": skipped, "script_errors": errors},
        "strict": {**_summary(bench, items, strict), "malformed": malformed},
    }


def _fmt(cell: dict | None) -> str:
    if not cell or cell["accuracy"] is None:
        return "-"
    return f"{cell['accuracy']:.2f} ({cell['correct']}/{cell['count']})"


def markdown_table(report: dict) -> str:
    """The report as a markdown table, official and strict side by side, plus the skip/malformed notes."""
    off, st = report["official"], report["strict"]
    rows = ["| level | group | official (%) | strict (%) |", "|---|---|---:|---:|"]
    for level, cells in st["groups"].items():
        for value, cell in cells.items():
            rows.append(f"| {level} | {value} | {_fmt(off['groups'][level].get(value))} | {_fmt(cell)} |")
    if "category_means" in st:
        for cat in AIRBENCH_CATEGORIES:
            o, s = off["category_means"].get(cat), st["category_means"].get(cat)
            rows.append(f"| category mean | {cat} | {'-' if o is None else f'{o:.2f}'} | "
                        f"{'-' if s is None else f'{s:.2f}'} |")
        o, s = off["average"], st["average"]
        rows.append(f"| **leaderboard average** | {report['benchmark']} | **{'-' if o is None else f'{o:.2f}'}** | "
                    f"**{'-' if s is None else f'{s:.2f}'}** |")
    rows.append(f"| **total** | {report['benchmark']} | **{_fmt(off['total'])}** | **{_fmt(st['total'])}** |")
    notes = [f"official: skipped {sum(off['skipped'].values())} item(s) {off['skipped'] or ''}".rstrip(),
             f"official: {len(off['script_errors'])} item(s) on which the official script would stop with an error"
             + (f" (first: {off['script_errors'][0]!r})" if off["script_errors"] else ""),
             f"strict: {sum(st['malformed'].values())} malformed prediction(s) counted as wrong {st['malformed'] or ''}"
             .rstrip()]
    return "\n".join(rows) + "\n\n" + "\n".join(notes)

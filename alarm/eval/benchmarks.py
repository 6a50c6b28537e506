"""MMAU, MMAR, MMSU and AIR-Bench foundation: loading, filling predictions, and scoring three ways.

Items stay in each benchmark's own metadata format (a JSON list, or JSONL):

| benchmark | id | options, answer | prediction key read by the official script |
|---|---|---|---|
| mmau | ``id`` | ``choices``, ``answer`` | ``model_output`` (option text) |
| mmar | ``id`` | ``choices``, ``answer`` | ``answer_prediction`` (option text) |
| mmsu | ``id`` | ``choice_a``..``choice_d``, ``answer_gt`` | ``response`` (option letter) |
| airbench | ``uniq_id`` | ``choice_a``..``choice_d``, ``answer_gt`` | ``response`` (option letter) |

``fill_item`` writes that key from a raw model response (kept under ``model_response``), so the official
scripts run unchanged on the project's files; with ``protocol="paper"`` it also writes ``model_prediction``,
the key the ALARM repository's own copies of the scripts read, parsed as the published evaluation parses
(``mcqa.parse_answer_paper``). ``score`` reports per group:

- **official**: what the benchmark's upstream official script computes on the same file. MMAU/MMAR (string
  match: the prediction holds every word of the answer and no word found only in a wrong choice) skip
  items without the key. MMSU and AIR-Bench read a letter: the first character when it is A-D, else the
  second-to-last character when that is A-D ("(B)", "The answer is B."); AIR-Bench skips other responses
  (its ``fail_num``); MMSU skips unparseable and non-string responses, and scores an empty or "None"
  response with the letter of the last parsed response before it (a stale variable in its script). MMSU
  counts a letter right when that letter's option equals ``answer_gt``; AIR-Bench compares it with the
  first letter whose option equals ``answer_gt`` (so the second copy of a duplicated option is wrong).
  Items on which the official script would stop (a non-string MMAU/MMAR prediction, a missing or
  non-string AIR-Bench response, an AIR-Bench letter on an item whose ``answer_gt`` equals no option
  exactly (``exit(1)``), an empty MMSU response before any parsed one) are listed in ``script_errors``
  and left out; so is an AIR-Bench task+dataset none of whose responses could be read (the script fails
  with a KeyError when it prints that row). Skipped items are counted per reason.
- **paper** (``protocol="paper"``): what the ALARM repository's copies (``scripts/benchmarks/evaluation``)
  compute from ``model_prediction``. MMAU/MMAR: the upstream rule on that key. MMSU: the prediction and
  ``answer_gt``, each as ``str`` without surrounding whitespace and newlines, are equal; every item
  counts, a missing key reads as "". AIR-Bench: the same equality, after a prediction "None" is replaced
  by ``choice_a``; every item counts; a missing key stops the script.
- **strict**: every item counts; the upstream matching rule; a missing, non-string or unparseable
  prediction is wrong.

Totals are over items (micro averages) in every protocol, as in every script. MMSU is also reported per
category and per category and sub-category, AIR-Bench per task+dataset (the rows its scripts print), per
task (the numbers the paper's script returns), per category (mean of its tasks' accuracies) and as the
leaderboard average (mean of the speech, sound and music means; this last step is in no published script).

A file none of whose items has a gold answer key (MMAU test: its answers are withheld and scored by the
benchmark's evaluation server) is accepted by ``fill`` and ``alarm eval run``, which write its predictions
unscored (``answers_withheld``); ``score`` refuses it.

A malformed benchmark file is a ValueError naming the item: not a list of objects, empty, a duplicate or
missing id, options not a list of strings, a missing answer (in a file where other items have one), an
answer that is not one of the options even up to case, an unknown AIR-Bench task, an MMAU task/difficulty
or MMAR modality/category that its official script does not know. An answer that matches an option only up
to case (MMSU "rising" vs "Rising") is accepted with a warning and scored as the scripts score it (never
correct by a letter or exact text; the MMAU/MMAR string match ignores case); ``score`` lists those items in
``answer_case_mismatch``.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .mcqa import OK, parse_answer, parse_answer_paper

RESPONSE_KEY = "model_response"
PAPER_KEY = "model_prediction"  # the prediction key of the ALARM repository's scoring scripts
PAPER_PARSE_KEY = "paper_parse"  # how parse_answer_paper reached the prediction
PROTOCOLS = ("official", "paper")
LETTERS = "ABCD"
MALFORMED_LETTER = "?"
_LETTER_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")
_WORD = re.compile(r"\b\w+\b")
_MISSING = object()
_log = logging.getLogger(__name__)

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


def _clean(value) -> str:
    """``str(value)`` without surrounding whitespace, then without newlines (the MMSU/AIR-Bench scripts')."""
    return str(value).strip().replace("\n", "")


def official_letter(response: str) -> str | None:
    """MMSU/AIR-Bench letter rule on a string: first char if A-D, else second-to-last if A-D, else None."""
    p = _clean(response)
    if not p or p == "None":
        return None
    if p[0] in LETTERS:
        return p[0]
    if len(p) > 1 and p[-2] in LETTERS:
        return p[-2]
    return None


def _airbench_category(item) -> str:
    return AIRBENCH_TASKS[str(item["task_name"]).lower()]


def _task_id(item: dict) -> str:
    """AIR-Bench's task+dataset key (``<task_name>_<dataset_name>``), also its audio folder."""
    return f"{item['task_name']}_{item['dataset_name']}"


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
        """The options shown to the model: ``choices``, or the non-empty ``choice_a``..``choice_d``."""
        if self.lettered:
            return [item[k] for k in _LETTER_KEYS if item.get(k) not in (None, "")]
        return list(item["choices"])

    def paper_options(self, item: dict) -> list[str]:
        """The published ALARM evaluation's option list: ``choices``, or every ``choice_a``..``choice_d`` key
        present, each as ``str`` (a null choice reads "None")."""
        if self.lettered:
            return [str(item[k]) for k in _LETTER_KEYS if k in item]
        return [str(c) for c in item["choices"]]

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
    path = f"{_task_id(item)}/{_rel(item['path'])}"
    return path[:-3] + "flac" if item["task_name"] == "Audio_Grounding" else path


BENCHMARKS = {
    "mmau": Benchmark("mmau", "id", False, "model_output", ("task", "difficulty", "audio_id"),
                      (("task", _get("task")), ("difficulty", _get("difficulty")), ("category", _get("category")),
                       ("sub-category", _get("sub-category"))), lambda it: _rel(it["audio_id"])),
    "mmar": Benchmark("mmar", "id", False, "answer_prediction", ("modality", "category", "audio_path"),
                      (("modality", _get("modality")), ("category", _get("category")),
                       ("sub-category", _get("sub-category"))), lambda it: _rel(it["audio_path"])),
    "mmsu": Benchmark("mmsu", "id", True, "response", ("audio_path",),  # grouped as its script: get(key, "")
                      (("category", lambda it: str(it.get("category", ""))),
                       ("category | sub-category", lambda it: f"{it.get('category', '')} | "
                                                              f"{it.get('sub-category', '')}")),
                      lambda it: _rel(it["audio_path"])),
    "airbench": Benchmark("airbench", "uniq_id", True, "response", ("task_name", "dataset_name", "path"),
                          (("task_name+dataset_name", _task_id),
                           ("task_name", _get("task_name")), ("category", _airbench_category)), _airbench_audio),
}
ALIASES = {"air-bench": "airbench", "airbench-foundation": "airbench", "air-bench-foundation": "airbench"}


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[key]


def answers_withheld(bench: Benchmark, items: list) -> bool:
    """True when no item has the gold answer key (a test split whose answers are withheld, as MMAU test's)."""
    return all(isinstance(it, dict) and bench.answer_key() not in it for it in items)


def validate_items(bench: Benchmark, items: list, where: list[str]) -> None:
    """Raise a ValueError naming the first malformed item (rules in the module docstring)."""
    if not items:
        raise ValueError(f"{where[0] if where else 'benchmark file'}: no items")
    seen: dict = {}
    withheld = answers_withheld(bench, items)
    for item, loc in zip(items, where, strict=True):
        if not isinstance(item, dict):
            raise ValueError(f"{loc}: expected a JSON object, got {type(item).__name__}")
        keys = (bench.id_key, *(() if withheld else (bench.answer_key(),)), *bench.required)
        missing = [k for k in keys if k not in item]
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
        if withheld:
            continue
        ans = item[bench.answer_key()]
        if not isinstance(ans, str) or not ans:
            raise ValueError(f"{loc}: {bench.answer_key()} must be a non-empty string, got {ans!r}")
        if ans not in opts and ans.casefold() not in {o.casefold() for o in opts}:
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


def answer_case_mismatch(bench: Benchmark, items: list[dict]) -> list:
    """Ids of the (validated) items whose answer matches an option only up to case."""
    return [it[bench.id_key] for it in items if bench.answer(it) not in bench.options(it)]


def load_items(path: str | Path, bench: Benchmark) -> list[dict]:
    """Read and validate a benchmark file (ValueError naming the item when malformed); log a warning for
    answers that match an option only up to case."""
    items, where = read_items(path)
    validate_items(bench, items, where or [str(path)])
    if answers_withheld(bench, items):
        _log.warning("%s: no item has a gold %r (answers withheld): predictions are written, not scored", path,
                     bench.answer_key())
        return items
    odd = answer_case_mismatch(bench, items)
    if odd:
        first = next(it for it in items if it[bench.id_key] == odd[0])
        effect = ("the official and paper scripts never count them correct" if bench.lettered else
                  "the string match ignores case, so they are scored normally")
        _log.warning("%s: %d item(s) whose %s matches an option only up to case (first: %r, %r vs options %s); "
                     "%s", path, len(odd), bench.answer_key(), odd[0], bench.answer(first), bench.options(first),
                     effect)
    return items


def fill_item(bench: Benchmark, item: dict, response, protocol: str = "official") -> str:
    """Parse ``response`` and write the official prediction key, ``model_response`` (the raw response),
    ``answer_status`` and ``answer_index``. Returns the status.

    The official key gets the option text (MMAU, MMAR; "" when malformed, which their scripts count as
    wrong) or the option letter (MMSU, AIR-Bench; ``"?"`` when malformed, which both scripts skip: an empty
    string would make the MMSU script reuse the previous item's letter). With ``protocol="paper"``,
    ``model_prediction`` and ``paper_parse`` get ``parse_answer_paper`` of ``paper_options``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if protocol == "paper":
        paper = parse_answer_paper(response, bench.paper_options(item))
        item[PAPER_KEY] = paper.text
        item[PAPER_PARSE_KEY] = paper.rule
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


def _airbench_gold_letter(item: dict) -> str | None:
    """The letter AIR-Bench's official script compares with: the first of A-D whose option equals answer_gt."""
    return next((letter for letter, key in zip(LETTERS, _LETTER_KEYS, strict=True)
                 if item.get(key) == item["answer_gt"]), None)


def _letter_correct(bench: Benchmark, item: dict, letter: str) -> bool:
    """The upstream letter rule: MMSU, the letter's option equals answer_gt; AIR-Bench, it is the first such."""
    if bench.name == "airbench":
        return letter == _airbench_gold_letter(item)
    return item.get(_LETTER_KEYS[LETTERS.index(letter)]) == item["answer_gt"]


class _Tally:
    """One protocol's per-item verdicts: True/False (counted), "skipped" or "script_error" (left out), with
    skip counts per reason and the script errors ({"id" or "task": ..., "reason": ...})."""

    def __init__(self):
        self.verdicts: list = []
        self.skipped: dict = defaultdict(int)
        self.errors: list[dict] = []

    def count(self, ok: bool) -> None:
        self.verdicts.append(bool(ok))

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1
        self.verdicts.append("skipped")

    def error(self, iid, reason: str) -> None:
        self.errors.append({"id": iid, "reason": reason})
        self.verdicts.append("script_error")


def _string_verdict(tally: _Tally, bench: Benchmark, item: dict, key: str) -> None:
    """The MMAU/MMAR scripts on one item: no key is skipped, a non-string stops the script."""
    value = item.get(key, _MISSING)
    if value is _MISSING:
        tally.skip("no_prediction_key")
    elif not isinstance(value, str):
        tally.error(item[bench.id_key], f"{key} is not a string")
    else:
        tally.count(string_match(bench.answer(item), value, bench.options(item)))


def _official(bench: Benchmark, items: list[dict]) -> _Tally:
    """What the upstream official script counts (rules in the module docstring)."""
    tally, stale = _Tally(), None  # MMSU's script reuses the last parsed letter for empty responses
    for item in items:
        iid, value = item[bench.id_key], item.get(bench.official_key, _MISSING)
        if not bench.lettered:
            _string_verdict(tally, bench, item, bench.official_key)
        elif bench.name == "mmsu":
            raw = "" if value is _MISSING else value
            if not isinstance(raw, str):
                tally.skip("non_string_response")
            elif (letter := official_letter(raw)) is not None:
                stale = letter
                tally.count(_letter_correct(bench, item, letter))
            elif _clean(raw) not in ("", "None"):
                tally.skip("unparseable_response")
            elif stale is None:
                tally.error(iid, "empty or None response before any parsed one (NameError in the script)")
            else:
                tally.count(_letter_correct(bench, item, stale))
        elif value is _MISSING or not isinstance(value, str):
            tally.error(iid, "response missing or not a string")
        elif (letter := official_letter(value)) is None:
            tally.skip("unparseable_response")
        elif _airbench_gold_letter(item) is None:
            tally.error(iid, "answer_gt equals no option exactly (the script exits)")
        else:
            tally.count(letter == _airbench_gold_letter(item))
    if bench.name == "airbench":  # a task+dataset with no counted item: KeyError when the script prints its row
        read: dict = {}
        for item, verdict in zip(items, tally.verdicts, strict=True):
            read[_task_id(item)] = read.get(_task_id(item), False) or isinstance(verdict, bool)
        tally.errors += [{"task": task, "reason": "no response of this task+dataset could be read (KeyError when "
                                                  "the script prints its row)"} for task, ok in read.items() if not ok]
    return tally


def _paper(bench: Benchmark, items: list[dict]) -> _Tally:
    """What the ALARM repository's copies of the scripts count from ``model_prediction``."""
    tally = _Tally()
    for item in items:
        value = item.get(PAPER_KEY, _MISSING)
        if not bench.lettered:
            _string_verdict(tally, bench, item, PAPER_KEY)
        elif bench.name == "mmsu":
            tally.count(_clean("" if value is _MISSING else value) == _clean(item["answer_gt"]))
        elif value is _MISSING:
            tally.error(item[bench.id_key], f"no {PAPER_KEY} (KeyError in the script)")
        else:
            prediction = _clean(value)
            if prediction == "None":  # the script's fallback: an unusable answer becomes the first option
                prediction = _clean(item["choice_a"])
            tally.count(prediction == _clean(item["answer_gt"]))
    return tally


def _strict(bench: Benchmark, items: list[dict]) -> tuple[list[bool], dict]:
    """Every item counted with the upstream matching rule; malformed predictions (wrong) counted per kind."""
    verdicts, malformed = [], defaultdict(int)
    for item in items:
        value = item.get(bench.official_key, _MISSING)
        ok = False
        if value is _MISSING:
            malformed["missing"] += 1
        elif not isinstance(value, str):
            malformed["non_string"] += 1
        elif bench.lettered:
            letter = official_letter(value)
            malformed["unparseable"] += letter is None
            ok = letter is not None and _letter_correct(bench, item, letter)
        else:
            malformed["unparseable"] += not words(value)
            ok = string_match(bench.answer(item), value, bench.options(item))
        verdicts.append(ok)
    return verdicts, {k: v for k, v in malformed.items() if v}


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


def _section(bench: Benchmark, items: list[dict], tally: _Tally) -> dict:
    return {**_summary(bench, items, tally.verdicts), "skipped": dict(tally.skipped), "script_errors": tally.errors}


def score(bench: Benchmark, items: list[dict], protocol: str = "official") -> dict:
    """Accuracies (percent) in total and per group: official and strict, plus paper with ``protocol="paper"``.
    Items get ``match`` (strict 0/1), ``official_match`` and with paper ``paper_match`` (0/1, or "skipped" /
    "script_error" for items that script does not count)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if answers_withheld(bench, items):
        raise ValueError(f"no item has a gold {bench.answer_key()!r} (answers withheld, as for MMAU test): nothing "
                         "to score here; submit the predictions to the benchmark's evaluation server")
    official = _official(bench, items)
    strict, malformed = _strict(bench, items)
    report = {"benchmark": bench.name, "items": len(items), "prediction_key": bench.official_key,
              "official": _section(bench, items, official)}
    marks = {"official_match": official.verdicts}
    if protocol == "paper":
        paper = _paper(bench, items)
        parsed = Counter(it[PAPER_PARSE_KEY] for it in items if PAPER_PARSE_KEY in it)
        report["paper"] = {**_section(bench, items, paper), "prediction_key": PAPER_KEY,
                           "parse": dict(sorted(parsed.items()))}
        marks["paper_match"] = paper.verdicts
    report["strict"] = {**_summary(bench, items, strict), "malformed": malformed}
    report["answer_case_mismatch"] = answer_case_mismatch(bench, items)
    for i, item in enumerate(items):
        item["match"] = int(strict[i])
        item.pop("paper_match", None)
        for key, verdicts in marks.items():
            item[key] = int(verdicts[i]) if isinstance(verdicts[i], bool) else verdicts[i]
    return report


def _fmt(cell: dict | None) -> str:
    if not cell or cell["accuracy"] is None:
        return "-"
    return f"{cell['accuracy']:.2f} ({cell['correct']}/{cell['count']})"


def _pct(value: float | None, bold: bool = False) -> str:
    text = "-" if value is None else f"{value:.2f}"
    return f"**{text}**" if bold else text


def _first_error(err: dict) -> str:
    return f"{err['id']!r}" if "id" in err else f"task+dataset {err['task']!r}"


def markdown_table(report: dict) -> str:
    """The report as a markdown table, official (paper) and strict side by side, plus the notes on skipped,
    script-stopping, malformed and case-mismatched items."""
    cols = [c for c in ("official", "paper", "strict") if c in report]
    rows = ["| level | group | " + " | ".join(f"{c} (%)" for c in cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for level, cells in report["strict"]["groups"].items():
        for value in cells:
            rows.append(f"| {level} | {value} | " + " | ".join(_fmt(report[c]["groups"][level].get(value))
                                                              for c in cols) + " |")
    if "category_means" in report["strict"]:
        for cat in AIRBENCH_CATEGORIES:
            rows.append(f"| category mean | {cat} | " + " | ".join(_pct(report[c]["category_means"].get(cat))
                                                                  for c in cols) + " |")
        rows.append(f"| **leaderboard average** | {report['benchmark']} | "
                    + " | ".join(_pct(report[c]["average"], bold=True) for c in cols) + " |")
    rows.append(f"| **total** | {report['benchmark']} | " + " | ".join(f"**{_fmt(report[c]['total'])}**"
                                                                       for c in cols) + " |")
    notes = []
    for c in cols[:-1]:
        sec = report[c]
        notes.append(f"{c}: skipped {sum(sec['skipped'].values())} item(s) {sec['skipped'] or ''}".rstrip())
        errors = sec["script_errors"]
        notes.append(f"{c}: {len(errors)} item(s) or task(s) on which the {c} script would stop with an error"
                     + (f" (first: {_first_error(errors[0])}: {errors[0]['reason']})" if errors else ""))
    if report.get("paper", {}).get("parse"):
        notes.append(f"paper: answers read as {report['paper']['parse']}")
    st = report["strict"]
    notes.append(f"strict: {sum(st['malformed'].values())} malformed prediction(s) counted as wrong "
                 f"{st['malformed'] or ''}".rstrip())
    if report.get("answer_case_mismatch"):
        odd = report["answer_case_mismatch"]
        notes.append(f"warning: {len(odd)} item(s) whose gold answer matches an option only up to case "
                     f"(first: {odd[0]!r})")
    return "\n".join(rows) + "\n\n" + "\n".join(notes)

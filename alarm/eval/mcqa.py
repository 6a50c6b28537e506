"""Multiple-choice QA prompting and answer parsing.

The prompts are the published ALARM evaluation's (``alarm.prompts``): options listed as ``(Option_i) text``
(0-based) and the answer asked for as the option number inside ``<answer></answer>``. ``parse_answer``
maps a response back to one option, deterministically:

1. Read the content of the last ``<answer>...</answer>`` after the last ``</think>`` (tags any case).
2. A number, optionally written ``(2)``, ``[2]``, ``2.``, ``Option 2``, ``Option_2`` or ``(Option_2)`` and
   optionally followed by exactly that option's text, is an option *index* when it is in range. This holds
   even when an option's text is itself a number (options ``["2", "3", "4", "5"]``: ``<answer>3</answer>``
   is option 3, "5"), because the prompt asks for the index and the published evaluation reads it so.
3. A number out of range is the option whose text is that number, when exactly one is (the published
   evaluation also falls back to the number as the answer text); otherwise it is malformed.
4. Otherwise the content must equal one option's text: exactly (surrounding whitespace aside) first, so
   ``yes`` against ``["Yes.", "yes"]`` is "yes"; then with whitespace, case and a final period ignored,
   when that names one option text (``YES`` against ``["Yes.", "yes"]`` is ambiguous). Options with
   identical texts count as one (the first).

Anything else is malformed: no prediction and a status saying why, never silently option 0.

``parse_answer_paper`` is the published ALARM evaluation's own reading (``generate_vllm_mcqa.py`` of the
ALARM repository), kept separately for ``--protocol paper``:

1. The text after the last ``<answer>`` (the whole response when there is none; the tag is case-sensitive
   and the thinking is not skipped), cut at the first ``</answer>``, surrounding whitespace removed.
2. That text read as a Python integer (``int()``: a sign, Unicode digits and ``_`` separators allowed), or
   0 when it is not one (``"(1)"``, ``"1."``, ``"Option_1"``, ``""`` all become option 0).
3. The option at that Python index: negative numbers count from the end; a number outside
   ``[-len, len)`` becomes its own decimal text (``"7"``), which is not an option.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from alarm.prompts import mcqa_prompts

OK, EMPTY, NO_TAG, NOT_INDEX, OUT_OF_RANGE, NON_STRING, AMBIGUOUS = (
    "ok", "empty", "no_answer_tag", "not_an_index", "out_of_range", "not_a_string", "ambiguous_text")
# how parse_answer_paper reached its option (PaperAnswer.rule)
PAPER_INDEX, PAPER_NEGATIVE_INDEX, PAPER_NOT_INTEGER, PAPER_OUT_OF_RANGE, PAPER_NOT_STRING = (
    "index", "negative_index", "not_an_integer_option_0", "out_of_range_number_text", "not_a_string_option_0")

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_INDEX_RE = re.compile(r"^[(\[]?\s*(?:(?:option|choice)[\s_]*)?[(\[]?\s*(\d+)\s*[)\]]?\s*[.:)]?\s*(.*)$",
                       re.IGNORECASE | re.DOTALL)


def build_messages(question: str, options: Sequence[str], style: str = "published") -> list[dict]:
    """Chat messages (system + user) for one question; the audio is spliced in by the model."""
    system, user = mcqa_prompts(question, options, style)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class ParsedAnswer:
    """``index``/``text`` are None unless ``status == "ok"``; ``raw`` is the text inside the answer tags."""

    status: str
    index: int | None = None
    text: str | None = None
    raw: str = ""


def _norm(text) -> str:
    return " ".join(str(text).split()).rstrip(".").casefold()


def _by_text(options: Sequence[str], text: str) -> int | str | None:
    """The first option whose text is ``text`` exactly (surrounding whitespace aside), else the first whose
    normalised text is, when all such options have one text; AMBIGUOUS when they have several; else None."""
    exact = [i for i, opt in enumerate(options) if str(opt).strip() == text.strip()]
    if exact:
        return exact[0]
    hits = [i for i, opt in enumerate(options) if _norm(opt) == _norm(text)]
    if not hits:
        return None
    return hits[0] if len({str(options[i]).strip() for i in hits}) == 1 else AMBIGUOUS


def parse_answer(response, options: Sequence[str]) -> ParsedAnswer:
    """Parse a model response into one of ``options`` (the rules are in the module docstring)."""
    if response is None:
        return ParsedAnswer(EMPTY)
    if not isinstance(response, str):
        return ParsedAnswer(NON_STRING)
    if not response.strip():
        return ParsedAnswer(EMPTY)
    visible = response.rsplit("</think>", 1)[-1]
    found = _ANSWER_RE.findall(visible)
    if not found:
        return ParsedAnswer(NO_TAG)
    raw = found[-1].strip()
    if not raw:
        return ParsedAnswer(EMPTY, raw=raw)
    m = _INDEX_RE.match(raw)
    if m:
        idx, rest = int(m.group(1)), m.group(2)
        if 0 <= idx < len(options) and (not _norm(rest) or _norm(rest) == _norm(options[idx])):
            return ParsedAnswer(OK, idx, str(options[idx]), raw)
        if not _norm(rest):
            named = _by_text(options, m.group(1))
            if isinstance(named, int):
                return ParsedAnswer(OK, named, str(options[named]), raw)
            return ParsedAnswer(AMBIGUOUS if named == AMBIGUOUS else OUT_OF_RANGE, raw=raw)
    named = _by_text(options, raw)
    if isinstance(named, int):
        return ParsedAnswer(OK, named, str(options[named]), raw)
    return ParsedAnswer(AMBIGUOUS if named == AMBIGUOUS else NOT_INDEX, raw=raw)


@dataclass(frozen=True)
class PaperAnswer:
    """The published evaluation's reading: ``text`` is what it stores as the prediction (an option's text,
    or a number's text when out of range); ``index`` the option (None when out of range); ``rule`` how."""

    text: str
    index: int | None
    rule: str
    raw: str = ""


def parse_answer_paper(response, options: Sequence[str]) -> PaperAnswer:
    """The published ALARM evaluation's answer parsing (rules in the module docstring). ``options`` are read
    as ``str``. A non-string response (never produced by a generator) is read as no answer: option 0."""
    options = [str(o) for o in options]
    if not isinstance(response, str):
        return PaperAnswer(options[0], 0, PAPER_NOT_STRING)
    raw = response.split("<answer>")[-1].split("</answer>")[0].strip()
    try:
        number = int(raw)
    except ValueError:
        return PaperAnswer(options[0], 0, PAPER_NOT_INTEGER, raw)
    if 0 <= number < len(options):
        return PaperAnswer(options[number], number, PAPER_INDEX, raw)
    if -len(options) <= number < 0:
        return PaperAnswer(options[number], len(options) + number, PAPER_NEGATIVE_INDEX, raw)
    return PaperAnswer(str(number), None, PAPER_OUT_OF_RANGE, raw)

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
4. Otherwise the content must equal one option's text (whitespace, case and a final period ignored);
   options with identical texts count as one.

Anything else is malformed: no prediction and a status saying why, never silently option 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from alarm.prompts import mcqa_prompts

OK, EMPTY, NO_TAG, NOT_INDEX, OUT_OF_RANGE, NON_STRING = (
    "ok", "empty", "no_answer_tag", "not_an_index", "out_of_range", "not_a_string")

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


def _by_text(options: Sequence[str], text: str) -> int | None:
    hits = [i for i, opt in enumerate(options) if _norm(opt) == _norm(text)]
    return hits[0] if hits and len({_norm(options[i]) for i in hits}) == 1 else None


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
            if named is not None:
                return ParsedAnswer(OK, named, str(options[named]), raw)
            return ParsedAnswer(OUT_OF_RANGE, raw=raw)
    named = _by_text(options, raw)
    if named is not None:
        return ParsedAnswer(OK, named, str(options[named]), raw)
    return ParsedAnswer(NOT_INDEX, raw=raw)

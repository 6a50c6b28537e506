"""Multiple-choice QA prompting and answer parsing (docs/model.md, "Inference and evaluation").

The model is asked for the 0-based index of its chosen option inside ``<answer></answer>``; the index is
mapped back to the option text, which is what the benchmark scorers compare. A response that does not
name a valid option is recorded as malformed (empty prediction plus a status), never mapped to option 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are listening to an audio clip and will answer a multiple-choice question about it. "
    "Think it through, then reply with only the number of the correct option inside <answer></answer>, "
    "for example <answer>2</answer>."
)

OK, EMPTY, NO_TAG, NOT_INDEX, OUT_OF_RANGE = "ok", "empty", "no_answer_tag", "not_an_index", "out_of_range"

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
# "2", "(2)", "[2]", "2.", "2)", "option 2", optionally followed by that option's text ("2. dog barking")
_INDEX_RE = re.compile(r"^(?:option|choice)?\s*[(\[]?\s*(\d+)\s*[)\]]?\s*[.:)]?\s*(.*)$", re.IGNORECASE | re.DOTALL)


def format_user_turn(question: str, options: list[str]) -> str:
    """The user turn: the question, then one numbered option per line (0-based)."""
    if not options:
        raise ValueError("a multiple-choice question needs at least one option")
    lines = [f"Question: {question.strip()}", "Options:"]
    lines += [f"{i}. {str(opt).strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def build_messages(question: str, options: list[str]) -> list[dict]:
    """Chat messages (system + user) for one question; the audio is spliced in by the model."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": format_user_turn(question, options)}]


@dataclass(frozen=True)
class ParsedAnswer:
    """``index``/``text`` are None unless ``status == "ok"``; ``raw`` is the text inside the answer tags."""

    status: str
    index: int | None = None
    text: str | None = None
    raw: str = ""

    @property
    def prediction(self) -> str:
        """The string to put in a benchmark's ``model_prediction`` field ("" when malformed)."""
        return self.text if self.text is not None else ""


def parse_answer(response: str | None, options: list[str]) -> ParsedAnswer:
    """Parse a model response: the content of the last ``<answer>...</answer>`` (after any thinking).

    The content must be an option index (``2``, ``(2)``, ``Option 2``...) in range, optionally followed
    by exactly that option's text, or exactly one option's text (case-insensitive). Anything else is
    malformed, with a status saying why.
    """
    if response is None or not response.strip():
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
        idx, rest = int(m.group(1)), _norm(m.group(2))
        in_range = 0 <= idx < len(options)
        if in_range and (not rest or rest == _norm(options[idx])):
            return ParsedAnswer(OK, idx, str(options[idx]), raw)
        if not rest:
            return ParsedAnswer(OUT_OF_RANGE, raw=raw)
    matches = [i for i, opt in enumerate(options) if _norm(opt) == _norm(raw)]
    if len(matches) == 1:
        return ParsedAnswer(OK, matches[0], str(options[matches[0]]), raw)
    return ParsedAnswer(NOT_INDEX, raw=raw)


def _norm(text) -> str:
    return " ".join(str(text).split()).rstrip(".").casefold()

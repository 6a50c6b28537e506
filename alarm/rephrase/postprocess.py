"""Pure text steps of the pipeline: tag renaming, answer extraction, restoring R0's structure, the token filter.

Text conventions: an R0 (and a training target) is what the LLM generates *after* the prompt's
``<think>\\n``: its thinking, then ``</think>`` and the answer; an R0 cut off by the token cap has no
``</think>``.
"""
from __future__ import annotations

import re

from .prompts import R0_THINK_END, R0_THINK_START

THINK_START, THINK_END = "<think>", "</think>"
_CANDIDATE_LINE = re.compile(r"^\s*(?:\d+\s*[.):-]|[-*\u2022])\s*")


def r0_for_rephraser(r0: str) -> str:
    """R0 as shown to the rephraser: opened with R0_THINK_START, ``</think>`` renamed R0_THINK_END."""
    body = r0.replace(THINK_START, R0_THINK_START).replace(THINK_END, R0_THINK_END)
    return f"{R0_THINK_START}\n{body.lstrip()}"


def extract_answer(text: str) -> str | None:
    """The text between the last ``<answer>`` and the next ``</answer>``; None when absent or unclosed."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start)
    if end < 0:
        return None
    return text[start + len("<answer>"):end]


def restore_structure(rephrased: str, r0_closed: bool) -> str | None:
    """Map the rephraser's markers back to R0's thinking structure.

    The leading R0_THINK_START is removed (the target starts inside thinking); R0_THINK_END becomes
    ``</think>``. If R0 closed its thinking the result must contain exactly one ``</think>`` (None
    otherwise: the rewrite is unusable); if R0 was cut off the result has no ``</think>`` at all.
    """
    text = rephrased.strip()
    if text.startswith(R0_THINK_START):
        text = text[len(R0_THINK_START):].lstrip("\n")
    text = text.replace(R0_THINK_START, "").replace(THINK_START, "")
    text = text.replace(R0_THINK_END, THINK_END)
    if r0_closed:
        if text.count(THINK_END) != 1:
            return None
        thinking, answer = text.split(THINK_END)
        if not answer.strip():
            return None
        return f"{thinking.rstrip()}\n{THINK_END}\n\n{answer.strip()}"
    text = text.replace(THINK_END, "").strip()
    return text or None


def clean_r0(text: str) -> tuple[str, bool]:
    """Normalise a raw R0 (generated after ``<think>\\n``): returns ``(target_text, closed)``.

    A closed R0 is ``thinking\\n</think>\\n\\nanswer``; an R0 whose answer is empty counts as cut off.
    """
    text = text.replace(THINK_START, "").strip()
    if THINK_END not in text:
        return text, False
    thinking, _, answer = text.partition(THINK_END)
    answer = answer.replace(THINK_END, "").strip()
    if not answer:
        return thinking.rstrip(), False
    return f"{thinking.rstrip()}\n{THINK_END}\n\n{answer}", True


def visible_answer(text: str) -> str:
    """The part of a generation after its thinking (all of it when there is no ``</think>``)."""
    return text.rsplit(THINK_END, 1)[-1].strip()


def parse_candidates(text: str, limit: int) -> list[str]:
    """Candidate prompts from a numbered/bulleted list (one per line), de-duplicated, at most ``limit``."""
    out, seen = [], set()
    for line in visible_answer(text).splitlines():
        cand = _CANDIDATE_LINE.sub("", line).strip().strip('"').strip()
        key = cand.casefold()
        if cand and key not in seen:
            seen.add(key)
            out.append(cand)
        if len(out) >= limit:
            break
    return out


_FORBIDDEN = re.compile(r"\b(description|described|transcript|transcription provided|metadata|label(?:s|ed)?|"
                        r"caption(?:s|ed)?|the text|tags?)\b", re.IGNORECASE)


def prompt_passes_rules(prompt: str, min_words: int = 2, max_words: int = 60) -> bool:
    """Cheap checks before the LLM checker: length, no references to text-side information."""
    n = len(prompt.split())
    return min_words <= n <= max_words and not _FORBIDDEN.search(prompt) and "<" not in prompt


def checker_says_yes(text: str) -> bool:
    """The checker's verdict: the last ``<answer>`` is "yes" (after its thinking)."""
    ans = extract_answer(visible_answer(text))
    return ans is not None and ans.strip().strip(".").casefold() == "yes"


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def within_token_range(tokenizer, text: str, min_tokens: int, max_tokens: int) -> tuple[bool, int]:
    """The target filter (docs/model.md, "Filter"): ``min_tokens <= tokens <= max_tokens``; returns (kept, count)."""
    n = token_count(tokenizer, text)
    return min_tokens <= n <= max_tokens, n

"""MCQA prompting and answer parsing (alarm/eval/mcqa.py)."""
import pytest

from alarm.eval.mcqa import (EMPTY, NO_TAG, NOT_INDEX, OK, OUT_OF_RANGE, SYSTEM_PROMPT, build_messages,
                             format_user_turn, parse_answer)

OPTIONS = ["dog barking", "cat meowing", "bird singing"]


def test_prompt_texts():
    assert "<answer></answer>" in SYSTEM_PROMPT and "number" in SYSTEM_PROMPT
    assert format_user_turn(" What is it? ", OPTIONS) == (
        "Question: What is it?\nOptions:\n0. dog barking\n1. cat meowing\n2. bird singing")
    msgs = build_messages("What is it?", OPTIONS)
    assert [m["role"] for m in msgs] == ["system", "user"]
    with pytest.raises(ValueError):
        format_user_turn("q", [])


@pytest.mark.parametrize("response, status, index", [
    ("<answer>1</answer>", OK, 1),
    ("<answer> (2) </answer>", OK, 2),
    ("<answer>[0]</answer>", OK, 0),
    ("<answer>Option 1</answer>", OK, 1),
    ("<answer>2.</answer>", OK, 2),
    ("<answer>1. Cat meowing</answer>", OK, 1),
    ("<answer>cat meowing</answer>", OK, 1),          # the option text itself
    ("<ANSWER>0</ANSWER>", OK, 0),
    ("I think <answer>0</answer>, no wait: <answer>2</answer>", OK, 2),  # the last one counts
    ("<think>maybe <answer>0</answer></think>\n\n<answer>1</answer>", OK, 1),  # thinking is ignored
    ("<think>maybe <answer>0</answer></think>\n\nIt is the cat.", NO_TAG, None),
    ("<answer>1. dog barking</answer>", NOT_INDEX, None),  # index and text disagree
    ("<answer>7</answer>", OUT_OF_RANGE, None),
    ("<answer>-1</answer>", NOT_INDEX, None),
    ("<answer>the dog</answer>", NOT_INDEX, None),
    ("<answer>  </answer>", EMPTY, None),
    ("The answer is 0.", NO_TAG, None),
    ("", EMPTY, None),
    (None, EMPTY, None),
])
def test_parse_answer(response, status, index):
    parsed = parse_answer(response, OPTIONS)
    assert parsed.status == status
    assert parsed.index == index
    if status == OK:
        assert parsed.prediction == OPTIONS[index]
    else:
        assert parsed.prediction == ""  # malformed: never silently option 0

"""MCQA prompts (alarm/prompts.py) and answer parsing (alarm/eval/mcqa.py)."""
import pytest

from alarm.eval.mcqa import EMPTY, NO_TAG, NON_STRING, NOT_INDEX, OK, OUT_OF_RANGE, build_messages, parse_answer
from alarm.prompts import (LEGACY_MCQA_SYSTEM_PROMPT, MCQA_SYSTEM_PROMPT, ensemble_header, ensemble_intro,
                           legacy_mcqa_user_prompt, mcqa_prompts, mcqa_user_prompt)

OPTIONS = ["dog barking", "cat meowing", "bird singing"]


def test_published_prompt_texts():
    user = mcqa_user_prompt("What is it?", OPTIONS)
    assert user.startswith("Instruction: Answer the question defined in the <question> tag. ")
    assert user.endswith("<question>\nWhat is it?\n</question>\n\n<options>\n(Option_0) dog barking\n"
                         "(Option_1) cat meowing\n(Option_2) bird singing\n</options>\n\n")
    assert "the correct {option_ID}.\n\n" in user
    assert MCQA_SYSTEM_PROMPT.startswith("You are an audio-understanding model. You will be given an audio signal")
    assert "'(Option_{option_ID}) {option_value}'" in MCQA_SYSTEM_PROMPT
    assert MCQA_SYSTEM_PROMPT.endswith("Generate only good responses.")
    assert [m["role"] for m in build_messages("q", OPTIONS)] == ["system", "user"]
    assert mcqa_prompts("q", OPTIONS, "legacy") == (LEGACY_MCQA_SYSTEM_PROMPT, legacy_mcqa_user_prompt("q", OPTIONS))
    assert legacy_mcqa_user_prompt(" What is it? ", OPTIONS) == (
        "Question: What is it?\nOptions:\n0. dog barking\n1. cat meowing\n2. bird singing")
    assert ensemble_header(2, 3) == "This is what you hear in the audio for the (2/3) time:\n"
    assert ensemble_intro(2).startswith("You will hear the same audio 2 times and perceive different aspects")
    with pytest.raises(ValueError):
        mcqa_user_prompt("q", [])
    with pytest.raises(ValueError):
        mcqa_user_prompt("q", "abc")  # a string is not a list of options
    with pytest.raises(ValueError, match="prompt style"):
        mcqa_prompts("q", OPTIONS, "fancy")


@pytest.mark.parametrize("response, status, index", [
    ("<answer>1</answer>", OK, 1),
    ("<answer> (2) </answer>", OK, 2),
    ("<answer>[0]</answer>", OK, 0),
    ("<answer>Option 1</answer>", OK, 1),
    ("<answer>Option_1</answer>", OK, 1),           # the prompt's own (Option_i) wording
    ("<answer>(Option_2)</answer>", OK, 2),
    ("<answer>2.</answer>", OK, 2),
    ("<answer>1. Cat meowing</answer>", OK, 1),
    ("<answer>cat meowing</answer>", OK, 1),          # the option text itself
    ("<ANSWER>0</ANSWER>", OK, 0),
    ("I think <answer>0</answer>, no wait: <answer>2</answer>", OK, 2),  # the last one counts
    ("<think>maybe <answer>0</answer></think>\n\n<answer>1</answer>", OK, 1),  # thinking is ignored
    ("<think>maybe <answer>0</answer></think>\n\nIt is the cat.", NO_TAG, None),
    ("<answer>1. dog barking</answer>", NOT_INDEX, None),  # index and text disagree
    ("<answer>7</answer>", OUT_OF_RANGE, None),
    ("<answer>-1</answer>", NOT_INDEX, None),         # never Python's negative indexing
    ("<answer>the dog</answer>", NOT_INDEX, None),
    ("<answer>  </answer>", EMPTY, None),
    ("The answer is 0.", NO_TAG, None),
    ("", EMPTY, None),
    (None, EMPTY, None),
    (1, NON_STRING, None),
    (["<answer>1</answer>"], NON_STRING, None),
])
def test_parse_answer(response, status, index):
    parsed = parse_answer(response, OPTIONS)
    assert parsed.status == status
    assert parsed.index == index
    assert parsed.text == (OPTIONS[index] if status == OK else None)  # malformed: never silently option 0


@pytest.mark.parametrize("content, index", [
    ("3", 3),     # in range: the index, although option 1's text is "3"
    ("0", 0),
    ("5", 3),     # out of range: the one option whose text is 5
    ("(5)", 3),
    ("9", None),  # out of range, no option says 9
    ("5 apples", None),
])
def test_numeric_options_are_read_as_indices_first(content, index):
    options = ["2", "3", "4", "5"]
    parsed = parse_answer(f"<answer>{content}</answer>", options)
    assert parsed.index == index and (parsed.status == OK) == (index is not None)


def test_duplicated_options_count_as_one():
    assert parse_answer("<answer>dog</answer>", ["dog", "dog", "cat"]).index == 0
    assert parse_answer("<answer>1</answer>", ["dog", "dog", "cat"]).index == 1

"""The one home of the prompt texts used at inference time, in the wording of the published ALARM evaluation.

- ``SYSTEM_PROMPT``: the system turn of free-form generation (``alarm generate``, ``ALARMModel.generate``).
- ``MCQA_SYSTEM_PROMPT`` and ``mcqa_user_prompt``: multiple-choice evaluation. The options are listed as
  ``(Option_i) text`` lines (0-based ``i``) inside ``<options>``, and the model is asked for the option
  number inside ``<answer></answer>``. ``LEGACY_MCQA_SYSTEM_PROMPT`` and ``legacy_mcqa_user_prompt`` are
  this project's earlier wording (``--prompt-style legacy``).
- ``ensemble_intro`` and ``ensemble_header``: ALARM-E shows the same audio once per member model; the user
  turn opens with the introduction, each audio block gets a header and is followed by a newline.
- ``BUDGET_SENTENCE``: forced when the thinking budget cuts a generation inside its thinking; the forced
  text is ``BUDGET_BEFORE_END`` (blank line, the sentence, newline), ``</think>``, then ``BUDGET_AFTER_END``.

The placeholders ``{option_ID}`` and ``{option_id}`` below are literal text of the published prompts.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["SYSTEM_PROMPT", "MCQA_SYSTEM_PROMPT", "mcqa_user_prompt", "LEGACY_MCQA_SYSTEM_PROMPT",
           "legacy_mcqa_user_prompt", "PROMPT_STYLES", "mcqa_system_prompt", "mcqa_prompts", "ensemble_intro",
           "ensemble_header", "BUDGET_SENTENCE", "BUDGET_BEFORE_END", "BUDGET_AFTER_END", "system_turn"]

SYSTEM_PROMPT = "You are an audio-understanding model. Listen to the audio and respond to the query."

MCQA_SYSTEM_PROMPT = (
    "You are an audio-understanding model. "
    "You will be given an audio signal, a question about it, and "
    "a list of possible answer options in the following format: "
    "'(Option_{option_ID}) {option_value}'.\n\n"
    "Analyze the audio and choose the correct option that answers the question. "
    "Put your final answer between <answer> and </answer> tags. "
    "Your answer must be a single number: the {option_ID} that "
    "corresponds to the correct option. You must always return a valid {option_ID}, "
    "even if you are not sure about the correct choice.\n\n"
    "Good response format example:\n"
    "<answer>{option_id}</answer>\n\n"
    "Bad response format example:\n"
    "{some text}<answer>{option_id}<answer>\n\n"
    "The bad response is bad because it returns additional text apart from the answer. "
    "Generate only good responses."
)


def _check_options(options: Sequence[str]) -> None:
    if isinstance(options, (str, bytes)) or not options:
        raise ValueError("a multiple-choice question needs a non-empty list of options")


def mcqa_user_prompt(question: str, options: Sequence[str]) -> str:
    """The published MCQA user turn: instruction, ``<question>``, ``<options>`` with ``(Option_i) text`` lines."""
    _check_options(options)
    listed = "".join(f"(Option_{i}) {opt}\n" for i, opt in enumerate(options))
    return ("Instruction: Answer the question defined in the <question> tag. "
            "The options are given inside <options> tag. You must return only your "
            "final answer and put it between <answer> and </answer> tags. "
            "Your answer must be a single number corresponding to "
            "the correct {option_ID}.\n\n"
            f"<question>\n{question}\n</question>\n\n"
            f"<options>\n{listed}</options>\n\n")


LEGACY_MCQA_SYSTEM_PROMPT = (
    "You are listening to an audio clip and will answer a multiple-choice question about it. "
    "Think it through, then reply with only the number of the correct option inside <answer></answer>, "
    "for example <answer>2</answer>."
)


def legacy_mcqa_user_prompt(question: str, options: Sequence[str]) -> str:
    """This project's earlier MCQA user turn: the question, then ``i. text`` lines (0-based)."""
    _check_options(options)
    lines = [f"Question: {question.strip()}", "Options:"]
    lines += [f"{i}. {str(opt).strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines)


PROMPT_STYLES = ("published", "legacy")


def mcqa_system_prompt(style: str = "published") -> str:
    """The MCQA system prompt of a prompt style (``published`` or ``legacy``)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
    return MCQA_SYSTEM_PROMPT if style == "published" else LEGACY_MCQA_SYSTEM_PROMPT


def mcqa_prompts(question: str, options: Sequence[str], style: str = "published") -> tuple[str, str]:
    """(system prompt, user prompt) of one MCQA item in the given style (``published`` or ``legacy``)."""
    system = mcqa_system_prompt(style)
    user = mcqa_user_prompt if style == "published" else legacy_mcqa_user_prompt
    return system, user(question, options)


def ensemble_intro(n: int) -> str:
    """ALARM-E: the text opening the user turn, before the first audio header (``n`` member models)."""
    return (f"You will hear the same audio {n} times and perceive "
            "different aspects of it, e.g., content description, environment description, "
            "speech transcription, sound quality, etc.. "
            "Depending on the audio the aspects may differ."
            "Process all of the information to make a decision.\n\n")


def ensemble_header(i: int, n: int) -> str:
    """ALARM-E: the header before the audio block of member ``i`` (1-based) of ``n``."""
    return f"This is what you hear in the audio for the ({i}/{n}) time:\n"


BUDGET_SENTENCE = ("Considering the limited time by the user, I have to give the "
                   "solution based on the thinking directly now.")
BUDGET_BEFORE_END = "\n\n" + BUDGET_SENTENCE + "\n"
BUDGET_AFTER_END = "\n\n"


def system_turn(system_prompt: str | None) -> str:
    """The ChatML system turn (``""`` for None): ``<|im_start|>system\\n...<|im_end|>\\n``."""
    return "" if system_prompt is None else f"<|im_start|>system\n{system_prompt}<|im_end|>\n"

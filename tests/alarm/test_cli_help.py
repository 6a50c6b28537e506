"""``alarm --help`` and every subcommand's ``--help`` (nested ones included) open with one clean sentence: the
description's first paragraph starts with a capital letter, is one sentence ending with a period, and no help
text shows reST markup."""
import argparse
import re

import pytest

from alarm.cli import build_parser, main


def _command_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    """Every command path of the parser tree, the root (``()``) first."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += _command_paths(child, (*prefix, name))
    return paths


COMMAND_PATHS = _command_paths(build_parser())


def _help_text(capsys, path) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def opening_paragraph(help_text: str) -> str:
    """The first paragraph after the usage block, joined into one line ("" when there is none)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", help_text.strip()) if p.strip()]
    assert paragraphs[0].startswith("usage: "), help_text[:200]
    if len(paragraphs) < 2 or re.match(r"^(positional arguments|options|optional arguments):", paragraphs[1]):
        return ""
    return " ".join(paragraphs[1].split())


def is_one_clean_sentence(text: str) -> bool:
    """A capital letter first, one period at the very end and no sentence break or reST markup before it."""
    return (bool(re.match(r"[A-Z]", text)) and text.endswith(".") and "``" not in text
            and not re.search(r"[.!?:;]\s+[A-Z]", text[:-1]) and not re.search(r":\w+:`", text))


def test_every_command_is_covered():
    top = {path[0] for path in COMMAND_PATHS if path}
    assert {"demo", "train", "cache", "eval", "generate", "convert", "rephrase"} <= top
    assert {("eval", "run"), ("eval", "fill"), ("eval", "score"), ("rephrase", "run"),
            ("rephrase", "describe")} <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(("alarm", *path)))
def test_help_opens_with_one_clean_sentence(capsys, path):
    text = _help_text(capsys, path)
    opening = opening_paragraph(text)
    assert is_one_clean_sentence(opening), f"alarm {' '.join(path)} --help opens with: {opening!r}"
    assert "``" not in text, f"reST markup in alarm {' '.join(path)} --help"


@pytest.mark.parametrize("text, clean", [
    ("Train an ALARM model from a recipe file.", True),
    ("The ``alarm`` command line. Each subcommand lives in a module of ``alarm.commands`` exposing", False),
    ("Each subcommand lives in a module exposing", False),
    ("train an ALARM model.", False),
    ("Train a model. Then evaluate it.", False),
    ("See :func:`alarm.train` for details.", False),
    ("", False),
])
def test_the_sentence_check_itself(text, clean):
    assert is_one_clean_sentence(text) is clean

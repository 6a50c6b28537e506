"""Subcommands of the ``alarm`` CLI (see alarm/cli.py).

A command module's docstring is its ``--help`` text, shown to users as written: plain text (no reST
markup), opening with a paragraph of one sentence, which is also the command's line in its parent's list.
"""
from __future__ import annotations

import argparse


def add_command(subparsers, name: str, doc: str) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``subparsers``: ``doc`` is its ``--help`` description and the first paragraph
    of ``doc`` (one sentence) its summary in the parent's ``--help``."""
    doc = doc.strip()
    summary = " ".join(doc.split("\n\n")[0].split())
    return subparsers.add_parser(name, help=summary, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)

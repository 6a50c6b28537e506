"""Subcommands of the ``alarm`` CLI (see alarm/cli.py)."""

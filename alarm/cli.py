"""The ``alarm`` command line. Each subcommand lives in a module of ``alarm.commands`` exposing
``register(subparsers)``, which adds its parser with ``alarm.commands.add_command`` (the module's docstring
is its ``--help``) and sets ``func`` (called with the parsed args; its return value is the exit status).
``DESCRIPTION`` is the ``alarm --help`` text. Bad input (ValueError, OSError such as a missing file) ends
with one ``alarm: error:`` line (a multi-line message is joined into one) and exit status 2; ``-v`` shows
the traceback too. Any other exception is a bug and keeps its traceback; Ctrl-C exits with status 130."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

DESCRIPTION = """Train, run and evaluate ALARM audio-language models, build their training data and convert
published checkpoints.

Start with "alarm demo" (a few minutes on a CPU, nothing downloaded). "alarm COMMAND --help" describes a
command; README.md lists the documentation in docs/.
"""

COMMAND_MODULES = (
    "alarm.commands.demo",
    "alarm.commands.eval",
    "alarm.commands.rephrase",
    "alarm.commands.generate",
    "alarm.commands.train",
    "alarm.commands.cache",
    "alarm.commands.convert",
    "alarm.commands.data",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alarm", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (backend choices etc.)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args``, except that recipe overrides (``KEY=VALUE`` words of commands with an
    ``overrides`` positional) may also follow options (``alarm cache --config R a=1 --out C b=2``), which
    argparse alone refuses; any other unknown word is refused as argparse refuses it."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(w.startswith("-") or "=" not in w for w in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv=None) -> int:
    args = parse(build_parser(), argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        if args.verbose:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"alarm: error: {message or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alarm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

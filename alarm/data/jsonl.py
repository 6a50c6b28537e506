"""JSONL reading with line-numbered errors and atomic writing (through ``alarm.fileio``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from alarm.fileio import atomic_write_json, atomic_write_jsonl


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; ValueError naming ``path:line`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at column {e.start + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    """Write ``rows`` as JSONL so that ``path`` is either absent/old or complete, never partial."""
    atomic_write_jsonl(path, rows)


def write_json_atomic(path: str | Path, obj) -> None:
    """Write one JSON document atomically."""
    atomic_write_json(path, obj)

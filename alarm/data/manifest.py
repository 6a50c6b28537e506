"""The training manifest: the one schema shared by the self-rephrasing pipeline (writer) and the trainer (reader).

One JSON object per line:
``{"id", "audio", "duration", "dataset", "description", "prompt", "target", "meta"}``
- ``id``: unique string; ``audio``: path of the audio file; ``duration``: seconds (> 0);
- ``dataset``: source dataset name; ``description``: the text metadata the LLM saw (docs/model.md);
- ``prompt``: the user prompt; may be empty when the request is spoken in the audio (the published ALARM
  recipe trains HeySQuAD's spoken questions with an empty prompt, ``alarm data import-corpora``);
- ``target``: the training target, i.e. the text the LLM generates after
  ``<|im_start|>assistant\\n<think>\\n`` (thinking, ``</think>``, answer; no ``</think>`` when cut off);
- ``meta``: optional free-form object (pipeline bookkeeping such as the target's token count).
Unknown keys are rejected so that schema drift fails loudly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .jsonl import iter_jsonl, write_jsonl_atomic

_STR_FIELDS = ("id", "audio", "dataset", "description", "prompt", "target")


class ManifestError(ValueError):
    """A malformed manifest record; the message names the file and line."""


@dataclass(frozen=True)
class ManifestRecord:
    id: str
    audio: str
    duration: float
    dataset: str
    description: str
    prompt: str
    target: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ManifestError(f"field {name!r} must be a string, got {type(value).__name__}")
            if name in ("id", "audio", "target") and not value.strip():
                raise ManifestError(f"field {name!r} must not be empty")
        if isinstance(self.duration, bool) or not isinstance(self.duration, (int, float)) \
                or not math.isfinite(self.duration) or self.duration <= 0:
            raise ManifestError(f"field 'duration' must be a positive number of seconds, got {self.duration!r}")
        if not isinstance(self.meta, dict):
            raise ManifestError(f"field 'meta' must be an object, got {type(self.meta).__name__}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "ManifestRecord":
        allowed = set(_STR_FIELDS) | {"duration", "meta"}
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ManifestError(f"unknown field(s) {unknown}")
        missing = sorted(allowed - {"meta"} - set(obj))
        if missing:
            raise ManifestError(f"missing field(s) {missing}")
        return cls(**obj)


def iter_manifest(path: str | Path) -> Iterator[ManifestRecord]:
    """Yield validated records; ManifestError names ``path:line`` for the first bad line."""
    for lineno, obj in iter_jsonl(path):
        try:
            yield ManifestRecord.from_dict(obj)
        except ManifestError as e:
            raise ManifestError(f"{path}:{lineno}: {e}") from None
        except TypeError as e:
            raise ManifestError(f"{path}:{lineno}: {e}") from None


def read_manifest(path: str | Path, check_unique_ids: bool = True) -> list[ManifestRecord]:
    """All records of a manifest; duplicate ids raise ManifestError unless ``check_unique_ids=False``."""
    records = list(iter_manifest(path))
    if check_unique_ids:
        seen = set()
        for rec in records:
            if rec.id in seen:
                raise ManifestError(f"{path}: duplicate id {rec.id!r}")
            seen.add(rec.id)
    return records


def write_manifest(path: str | Path, records: Iterable[ManifestRecord]) -> None:
    """Write records atomically (the file is complete or untouched)."""
    write_jsonl_atomic(path, (r.to_dict() for r in records))

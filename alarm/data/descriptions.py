"""Text descriptions of audio clips from dataset labels (docs/model.md, "Training targets").

A description is one line per segment, then one metadata line:
```
[00:00-00:03] Where did you put the keys? (speaker: A, gender: female)
[00:03-00:05] On the table. (speaker: B, gender: male)
(duration: 5.2s, emotion: neutral)
```
Segments are time-stamped transcripts ``[mm:ss-mm:ss] text`` or captions ``|caption|`` (optionally
time-stamped too, e.g. sound events); multi-speaker clips get one segment per turn. The metadata line
starts with the duration and lists the remaining labels as ``key: value`` in their given order.

Label items (one JSON object per line of the pipeline's input):
``{"id", "audio", "dataset", "duration", "schema", "labels": {...}}`` plus optional ``"prompt"`` (use
this prompt instead of generating one) and ``"spoken_instruction": true`` (the transcript is the user's
request: answered from the transcript, not rephrased). ``schema`` names a describer in ``SCHEMAS``;
``register_schema`` adds new ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .jsonl import iter_jsonl


def format_time(seconds: float, up: bool = False) -> str:
    """``mm:ss`` (minutes may exceed 59); rounded down, or up with ``up`` (segment ends), so that the
    printed span always contains the true one."""
    whole = math.ceil(seconds - 1e-6) if up else math.floor(seconds + 1e-6)
    m, s = divmod(max(0, int(whole)), 60)
    return f"{m:02d}:{s:02d}"


def format_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        return "; ".join(format_value(v) for v in value)
    return " ".join(str(value).split())


def _attrs(pairs: dict) -> str:
    items = [f"{str(k).replace('_', ' ')}: {format_value(v)}" for k, v in pairs.items()
             if v is not None and v != "" and v != []]
    return ", ".join(items)


@dataclass
class Segment:
    """One transcript or caption segment; ``start``/``end`` in seconds (both or neither)."""

    text: str
    start: float | None = None
    end: float | None = None
    caption: bool = False
    attrs: dict = field(default_factory=dict)

    def render(self) -> str:
        body = f"|{' '.join(self.text.split())}|" if self.caption else " ".join(self.text.split())
        if self.start is not None:
            end = self.end if self.end is not None else self.start
            body = f"[{format_time(self.start)}-{format_time(max(end, self.start), up=True)}] {body}"
        extra = _attrs(self.attrs)
        return f"{body} ({extra})" if extra else body


@dataclass
class Description:
    segments: list[Segment]
    duration: float
    meta: dict = field(default_factory=dict)

    def render(self) -> str:
        head = _attrs({"duration": f"{format_value(float(self.duration))}s", **self.meta})
        return "\n".join([s.render() for s in self.segments] + [f"({head})"])


Describer = Callable[[dict, float], Description]
SCHEMAS: dict[str, Describer] = {}


def register_schema(name: str):
    """Decorator registering ``fn(labels, duration) -> Description`` under ``name``."""
    def deco(fn: Describer) -> Describer:
        if name in SCHEMAS:
            raise ValueError(f"schema {name!r} is already registered")
        SCHEMAS[name] = fn
        return fn
    return deco


def _rest(labels: dict, used: tuple[str, ...]) -> dict:
    return {k: v for k, v in labels.items() if k not in used}


@register_schema("speech")
def describe_speech(labels: dict, duration: float) -> Description:
    """One utterance: ``transcript`` (or ``text``), optional ``start``/``end``; other labels (emotion,
    gender, accent, age, SNR, MOS, spoof method, ...) go to the metadata line."""
    text = labels.get("transcript", labels.get("text"))
    used = ("transcript", "text", "start", "end")
    segs = []
    if text is not None and str(text).strip():
        segs.append(Segment(str(text), float(labels.get("start", 0.0)), float(labels.get("end", duration))))
    return Description(segs, duration, _rest(labels, used))


@register_schema("sound")
def describe_sound(labels: dict, duration: float) -> Description:
    """Sound events: ``caption`` or ``captions`` (untimed ``|caption|``) and/or ``events``, a list of
    ``{"label", "start", "end"}`` (time-stamped captions, in time order)."""
    caps = labels.get("captions", [])
    caps = [caps] if isinstance(caps, str) else list(caps)
    if labels.get("caption"):
        caps.insert(0, labels["caption"])
    segs = [Segment(str(c), caption=True) for c in caps if str(c).strip()]
    events = labels.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ValueError(f"'events' must be a list of {{\"label\", \"start\", \"end\"}} objects, got {events!r}")
    events = sorted(events, key=lambda e: (float(e.get("start", 0.0)), float(e.get("end", 0.0))))
    for e in events:
        if "label" not in e:
            raise ValueError(f"sound event without a 'label': {e}")
        segs.append(Segment(str(e["label"]), float(e.get("start", 0.0)), float(e.get("end", duration)), caption=True))
    return Description(segs, duration, _rest(labels, ("caption", "captions", "events")))


@register_schema("music")
def describe_music(labels: dict, duration: float) -> Description:
    """Music: optional ``caption``; genre, instruments, mood, tempo, key, ... go to the metadata line."""
    segs = [Segment(str(labels["caption"]), caption=True)] if labels.get("caption") else []
    return Description(segs, duration, _rest(labels, ("caption",)))


@register_schema("dialogue")
def describe_dialogue(labels: dict, duration: float) -> Description:
    """Multi-speaker speech: ``turns``, a list of ``{"speaker", "start", "end", "text", ...}``, one segment
    per turn with its speaker and per-turn attributes (gender, emotion, ...); other labels -> metadata."""
    turns = labels.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        raise ValueError("schema 'dialogue' needs a non-empty list 'turns' of objects")
    segs = []
    for t in sorted(turns, key=lambda t: float(t.get("start", 0.0))):
        if "text" not in t:
            raise ValueError(f"dialogue turn without 'text': {t}")
        attrs = {k: v for k, v in t.items() if k not in ("text", "start", "end")}
        segs.append(Segment(str(t["text"]), float(t.get("start", 0.0)), float(t.get("end", duration)), attrs=attrs))
    return Description(segs, duration, _rest(labels, ("turns",)))


@dataclass
class LabelItem:
    """One clip of the pipeline's input (see the module docstring)."""

    id: str
    audio: str
    dataset: str
    duration: float
    schema: str
    labels: dict
    prompt: str | None = None
    spoken_instruction: bool = False

    def describe(self) -> str:
        if self.schema not in SCHEMAS:
            raise ValueError(f"item {self.id!r}: unknown schema {self.schema!r}; known: {', '.join(sorted(SCHEMAS))}")
        return SCHEMAS[self.schema](self.labels, self.duration).render()

    def transcript(self) -> str:
        """The spoken words (speech ``transcript``/``text`` or the dialogue turns' texts)."""
        if self.schema == "dialogue":
            return " ".join(str(t["text"]) for t in self.labels.get("turns", []))
        return str(self.labels.get("transcript", self.labels.get("text", "")))


_ITEM_KEYS = {"id", "audio", "dataset", "duration", "schema", "labels", "prompt", "spoken_instruction"}


def label_item_from_dict(obj: dict) -> LabelItem:
    unknown = sorted(set(obj) - _ITEM_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}")
    missing = sorted({"id", "audio", "dataset", "duration", "schema", "labels"} - set(obj))
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    dur = obj["duration"]
    if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not math.isfinite(dur) or dur <= 0:
        raise ValueError(f"'duration' must be a positive number of seconds, got {dur!r}")
    if not isinstance(obj["labels"], dict):
        raise ValueError("'labels' must be an object")
    for k in ("id", "audio", "dataset", "schema"):
        if not isinstance(obj[k], str) or not obj[k]:
            raise ValueError(f"{k!r} must be a non-empty string")
    if obj.get("prompt") is not None and not isinstance(obj["prompt"], str):
        raise ValueError("'prompt' must be a string")
    return LabelItem(obj["id"], obj["audio"], obj["dataset"], float(dur), obj["schema"], obj["labels"],
                     obj.get("prompt"), bool(obj.get("spoken_instruction", False)))


def read_label_items(path: str | Path) -> list[LabelItem]:
    """Read and validate a labels JSONL file (errors name ``path:line``); ids must be unique.

    A relative ``audio`` path is relative to the labels file's folder; it is returned absolute."""
    items, seen = [], set()
    folder = Path(path).resolve().parent
    for lineno, obj in iter_jsonl(path):
        try:
            item = label_item_from_dict(obj)
            item.audio = str(folder / Path(item.audio).expanduser())
            item.describe()  # fail early on labels the schema cannot describe
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if item.id in seen:
            raise ValueError(f"{path}:{lineno}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    return items

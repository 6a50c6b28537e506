"""Resolvers: where the clip of a corpus row ``(unique_id_1, unique_id_2)`` is, for one source dataset.

A resolver class per source layout (``layouts.py``, ``built.py``) derives from one of:

- :class:`FileSource`: the clip is one file of the official distribution at a path computed from the ids;
- :class:`IndexedSource`: the clip is a file found by a key read from its name (the tree is walked once);
- :class:`BuiltSource`: the official scripts assembled the clip (concatenation, windows, cut segments); it
  is rebuilt the same way, at 16 kHz, and written once as FLAC under ``<clips_dir>/<dataset>/``;
- :class:`MapOnly`: no file ids; the user lists the clips in an ``--audio-map`` table (:class:`AudioMap`).

``clip(uid1, uid2)`` returns the clip's path or raises :class:`ClipMissing`.
"""
from __future__ import annotations

import abc
import hashlib
import os
import re
import threading
from pathlib import Path, PurePosixPath
from typing import ClassVar, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

__all__ = ["ClipMissing", "Source", "FileSource", "IndexedSource", "BuiltSource", "MapOnly", "AudioMap",
           "BUILT_RATE", "AUDIO_SUFFIXES", "component", "split_exact"]

#: Sample rate of the clips built here (the official scripts built theirs at 16 kHz).
BUILT_RATE = 16000
#: File name endings taken as audio when a tree is walked (formats libsndfile decodes).
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".au", ".aiff")


class ClipMissing(Exception):
    """The clip of a row is not available. ``status``: "missing" (not there) or "unreadable" (there but
    undecodable); ``path``: the file looked for, when there is one."""

    def __init__(self, reason: str, path: str = "", status: str = "missing"):
        super().__init__(reason)
        self.reason, self.path, self.status = reason, path, status


def component(value: str, what: str) -> str:
    """``value`` as one path component (non-empty, no ``/``, not ``.`` or ``..``); ValueError otherwise."""
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError(f"{what} {value!r} is not a file or folder name")
    return value


def split_exact(value: str, sep: str, parts: int, what: str) -> list:
    """``value.split(sep)`` that must give ``parts`` non-empty pieces; ValueError otherwise."""
    pieces = value.split(sep)
    if len(pieces) != parts or not all(pieces):
        raise ValueError(f"{what} {value!r} is not {parts} parts joined by {sep!r}")
    return pieces


class Source(abc.ABC):
    """One source dataset of the corpora. Class attributes document it (``alarm data sources``, docs/data.md):
    ``name`` (its ``dataset_name``), ``kind``, ``ids`` (what the two ids hold), ``layout`` (the expected tree
    under the ``--audio-root`` folder), ``top`` (the archive's top folder: the root may be its parent or the
    folder itself), ``duration_rule`` ("exact": the description's ``duration: Ns`` is the clip's length
    rounded; "at_least": it is the end of the last described segment, so the clip is at least that long;
    "none": no duration in the description)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    ids: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    top: ClassVar[Optional[str]] = None
    duration_rule: ClassVar[str] = "exact"

    def __init__(self, root: Optional[str], clips_dir: Optional[str] = None):
        base = Path(os.path.abspath(root)) if root is not None else None
        if base is not None and self.top and (base / self.top).is_dir():
            base = base / self.top
        self.root = base
        self.clips_dir = Path(os.path.abspath(clips_dir)) if clips_dir is not None else None

    @abc.abstractmethod
    def clip(self, uid1: str, uid2: str) -> str:
        """Path of the clip of row ``(uid1, uid2)``; raises ClipMissing."""


class FileSource(Source):
    """A clip is one file; :meth:`paths` gives its candidate paths relative to the root, in order."""

    kind = "files"

    @abc.abstractmethod
    def paths(self, uid1: str, uid2: str) -> Sequence[str]:
        """Candidate relative paths of the clip (the first is the one reported when none exists);
        ValueError when the ids do not fit the layout."""

    def clip(self, uid1: str, uid2: str) -> str:
        try:
            candidates = self.paths(uid1, uid2)
        except ValueError as e:
            raise ClipMissing(f"ids do not fit the {self.name} layout: {e}") from None
        for rel in candidates:
            path = self.root / rel
            if path.is_file():
                return str(path)
        raise ClipMissing("audio file not found", str(self.root / candidates[0]))


class IndexedSource(Source):
    """A clip is a file found by a key: the root is walked once (sorted, so the first file of a key wins),
    :meth:`file_key` keys each audio file by its relative path, :meth:`row_key` keys each row."""

    kind = "files"

    def __init__(self, root, clips_dir=None):
        super().__init__(root, clips_dir)
        self._index: Optional[Dict[str, str]] = None
        self._lock = threading.Lock()

    @abc.abstractmethod
    def file_key(self, rel: PurePosixPath) -> Optional[str]:
        """Key of the audio file at ``rel`` (relative to the root), or None to ignore it."""

    @abc.abstractmethod
    def row_key(self, uid1: str, uid2: str) -> str:
        """Key of the row's clip; ValueError when the ids do not fit."""

    def _build_index(self) -> Dict[str, str]:
        index: Dict[str, str] = {}
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                if not name.lower().endswith(AUDIO_SUFFIXES):
                    continue
                path = os.path.join(folder, name)
                key = self.file_key(PurePosixPath(Path(path).relative_to(self.root).as_posix()))
                if key is not None:
                    index.setdefault(key, path)
        return index

    def clip(self, uid1: str, uid2: str) -> str:
        with self._lock:
            if self._index is None:
                self._index = self._build_index()
        try:
            key = self.row_key(uid1, uid2)
        except ValueError as e:
            raise ClipMissing(f"ids do not fit the {self.name} layout: {e}") from None
        path = self._index.get(key)
        if path is None:
            raise ClipMissing(f"no audio file for {key!r} under {self.root}")
        return path


def built_clip_name(uid1: str, uid2: str) -> str:
    """File name of a built clip: the ids made filename-safe, plus a hash of the exact ids (unique)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{uid1}__{uid2}")[:100].strip("._") or "clip"
    digest = hashlib.sha256(f"{uid1}\0{uid2}".encode()).hexdigest()[:12]
    return f"{readable}-{digest}.flac"


class BuiltSource(Source):
    """A clip the official scripts assembled: :meth:`build` makes its samples; the FLAC file is written
    once under ``<clips_dir>/<name>/`` and reused by every later run."""

    kind = "built"

    @abc.abstractmethod
    def build(self, uid1: str, uid2: str) -> np.ndarray:
        """The clip's samples: float32 mono [frames] at :data:`BUILT_RATE`; raises ClipMissing."""

    def clip(self, uid1: str, uid2: str) -> str:
        from alarm.fileio import atomic_write

        target = self.clips_dir / self.name / built_clip_name(uid1, uid2)
        if target.is_file():
            return str(target)
        try:
            wave = self.build(uid1, uid2)
        except ValueError as e:
            raise ClipMissing(f"ids do not fit the {self.name} layout: {e}") from None
        if wave.size == 0:
            raise ClipMissing("the rebuilt clip is empty", status="unreadable")
        # FLAC holds integers: 24 bits keep 16-bit sources exact (FLAC drops the unused low bits per frame)
        pcm = np.clip(wave, -1.0, 1.0 - 2.0 ** -23)

        def write(tmp: str) -> None:
            import soundfile as sf

            sf.write(tmp, pcm, BUILT_RATE, format="FLAC", subtype="PCM_24")

        atomic_write(target, write)
        return str(target)


class MapOnly(Source):
    """A source without file ids: its clips come from ``--audio-map`` only (``layout`` says where the audio
    is published and how the ids are made)."""

    kind = "map"

    def clip(self, uid1: str, uid2: str) -> str:
        raise ClipMissing(f"{self.name} clips come from --audio-map only")


MAP_HEADER = ("dataset_name", "unique_id_1", "unique_id_2", "path")


class AudioMap:
    """The ``--audio-map`` tables: TSV files with the header ``dataset_name unique_id_1 unique_id_2 path``
    (tab-separated, UTF-8) and one clip per line; relative paths are relative to the table's folder. A key
    listed twice keeps its first path (tables are read in the order given)."""

    def __init__(self, entries: Dict[Tuple[str, str, str], str], counts: Dict[str, int]):
        self.entries, self.counts = entries, counts

    @classmethod
    def load(cls, tables: Iterable[str], known: Iterable[str]) -> "AudioMap":
        """Read ``tables``; ValueError naming ``file:line`` for a bad header, a wrong number of fields or
        a dataset name not in ``known``."""
        known = set(known)
        entries: Dict[Tuple[str, str, str], str] = {}
        counts: Dict[str, int] = {}
        for table in tables:
            path = Path(table)
            if not path.is_file():
                raise ValueError(f"--audio-map: file not found: {table}")
            base = Path(os.path.abspath(path.parent))
            with path.open("r", encoding="utf-8", newline="") as fh:
                for lineno, line in enumerate(fh, 1):
                    line = line.rstrip("\r\n")
                    fields = line.split("\t")
                    if lineno == 1:
                        if tuple(fields) != MAP_HEADER:
                            raise ValueError(f"{table}:1: the header must be {chr(9).join(MAP_HEADER)!r} "
                                             f"(tab-separated), got {line!r}")
                        continue
                    if not line.strip():
                        continue
                    if len(fields) != 4 or not fields[0] or not fields[3]:
                        raise ValueError(f"{table}:{lineno}: expected 4 tab-separated fields "
                                         f"({', '.join(MAP_HEADER)}), got {len(fields)}")
                    name, uid1, uid2, clip = fields
                    if name not in known:
                        raise ValueError(f"{table}:{lineno}: unknown dataset {name!r} (see `alarm data sources`)")
                    key = (name, uid1, uid2)
                    if key not in entries:
                        entries[key] = clip if os.path.isabs(clip) else str(base / clip)
                        counts[name] = counts.get(name, 0) + 1
        return cls(entries, counts)

    def get(self, names: Sequence[str], uid1: str, uid2: str) -> Optional[str]:
        """The mapped path of the first of ``names`` (a dataset name and its aliases) that has the ids."""
        for name in names:
            path = self.entries.get((name, uid1, uid2))
            if path is not None:
                return path
        return None

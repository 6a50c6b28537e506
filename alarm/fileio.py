"""The project's one home for writing files safely.

Every file the project writes (checkpoints, model folders, manifests, shards, metrics, reports) goes
through :func:`atomic_write`: the content is written to a hidden temporary file in the destination folder,
flushed and fsynced, given the permissions the process umask grants (``0o666 & ~umask``, usually 0644,
unlike ``mkstemp``'s 0600), then moved over the destination with ``os.replace``. A reader therefore sees
either the old file or the complete new one, never a partial file; a write that fails or is interrupted
by an exception removes its temporary file. (A process killed by SIGKILL can leave a ``.tmp-*`` file
behind; :func:`remove_stale_temporaries` cleans those up before the next write into that folder.)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Union

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_write_jsonl", "fsync_dir",
           "umask_mode", "remove_stale_temporaries", "TMP_PREFIX"]

PathLike = Union[str, "os.PathLike[str]"]
TMP_PREFIX = ".tmp-"


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the current process umask applied (the mode ``open()`` would give a new file)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def fsync_dir(folder: PathLike) -> None:
    """fsync a directory so that renames inside it survive a power loss (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path`` atomically.

    The parent folder is created if needed. ``write`` must create/overwrite ``tmp_path`` (e.g.
    ``safetensors.torch.save_file(state, tmp_path)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix="-" + path.name)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(path, write)


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Write one JSON document (UTF-8, non-ASCII kept) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
    """Write ``rows`` as JSON Lines to ``path`` atomically (streamed: ``rows`` may be a generator)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write(path, write)


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete ``.tmp-*`` files left in ``folder`` by a killed writer; returns how many were removed.

    Call it only where no other process writes into ``folder`` at the same time.
    """
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if p.name.startswith(TMP_PREFIX) and p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed

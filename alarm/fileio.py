"""The project's one home for writing files safely.

Every file the project writes (checkpoints, model folders, manifests, shards, metrics, reports) goes
through :func:`atomic_write`: the content is written to a hidden temporary file in the destination folder,
flushed and fsynced, given the permissions the process umask grants (``0o666 & ~umask``, usually 0644,
unlike ``mkstemp``'s 0600), then moved over the destination with ``os.replace``. A reader therefore sees
either the old file or the complete new one, never a partial file; a write that fails or is interrupted
by an exception removes its temporary file. (A process killed by SIGKILL can leave a ``.tmp-*`` file
behind; :func:`remove_stale_temporaries` cleans those up before the next write into that folder.)

A folder whose files must change together (a saved model: weights and config) goes through
:func:`atomic_write_folder`: the new folder is built as a hidden sibling, then swapped with the old one
in one step, so a reader sees the old folder or the new one, never a mix.

Checksums: atomic writes make a file whole when written; they cannot notice what happens to it later (bit
rot, a bad disk, a partial copy between machines). Checkpoints, model folders and cache shards therefore
record the sha256 of each file (:func:`atomic_write_bytes` returns it; a checksum list is
:func:`format_checksums` text, the format of coreutils ``sha256sum``, so ``sha256sum -c`` checks it too),
and readers use :func:`read_verified`, which hashes exactly the bytes it returns. sha256 because it is the
fastest strong hash in ``hashlib`` on CPUs with SHA instructions (``bench/checksums.py``: about 1.7 GiB/s
per core, twice blake2b) and every system can check it without this project.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Collection, Dict, Iterable, Mapping, Optional, Union

__all__ = ["file_sha256", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_write_jsonl", "atomic_write_folder", "fsync_dir", "umask_mode", "remove_stale_temporaries",
           "TMP_PREFIX", "CorruptFileError", "format_checksums", "parse_checksums", "read_verified",
           "verify_files"]

PathLike = Union[str, "os.PathLike[str]"]
TMP_PREFIX = ".tmp-"


def file_sha256(path: PathLike) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CorruptFileError(ValueError):
    """A file that is missing, truncated or does not match its recorded checksum (the message names it)."""


def format_checksums(digests: Mapping[str, str]) -> str:
    """``{file name: sha256 hex}`` as ``sha256sum`` lines (``<hex>  <name>``), sorted by name."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))


def parse_checksums(text: str, where: PathLike) -> Dict[str, str]:
    """The ``{file name: sha256 hex}`` of ``sha256sum`` lines; CorruptFileError naming ``where`` and the line
    when one is malformed (a damaged checksum list is as untrustworthy as a damaged file)."""
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name \
                or "/" in name or name in digests:
            raise CorruptFileError(f"{where}:{number}: not a sha256sum line ({line[:80]!r}): the checksum list is "
                                   "damaged")
        digests[name] = digest
    return digests


def _missing(path: Path) -> CorruptFileError:
    return CorruptFileError(f"{path}: missing (its checksum is recorded, so it was written and then lost)")


def _check_digest(path: Path, size: int, got: str, want: str) -> None:
    if got != want:
        raise CorruptFileError(f"{path}: corrupt or incomplete ({size:,} bytes, sha256 {got[:12]}... where "
                               f"{want[:12]}... was recorded when it was written)")


def read_verified(path: PathLike, sha256: str) -> bytes:
    """The bytes of ``path`` after checking their sha256 against ``sha256``; CorruptFileError naming the file
    when it is missing or differs (truncated, overwritten, bit rot)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _missing(path) from None
    _check_digest(path, len(data), hashlib.sha256(data).hexdigest(), sha256)
    return data


def verify_files(folder: PathLike, digests: Mapping[str, str]) -> None:
    """Check every file of ``digests`` in ``folder`` (CorruptFileError naming the first one that differs)."""
    for name, digest in sorted(digests.items()):
        path = Path(folder) / name
        if not path.is_file():
            raise _missing(path)
        _check_digest(path, path.stat().st_size, file_sha256(path), digest)


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


def atomic_write_bytes(path: PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns its sha256 (hex), computed from ``data`` itself, so a
    later check also catches damage done while writing."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
    atomic_write(path, write)
    return hashlib.sha256(data).hexdigest()


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


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _stale_siblings(folder: Path) -> None:
    """Clean up after a writer of ``folder`` killed mid-way: put back an old folder moved aside (fallback
    path only, when ``folder`` is missing), then delete every ``.tmp-<name>-*`` sibling folder."""
    prefix = f"{TMP_PREFIX}{folder.name}-"
    siblings = [p for p in folder.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    aside = [p for p in siblings if p.name.startswith(prefix + "old-")]
    if not folder.exists() and len(aside) == 1:
        os.rename(aside[0], folder)
        siblings.remove(aside[0])
    for p in siblings:
        shutil.rmtree(p, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (no data copied; a later atomic replace of either leaves the other
    intact), or copy it where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(folder: Path, new: str, owned: Collection[str]) -> None:
    """Link (or copy) every entry of ``folder`` not in ``owned`` and not produced anew into ``new``."""
    for entry in folder.iterdir():
        dst = os.path.join(new, entry.name)
        if entry.name in owned or os.path.lexists(dst):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dst)
        elif entry.is_dir():
            shutil.copytree(entry, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), dst)
    fsync_dir(new)


def atomic_write_folder(folder: PathLike, write: Callable[[str], None], owned: Optional[Collection[str]] = None
                        ) -> None:
    """Call ``write(tmp_folder)`` to fill a new folder, then put it at ``folder`` as a whole.

    The new folder is a hidden sibling (``.tmp-<name>-*``); its files are fsynced and given the umask's
    permissions (files ``0o666 & ~umask``, folders ``0o777 & ~umask``), then it replaces ``folder`` by an
    atomic exchange of the two (Linux; elsewhere two renames, with the old folder put back by the next
    write if a kill falls between them) and the old folder is deleted. Leftovers of a killed earlier write
    are removed first. With ``owned`` (the names ``write`` produces) given, every other entry of an
    existing ``folder`` is carried over into the new one (hard-linked, or copied), so files others keep
    there are not lost. One writer per folder at a time.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _stale_siblings(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    tmp = tempfile.mkdtemp(dir=folder.parent, prefix=f"{TMP_PREFIX}{folder.name}-")
    try:
        write(tmp)
        for root, dirs, files in os.walk(tmp):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(path, umask_mode())
            for name in dirs:
                os.chmod(os.path.join(root, name), umask_mode(0o777))
            fsync_dir(root)
        os.chmod(tmp, umask_mode(0o777))
        if owned is not None and folder.is_dir():
            _carry_over(folder, tmp, owned)
        if not folder.exists():
            os.rename(tmp, folder)
        elif _exchange(tmp, str(folder)):
            fsync_dir(folder.parent)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            aside = tempfile.mkdtemp(dir=folder.parent, prefix=f"{TMP_PREFIX}{folder.name}-old-")
            os.rmdir(aside)
            os.rename(folder, aside)
            os.rename(tmp, folder)
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder.parent)

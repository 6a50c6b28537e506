"""Rows of the published corpora from local files: JSONL (one row object per line) or parquet (the hub's
own files, read through ``pyarrow``, an optional extra: ``pip install 'alarm-toolkit[corpora]'``).

A split's files under the corpus folder are ``<split>.jsonl``, ``<split>.parquet`` or shards
``<split>-*.jsonl`` / ``<split>-*.parquet`` (the hub names them ``<split>-00000-of-00012.parquet``), at any
depth, read in sorted path order. Rows are streamed in batches: the whole corpus never sits in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from alarm.data.jsonl import iter_jsonl
from alarm.extras import require

__all__ = ["CorpusRow", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "split_files", "iter_batches", "iter_indexes",
           "count_rows"]

#: Columns every row needs (the published schema; ``context`` may be empty).
REQUIRED_COLUMNS = ("dataset_name", "context", "audio_description", "llm_answer_with_context", "unique_id_1",
                    "unique_id_2", "dataset_index")
#: Columns read when present: HeySQuAD's answer to the spoken question alone (null for other rows).
OPTIONAL_COLUMNS = ("llm_answer_no_context",)
_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class CorpusRow:
    """One corpus row; ``where`` locates it for messages (``file:line`` or ``file: row N``)."""
    where: str
    dataset_name: str
    context: str
    audio_description: str
    target: str
    target_no_context: Optional[str]
    uid1: str
    uid2: str
    dataset_index: int


def split_files(corpus: Path, split: str) -> List[Path]:
    """The files of ``split`` under the folder ``corpus`` (see the module docstring), sorted by path."""
    found = []
    for path in Path(corpus).rglob("*"):
        name = path.name
        if path.is_file() and name.endswith(_SUFFIXES):
            stem = name.rsplit(".", 1)[0]
            if stem == split or stem.startswith(split + "-"):
                found.append(path)
    return sorted(found)


def _parquet():
    return require("pyarrow.parquet", "reading parquet corpora (or give the corpus as JSONL)", "pyarrow",
                   extra="corpora")


def _open_parquet(path: Path):
    pq = _parquet()
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... on a damaged file
        raise ValueError(f"{path}: not a readable parquet file ({e})") from None


def count_rows(files: Sequence[Path]) -> Optional[int]:
    """Rows of ``files`` when every one is parquet (from the footers), else None (JSONL is not counted)."""
    if not files or any(f.suffix != ".parquet" for f in files):
        return None
    return sum(_open_parquet(f).metadata.num_rows for f in files)


def _text(obj: dict, column: str, where: str, optional: bool = False) -> Optional[str]:
    value = obj.get(column)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: column {column!r} is null")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: column {column!r} must be a string, got {type(value).__name__}")
    return str(value)


def _row(obj: dict, where: str) -> CorpusRow:
    index = obj.get("dataset_index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"{where}: column 'dataset_index' must be an integer >= 0, got {index!r}")
    return CorpusRow(where, _text(obj, "dataset_name", where), _text(obj, "context", where),
                     _text(obj, "audio_description", where), _text(obj, "llm_answer_with_context", where),
                     _text(obj, "llm_answer_no_context", where, optional=True), _text(obj, "unique_id_1", where),
                     _text(obj, "unique_id_2", where), index)


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[List[CorpusRow]]:
    batch: List[CorpusRow] = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        for column in REQUIRED_COLUMNS:
            if column not in obj:
                raise ValueError(f"{where}: missing column {column!r}")
        batch.append(_row(obj, where))
        if len(batch) == batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[List[CorpusRow]]:
    pf = _open_parquet(path)
    names = set(pf.schema_arrow.names)
    for column in REQUIRED_COLUMNS:
        if column not in names:
            raise ValueError(f"{path}: row 1: missing column {column!r} (the file has no such column)")
    columns = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in names]
    row = 0
    for record_batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        batch = []
        for obj in record_batch.to_pylist():
            row += 1
            batch.append(_row(obj, f"{path}: row {row}"))
        yield batch


def iter_batches(files: Sequence[Path], batch_rows: int = 1024) -> Iterator[List[CorpusRow]]:
    """Rows of ``files`` in order, in lists of at most ``batch_rows``. ValueError naming the file and row
    for a missing column, a null or mistyped value, a malformed line or an unreadable file."""
    for path in files:
        if path.suffix == ".parquet":
            yield from _parquet_batches(path, batch_rows)
        else:
            yield from _jsonl_batches(path, batch_rows)


def iter_indexes(files: Sequence[Path], batch_rows: int = 65536) -> Iterator[List[Tuple[str, int]]]:
    """``(dataset_name, dataset_index)`` of every row of ``files``, in batches; parquet files are read for
    these two columns only. Errors as :func:`iter_batches`."""
    for path in files:
        if path.suffix != ".parquet":
            for batch in _jsonl_batches(path, batch_rows):
                yield [(row.dataset_name, row.dataset_index) for row in batch]
            continue
        pf = _open_parquet(path)
        names = set(pf.schema_arrow.names)
        for column in ("dataset_name", "dataset_index"):
            if column not in names:
                raise ValueError(f"{path}: row 1: missing column {column!r} (the file has no such column)")
        row = 0
        for record_batch in pf.iter_batches(batch_size=batch_rows, columns=["dataset_name", "dataset_index"]):
            batch = []
            for name, index in zip(*(c.to_pylist() for c in record_batch.columns), strict=True):
                row += 1
                if not isinstance(name, str) or isinstance(index, bool) or not isinstance(index, int) or index < 0:
                    raise ValueError(f"{path}: row {row}: dataset_name must be a string and dataset_index an "
                                     f"integer >= 0, got {name!r} and {index!r}")
                batch.append((name, index))
            yield batch

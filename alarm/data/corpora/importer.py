"""``alarm data import-corpora``: the published corpora + the user's audio -> training manifests.

Outputs, in the ``--out`` folder: ``train.jsonl`` and ``validation.jsonl`` (``alarm.data.manifest`` format),
``missing.tsv`` (rows dropped for their audio: missing, unreadable, duration mismatch) and ``report.json``
(counts per split and dataset). The three tables are written atomically together, then the report; a rerun
with the same inputs writes identical bytes (rows keep the corpus order; built clips are reused).

Modes:
- ``filtered``: the published ``train`` / ``validation`` splits, already split and filtered by the authors.
- ``raw``: the published ``raw_train`` / ``raw_validation`` splits, split and filtered here as the official
  scripts did: for each of the 31 audio datasets a seed-123 permutation of its ``dataset_index`` values
  (``np.random.seed(123); np.random.permutation(N)``, N = its rows in ``raw_train``), the first
  ``int(N * 0.1)`` to validation (create_train_val_split.py), then targets of ``min_tokens``..``max_tokens``
  tokens of the reasoning model's tokenizer (``tokenizer(target, add_special_tokens=False)``;
  validate_and_filter_answers.py, Qwen3-4B-Thinking-2507 in the paper). HeySQuAD keeps its own split
  (the filtered HeySQuAD rows also went through a Whisper WER filter, which raw mode does not redo) and
  InstructS2S is train only.
In both modes clips of ``max_seconds`` (60) or more are dropped, as validate_and_filter_indexes.py did, and
every HeySQuAD row also yields its no-context copy (empty prompt, target ``llm_answer_no_context``), as the
published recipe trains it. ``tokenizer`` in filtered mode applies the token filter there too: the official
validate_and_filter_answers.py writes its indexes where upload_dataset.py and the training loader do not
look for them (docs/model.md, differences), so the published splits may not have been token-filtered.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from alarm.audio import audio_info
from alarm.data.manifest import ManifestRecord
from alarm.fileio import atomic_write, atomic_write_json

from .reader import CorpusRow, count_rows, iter_batches, iter_indexes, split_files
from .registry import ALIASES, NO_CONTEXT_DATASETS, SOURCES, SPLIT_DATASETS, names_of, source_class
from .sources import AudioMap, ClipMissing, Source

__all__ = ["ImportOptions", "import_corpora", "parse_audio_roots", "roots_under", "check_roots", "described_seconds",
           "COUNTS", "MODES"]

MODES = {"filtered": ("train", "validation"), "raw": ("raw_train", "raw_validation")}
OUTPUT_SPLITS = ("train", "validation")
SPLIT_SEED = 123
VALIDATION_FRACTION = 0.10
#: Counters of report.json, per split and dataset.
COUNTS = ("rows", "matched", "no_context_copies", "missing", "unreadable", "unsupported", "too_long",
          "duration_mismatch", "duplicate", "target_tokens", "empty_target")
MISSING_HEADER = ("split", "dataset_name", "unique_id_1", "unique_id_2", "status", "reason", "path")
_DURATION = re.compile(r"\bduration: (\d+(?:\.\d+)?)s\b")


@dataclass(frozen=True)
class ImportOptions:
    """What ``alarm data import-corpora`` does; see the CLI help for each field."""
    corpus: str
    out: str
    mode: str = "filtered"
    roots: Dict[str, str] = field(default_factory=dict)
    maps: Tuple[str, ...] = ()
    clips_dir: Optional[str] = None
    tokenizer: Optional[str] = None
    min_tokens: int = 100
    max_tokens: int = 612
    max_seconds: float = 60.0
    duration_tolerance: float = 1.0
    allow_missing: bool = False
    workers: int = 4
    progress: bool = False


def parse_audio_roots(items: Sequence[str]) -> Dict[str, str]:
    """``NAME=DIR`` items (``--audio-root``) -> {dataset name: folder}; ValueError for a malformed item or a
    name given twice (:func:`check_roots` checks the names and folders)."""
    roots: Dict[str, str] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--audio-root {item!r}: expected NAME=DIR")
        if name in roots:
            raise ValueError(f"--audio-root {name}: given twice")
        roots[name] = folder
    return roots


def roots_under(folder: str) -> Dict[str, str]:
    """``--audio-roots DIR``: {dataset name: DIR/<name>} for every subfolder of ``folder`` named after a dataset
    with a file layout (others, such as a folder of mapped clips, are ignored). ValueError when ``folder`` is
    not a folder or holds no such subfolder."""
    if not os.path.isdir(folder):
        raise ValueError(f"--audio-roots: folder not found: {folder}")
    roots = {name: os.path.join(folder, name) for name in sorted(os.listdir(folder))
             if name in SOURCES and SOURCES[name].kind != "map" and os.path.isdir(os.path.join(folder, name))}
    if not roots:
        raise ValueError(f"--audio-roots {folder}: no subfolder named after a dataset (`alarm data sources` "
                         "lists the names)")
    return roots


def check_roots(roots: Dict[str, str]) -> None:
    """ValueError for an unknown dataset, a dataset without a file layout or a folder that does not exist."""
    for name, folder in roots.items():
        if name not in SOURCES:
            raise ValueError(f"--audio-root {name}: unknown dataset (known: {', '.join(SOURCES)})")
        if SOURCES[name].kind == "map":
            raise ValueError(f"--audio-root {name}: {name} has no file layout; list its clips with --audio-map")
        if not os.path.isdir(folder):
            raise ValueError(f"--audio-root {name}: folder not found: {folder}")


def described_seconds(description: str) -> Optional[float]:
    """The ``duration: Ns`` a description states (the last one), or None."""
    found = _DURATION.findall(description)
    return float(found[-1]) if found else None


def _duration_fits(rule: str, measured: float, described: Optional[float], tolerance: float) -> bool:
    if described is None or rule == "none":
        return True
    if rule == "at_least":
        return measured >= described - tolerance
    return abs(measured - described) <= tolerance


def _key_digest(name: str, uid1: str, uid2: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{name}\0{uid1}\0{uid2}".encode(), digest_size=8).digest(), "little")


def _tsv_field(value: str) -> str:
    return " ".join(str(value).replace("\t", " ").splitlines())


def _load_tokenizer(path: str):
    if not os.path.isdir(path):
        raise ValueError(f"--tokenizer: folder not found: {path} (a local tokenizer folder, e.g. the "
                         "Qwen3-4B-Thinking-2507 checkpoint)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"--tokenizer {path}: cannot load a tokenizer ({e})") from None


class _Importer:
    """One run: every cheap check in ``__init__`` (options, corpus files, roots, map, tokenizer), then
    :meth:`run` streams the rows through :meth:`process` (route, dedupe, filter, locate) and :meth:`emit`."""

    def __init__(self, opts: ImportOptions):
        if opts.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {opts.mode!r}")
        if opts.mode == "raw" and not opts.tokenizer:
            raise ValueError("--mode raw filters targets by their token count: give --tokenizer (the reasoning "
                             "model's tokenizer folder)")
        if not (1 <= opts.min_tokens <= opts.max_tokens):
            raise ValueError(f"--min-tokens/--max-tokens must satisfy 1 <= min <= max, got "
                             f"{opts.min_tokens}/{opts.max_tokens}")
        if opts.max_seconds <= 0 or opts.duration_tolerance < 0 or opts.workers < 1:
            raise ValueError("--max-seconds must be > 0, --duration-tolerance >= 0 and --workers >= 1")
        corpus = Path(opts.corpus)
        if not corpus.is_dir():
            raise ValueError(f"--corpus: folder not found: {opts.corpus}")
        self.opts = opts
        self.inputs = {}
        for split in MODES[opts.mode]:
            files = split_files(corpus, split)
            if not files:
                raise ValueError(f"--corpus {opts.corpus}: no files of the {split!r} split ({split}.jsonl, "
                                 f"{split}.parquet or {split}-*.parquet / {split}-*.jsonl)")
            self.inputs[split] = files
        self.out = Path(os.path.abspath(opts.out))
        clips = opts.clips_dir or str(self.out / "clips")
        check_roots(opts.roots)
        self.sources: Dict[str, Source] = {name: SOURCES[name](folder, clips) for name, folder in opts.roots.items()}
        self.audio_map = AudioMap.load(opts.maps, known=list(SOURCES) + list(ALIASES))
        self.tokenizer = _load_tokenizer(opts.tokenizer) if opts.tokenizer else None
        self.validation_masks: Dict[str, np.ndarray] = {}
        self.pool: Optional[ThreadPoolExecutor] = None
        self.counts = {split: {} for split in OUTPUT_SPLITS}
        self.seen = {split: set() for split in OUTPUT_SPLITS}

    # ------------------------------------------------------------------ raw mode: the official split
    def plan_split(self) -> None:
        """Validation masks of the 31 audio datasets from the complete raw_train split."""
        from tqdm.auto import tqdm

        indexes: Dict[str, List[int]] = {}
        files = self.inputs["raw_train"]
        with tqdm(total=count_rows(files), unit="row", desc="raw split", disable=not self.opts.progress) as bar:
            for batch in iter_indexes(files):
                for name, index in batch:
                    if name in SPLIT_DATASETS:
                        indexes.setdefault(name, []).append(index)
                bar.update(len(batch))
        for name, values in indexes.items():
            seen = np.unique(np.asarray(values, dtype=np.int64))
            n = len(values)
            if seen.size != n or seen[0] != 0 or seen[-1] != n - 1:
                raise ValueError(f"--mode raw rebuilds the official split from the complete raw_train split, but "
                                 f"{name} has {n} rows with {seen.size} distinct dataset_index values from "
                                 f"{seen[0]} to {seen[-1]}: give every raw_train file of the corpus")
            rng = np.random.RandomState(SPLIT_SEED)  # = np.random.seed(123); np.random.permutation(n)
            permutation = rng.permutation(n)
            mask = np.zeros(n, dtype=bool)
            mask[permutation[:int(n * VALIDATION_FRACTION)]] = True
            self.validation_masks[name] = mask

    def output_split(self, row: CorpusRow, input_split: str) -> str:
        """The output split of a row: raw mode's rebuilt split for the 31 audio datasets, else its own."""
        if self.opts.mode == "raw" and row.dataset_name in self.validation_masks:
            mask = self.validation_masks[row.dataset_name]
            return "validation" if row.dataset_index < mask.size and mask[row.dataset_index] else "train"
        return "validation" if input_split.endswith("validation") else "train"

    # ------------------------------------------------------------------ one row
    def count(self, split: str, dataset: str, what: str) -> None:
        """Add one to a counter of report.json."""
        per = self.counts[split].setdefault(dataset, dict.fromkeys(COUNTS, 0))
        per[what] += 1

    def locate(self, row: CorpusRow):
        """(path, seconds) of the row's clip, or a ClipMissing; None when no source covers the dataset."""
        names = names_of(row.dataset_name)
        path = self.audio_map.get(names, row.uid1, row.uid2)
        try:
            if path is None:
                source = self.sources.get(names[-1])
                if source is None:
                    if any(self.audio_map.counts.get(n) for n in names):
                        raise ClipMissing("no --audio-map entry for these ids")
                    return None
                path = source.clip(row.uid1, row.uid2)
            if not os.path.isfile(path):
                raise ClipMissing("audio file not found", path)
            try:
                frames, rate = audio_info(path)
            except ValueError as e:
                raise ClipMissing(str(e), path, status="unreadable") from None
            return path, round(frames / rate, 6)
        except ClipMissing as e:
            return e

    def manifest_path(self, path: str) -> str:
        """Clips under the output folder are written relative to it (the trainer resolves them there)."""
        try:
            return Path(path).relative_to(self.out).as_posix()
        except ValueError:
            return path

    def process(self, batch: List[CorpusRow], input_split: str, outs: Dict[str, TextIO], missing: TextIO) -> None:
        """Route, dedupe and filter a batch of rows, locate their clips (threads, order kept), emit them."""
        opts = self.opts
        todo: List[Tuple[CorpusRow, str]] = []
        for row in batch:
            try:
                source_class(row.dataset_name)
            except KeyError:
                raise ValueError(f"{row.where}: unknown dataset {row.dataset_name!r} (see `alarm data sources`)"
                                 ) from None
            split = self.output_split(row, input_split)
            self.count(split, row.dataset_name, "rows")
            digest = _key_digest(row.dataset_name, row.uid1, row.uid2)
            if digest in self.seen[split]:
                self.count(split, row.dataset_name, "duplicate")
                continue
            self.seen[split].add(digest)
            if not row.target.strip():
                self.count(split, row.dataset_name, "empty_target")
                continue
            todo.append((row, split))
        if self.tokenizer is not None:
            filtered = [i for i, (row, _) in enumerate(todo) if row.dataset_name in SPLIT_DATASETS]
            lengths = self.tokenizer([todo[i][0].target for i in filtered], add_special_tokens=False)["input_ids"] \
                if filtered else []
            drop = {i for i, ids in zip(filtered, lengths, strict=True)
                    if not opts.min_tokens <= len(ids) <= opts.max_tokens}
            for i in sorted(drop):
                self.count(todo[i][1], todo[i][0].dataset_name, "target_tokens")
            todo = [item for i, item in enumerate(todo) if i not in drop]
        rows = [row for row, _ in todo]
        found = list(self.pool.map(self.locate, rows)) if self.pool is not None else [self.locate(r) for r in rows]
        for (row, split), result in zip(todo, found, strict=True):
            self.emit(row, split, result, outs[split], missing)

    def emit(self, row: CorpusRow, split: str, result, out: TextIO, missing: TextIO) -> None:
        """Write the row's example(s), or count why it is dropped (raising for missing audio by default)."""
        name = row.dataset_name
        if result is None:
            self.count(split, name, "unsupported")
            return
        if isinstance(result, ClipMissing):
            if not self.opts.allow_missing:
                raise ValueError(f"{row.where}: {name} clip ({row.uid1!r}, {row.uid2!r}): {result.reason}"
                                 + (f": {result.path}" if result.path else "")
                                 + " (--allow-missing skips such rows and lists them in missing.tsv)")
            self.count(split, name, result.status)
            self.write_missing(missing, split, row, result.status, result.reason, result.path)
            return
        path, seconds = result
        if seconds >= self.opts.max_seconds:
            self.count(split, name, "too_long")
            return
        described = described_seconds(row.audio_description)
        if not _duration_fits(source_class(name).duration_rule, seconds, described, self.opts.duration_tolerance):
            self.count(split, name, "duration_mismatch")
            self.write_missing(missing, split, row, "duration_mismatch",
                               f"the clip lasts {seconds:.2f} s, its description says {described:g} s", path)
            return
        base = f"{name}|{row.uid1}|{row.uid2}"
        meta = {"unique_id_1": row.uid1, "unique_id_2": row.uid2, "dataset_index": row.dataset_index}
        audio = self.manifest_path(path)
        records = [ManifestRecord(base, audio, seconds, name, row.audio_description, row.context, row.target, meta)]
        if name in NO_CONTEXT_DATASETS and row.target_no_context and row.target_no_context.strip():
            records.append(ManifestRecord(f"{base}|no_context", audio, seconds, name, row.audio_description, "",
                                          row.target_no_context, {**meta, "no_context": True}))
            self.count(split, name, "no_context_copies")
        self.count(split, name, "matched")
        for record in records:
            out.write(json_line(record.to_dict()))

    @staticmethod
    def write_missing(missing: TextIO, split: str, row: CorpusRow, status: str, reason: str, path: str) -> None:
        fields = (split, row.dataset_name, row.uid1, row.uid2, status, reason, path)
        missing.write("\t".join(_tsv_field(f) for f in fields) + "\n")

    # ------------------------------------------------------------------ the whole run
    def run(self) -> dict:
        """The whole import; returns the report."""
        from tqdm.auto import tqdm

        if self.opts.mode == "raw":
            self.plan_split()
        files = [f for split in MODES[self.opts.mode] for f in self.inputs[split]]
        bar = tqdm(total=count_rows(files), unit="row", desc="import-corpora", disable=not self.opts.progress)

        def fill(tmp_train: str, tmp_validation: str, tmp_missing: str) -> None:
            with open(tmp_train, "w", encoding="utf-8") as train, \
                    open(tmp_validation, "w", encoding="utf-8") as validation, \
                    open(tmp_missing, "w", encoding="utf-8") as missing:
                missing.write("\t".join(MISSING_HEADER) + "\n")
                for split in MODES[self.opts.mode]:
                    for batch in iter_batches(self.inputs[split]):
                        self.process(batch, split, {"train": train, "validation": validation}, missing)
                        bar.update(len(batch))

        self.pool = ThreadPoolExecutor(self.opts.workers) if self.opts.workers > 1 else None
        try:
            _write_together([self.out / "train.jsonl", self.out / "validation.jsonl", self.out / "missing.tsv"], fill)
        finally:
            bar.close()
            if self.pool is not None:
                self.pool.shutdown()
        report = self.report()
        atomic_write_json(self.out / "report.json", report)
        return report

    def report(self) -> dict:
        """report.json: mode, inputs, settings, sources and the counts per split and dataset."""
        order = {name: i for i, name in enumerate(list(SOURCES) + list(ALIASES))}
        splits = {}
        for split in OUTPUT_SPLITS:
            per = {name: self.counts[split][name] for name in sorted(self.counts[split], key=order.get)}
            total = dict.fromkeys(COUNTS, 0)
            for counts in per.values():
                for k, v in counts.items():
                    total[k] += v
            splits[split] = {"records": total["matched"] + total["no_context_copies"], "total": total,
                             "datasets": per}
        corpus = Path(self.opts.corpus)
        return {
            "mode": self.opts.mode,
            "inputs": {split: [f.relative_to(corpus).as_posix() for f in files]
                       for split, files in self.inputs.items()},
            "settings": {"max_seconds": self.opts.max_seconds, "duration_tolerance": self.opts.duration_tolerance,
                         **({"tokenizer": os.path.abspath(self.opts.tokenizer), "min_tokens": self.opts.min_tokens,
                             "max_tokens": self.opts.max_tokens} if self.tokenizer is not None else {}),
                         **({"split_seed": SPLIT_SEED, "validation_fraction": VALIDATION_FRACTION}
                            if self.opts.mode == "raw" else {})},
            "sources": {**{name: {"kind": src.kind, "root": str(src.root)} for name, src in self.sources.items()},
                        **{name: {"kind": "map", "entries": n} for name, n in sorted(self.audio_map.counts.items())
                           if name not in self.sources}},
            "splits": splits,
        }


def json_line(obj: dict) -> str:
    """One JSONL line, as ``alarm.fileio.atomic_write_jsonl`` writes it."""
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _write_together(paths: Sequence[Path], fill) -> None:
    """``fill(*temporary paths)`` writes all ``paths`` at once; each is then moved into place atomically
    (``alarm.fileio.atomic_write``), so a failure anywhere in ``fill`` leaves every old file untouched."""
    def nest(i: int, tmps: Tuple[str, ...]) -> None:
        if i == len(paths):
            fill(*tmps)
        else:
            atomic_write(paths[i], lambda tmp: nest(i + 1, tmps + (tmp,)))
    nest(0, ())


def import_corpora(opts: ImportOptions) -> dict:
    """Run the import (module docstring); returns the report (also written to ``<out>/report.json``).
    ValueError, with one line naming the file, row or option, for bad input."""
    return _Importer(opts).run()

"""Training data: manifest -> tokenised examples (once, cached) -> decoded clips -> ``ModelBatch``.

- ``load_examples`` reads a manifest, keeps the selected datasets (``select_datasets``), drops (and reports)
  examples that cannot train: a missing audio file or a clip longer than ``max_seconds`` (from the manifest's
  ``duration``). Prompts and targets are tokenised once and cached in ``<cache_dir>/tokens-<key>.json``, the
  key covering the manifest's bytes, the selection, the tokenizer and the splicing format.
- ``ClipDataset[i]`` decodes example i's audio (any format ``alarm.audio`` reads, any rate, channels
  averaged, resampled once to the base encoder's rate) or fetches its cached frozen features. A clip that
  is unreadable, empty, non-finite or over the limit becomes a *skip* (id + reason), never an exception.
- ``collate`` (run inside DataLoader workers) turns a pack into a ``ModelBatch`` plus bookkeeping; given the
  model's front ends (``ALARMModel.worker_front_ends(device)``) it also computes those encoders' inputs from the
  decoded clips (``ModelBatch.prepared``; resampling included), so that the training process runs only the
  encoders themselves and, on a GPU, the front ends made of device kernels.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from alarm.audio import load_audio, resample, validate_audio_batch
from alarm.data.manifest import read_manifest
from alarm.fileio import atomic_write_json
from alarm.model.batch import ModelBatch
from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX, encode_example, text_batch_from_ids

__all__ = ["Example", "Skip", "load_examples", "select_datasets", "split_eval", "ClipDataset", "collate", "Pack",
           "llm_tokens"]

TOKENS_FORMAT = 1


@dataclass(frozen=True)
class Example:
    """One trainable example: ids of ``prompt + assistant prefix`` (suffix) and of the target."""
    id: str
    dataset: str
    audio: str
    duration: float
    prompt: str
    suffix: Tuple[int, ...]
    target: Tuple[int, ...]


@dataclass(frozen=True)
class Skip:
    """An example left out, and why."""
    id: str
    audio: str
    reason: str


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def select_datasets(records: Sequence, datasets: Optional[Mapping[str, float]], where: str = "manifest") -> list:
    """The records of the datasets named in ``datasets`` (dataset -> fraction kept: the first
    ``int(n * fraction)`` of its ``n`` records, in order, as the published recipes take a fraction of a
    dataset); all records when ``datasets`` is empty. ``records`` need a ``dataset`` attribute. ValueError
    when none is left; a named dataset with no record is logged (its audio may not have been imported)."""
    if not datasets:
        return list(records)
    counts: Dict[str, int] = {}
    for r in records:
        counts[r.dataset] = counts.get(r.dataset, 0) + 1
    absent = sorted(set(datasets) - set(counts))
    if len(absent) == len(datasets):
        raise ValueError(f"{where}: no example of the selected datasets {sorted(datasets)} (data.datasets); "
                         f"it holds {sorted(counts)} (data.datasets={{}} keeps every dataset)")
    if absent:
        logging.getLogger(__name__).warning("%s: no example of %s (data.datasets)", where, ", ".join(absent))
    keep = {name: int(counts.get(name, 0) * fraction) for name, fraction in datasets.items()}
    emptied = sorted(name for name, n in keep.items() if n == 0 and counts.get(name) and datasets[name] > 0)
    if emptied:
        logging.getLogger(__name__).warning(
            "%s: %s keep no example (the first int(n * fraction) of each dataset's n examples are kept; data.datasets)",
            where, ", ".join(f"{name} ({counts[name]} x {datasets[name]})" for name in emptied))
    out, seen = [], {}
    for r in records:
        if r.dataset in keep and seen.get(r.dataset, 0) < keep[r.dataset]:
            seen[r.dataset] = seen.get(r.dataset, 0) + 1
            out.append(r)
    return out


def load_examples(manifest: str, tokenizer, max_seconds: float, cache_dir: Optional[str] = None,
                  datasets: Optional[Mapping[str, float]] = None) -> Tuple[List[Example], List[Skip]]:
    """Examples of ``manifest`` that can train, and the skipped ones (missing audio, too long).

    Relative audio paths resolve against the manifest's folder. ``datasets``: only these datasets, in these
    fractions (``select_datasets``; None or empty: every example).
    """
    path = Path(manifest)
    records = select_datasets(read_manifest(path), datasets, str(path))
    raw = path.read_bytes()
    selection = json.dumps(sorted((datasets or {}).items()))
    key = hashlib.sha256(raw + selection.encode() + _tokenizer_fingerprint(tokenizer).encode() +
                         f"{USER_PREFIX}|{ASSISTANT_SUFFIX}|{TOKENS_FORMAT}".encode()).hexdigest()[:24]
    token_file = Path(cache_dir) / f"tokens-{key}.json" if cache_dir else None
    ids = None
    if token_file is not None and token_file.is_file():
        try:
            ids = json.loads(token_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            ids = None  # a damaged cache is rebuilt
    if ids is None or len(ids) != len(records):
        ids = [list(encode_example(tokenizer, r.prompt, r.target)) for r in records]
        if token_file is not None:
            atomic_write_json(token_file, ids, indent=None)
    examples, skips = [], []
    for r, (suffix, target) in zip(records, ids, strict=True):
        audio = r.audio if os.path.isabs(r.audio) else str(path.parent / r.audio)
        if r.duration > max_seconds:
            skips.append(Skip(r.id, audio, f"lasts {r.duration:.1f} s, over the {max_seconds:g} s limit"))
        elif not os.path.isfile(audio):
            skips.append(Skip(r.id, audio, "audio file not found"))
        elif not target:
            skips.append(Skip(r.id, audio, "empty target"))
        else:
            examples.append(Example(r.id, r.dataset, audio, float(r.duration), r.prompt, tuple(suffix), tuple(target)))
    return examples, skips


def split_eval(examples: Sequence[Example], fraction: float) -> Tuple[List[Example], List[Example]]:
    """(train, eval): ``fraction`` of the examples held out, chosen by a hash of their id (stable)."""
    if fraction <= 0:
        return list(examples), []
    cut = int(fraction * 2**32)
    held = [zlib.crc32(e.id.encode()) < cut for e in examples]
    pairs = list(zip(examples, held, strict=True))
    return [e for e, h in pairs if not h], [e for e, h in pairs if h]


def llm_tokens(example: Example, prefix_len: int, tokens_per_second: float, max_length: int) -> int:
    """LLM tokens of an example (estimate of the audio part from its duration), capped at ``max_length``."""
    audio = int(np.ceil(example.duration * tokens_per_second))
    return min(prefix_len + 2 + audio + len(example.suffix) + len(example.target), max_length)


class ClipDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> ``(i, waveform float32 [T] or None, features or None, reason or None)``.

    ``rate``: Hz every clip is resampled to. ``cache``: an open ``FeatureCache`` (features instead of audio).
    """

    def __init__(self, examples: Sequence[Example], rate: int, max_seconds: float, cache=None):
        self.examples, self.rate, self.max_seconds, self.cache = list(examples), rate, max_seconds, cache

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        ex = self.examples[i]
        if self.cache is not None:
            clip = self.cache.get(ex.id)
            return (i, None, clip, None) if clip is not None else (i, None, None, "not in the feature cache")
        try:
            wave, rate = load_audio(ex.audio)  # names the file and the reason: unreadable, empty, NaN, ...
            (x,), _ = validate_audio_batch([wave], rate, self.max_seconds)  # the model's input contract
        except (ValueError, OSError) as e:
            return i, None, None, str(e)
        return i, resample(x, rate, self.rate) if rate != self.rate else x, None, None


@dataclass
class Pack:
    """A collated micro-batch: the model batch (None when every example was skipped), the example indices
    it holds, the skips, and the seconds of audio it holds."""
    batch: Optional[ModelBatch]
    indices: List[int]
    skips: List[Skip]
    audio_seconds: float

    def pin_memory(self) -> "Pack":
        if self.batch is not None:
            self.batch = self.batch.pin_memory()
        return self


class Collator:
    """Picklable collate function for ``DataLoader(collate_fn=...)``. ``front_ends``: the model's weight-free front
    ends (``ALARMModel.audio_front_ends()`` or ``worker_front_ends(device)``); with them decoded clips become
    prepared encoder inputs here (for a partial set, the batch keeps the waveforms for the others)."""

    def __init__(self, examples: Sequence[Example], prefix: Sequence[int], header_len: int, rate: int,
                 front_ends: Optional[Callable] = None):
        self.examples, self.prefix, self.header_len, self.rate = examples, list(prefix), header_len, rate
        self.front_ends = front_ends

    def __call__(self, items) -> Pack:
        kept, skips, waves, feats = [], [], [], []
        for i, wave, feat, reason in items:
            ex = self.examples[i]
            if reason is not None:
                skips.append(Skip(ex.id, ex.audio, reason))
                continue
            kept.append(i)
            waves.append(wave)
            feats.append(feat)
        if not kept:
            return Pack(None, [], skips, 0.0)
        text = text_batch_from_ids(self.prefix, [self.examples[i].suffix for i in kept],
                                   [self.examples[i].target for i in kept], self.header_len)
        if feats[0] is not None:
            lengths = {n: [f.tensors[n].shape[-2] for f in feats] for n in feats[0].tensors}  # host sizes: no sync
            batch = ModelBatch(text, **{feats[0].kind: feats[0].collate(feats)}, lengths=lengths)
            seconds = sum(self.examples[i].duration for i in kept)
        else:
            rates = [self.rate] * len(waves)
            if self.front_ends is not None:  # partial: the other encoders' front ends run in the step
                keep = dict(waves=waves, rates=rates) if self.front_ends.partial else {}
                batch = ModelBatch(text, prepared=self.front_ends(waves, rates), **keep)
            else:
                batch = ModelBatch(text, waves=waves, rates=rates)
            seconds = sum(w.numel() for w in waves) / self.rate
        return Pack(batch, kept, skips, seconds)


def collate(examples: Sequence[Example], prefix: Sequence[int], header_len: int, rate: int,
            front_ends: Optional[Callable] = None) -> Collator:
    """The collate function for ``examples`` (``prefix``: ids of the user-turn opening; ``header_len``:
    tokens of the assistant header ending every prompt; ``front_ends``: see :class:`Collator`)."""
    return Collator(examples, prefix, header_len, rate, front_ends)


def write_skip_report(path: str, skips: Sequence[Skip]) -> Dict[str, int]:
    """Write skips as JSON (``{"count", "by_reason", "items"}``); returns counts by reason (first word)."""
    by_reason: Dict[str, int] = {}
    for s in skips:
        head = s.reason.split(":")[0].split(" ")[0]
        by_reason[head] = by_reason.get(head, 0) + 1
    atomic_write_json(path, {"count": len(skips), "by_reason": by_reason,
                             "items": [s.__dict__ for s in skips]})
    return by_reason

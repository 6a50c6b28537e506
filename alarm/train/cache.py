"""The frozen-feature cache (``alarm cache``): what the frozen part of the model computes, stored once.

Two levels:
- ``encoder``: the selected hidden states of every frozen encoder, per clip ``[k, T_e, D_e]``. Valid
  whenever the encoders are frozen (always), so stage A can use it too; it costs k x D_e values per frame.
- ``adapter``: the frozen adapters' outputs, per clip ``[T, H]`` (stage B only: the adapters must be
  frozen). This is the narrowest point before the trained fusion, and it removes encoders *and* adapters
  from every training step.

Layout: ``<folder>/shard-00000.safetensors ...`` (each written atomically; distinct audio files in manifest
order, ``shard_size`` per shard; tensor name ``<audio sha256>/<encoder name>``, so examples sharing a clip
share its features) and ``index.json`` written last (example id -> audio sha256, shard contents, the sha256
of each shard file, and the checksum of each clip's features). A build interrupted at any point resumes:
finished shards whose metadata matches and whose every clip still matches its checksum are kept, any other
is recomputed (so rerunning ``alarm cache`` on a damaged cache repairs it).

Integrity: the features of a clip are checked against their checksum each time they are read (the bytes
read, a few MiB, not the whole shard); a mismatch or an unreadable shard is a ``CorruptFileError`` naming
the shard and the clip, so damaged features are never trained on. ``verify_cache`` checks every shard file
against the index (``alarm cache --check``). A clip whose features are not finite (an encoder overflow, a
too narrow ``dtype``) is not stored: it is listed under ``skipped`` with the reason. A cache built before
checksums existed is read unverified, with a warning.

The cache key covers everything that changes the features: the encoder specs (checkpoints, layers,
front-end settings, dtypes), the level, the adapter weights' sha256 (level ``adapter``), the feature
dtype and the cache format; clips are stored under the sha256 of their audio file, which the trainer can
check against the files (``data.cache_verify``). ``FeatureCache.open`` refuses a cache whose key differs,
naming the fields that changed.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from alarm.fileio import (
    CorruptFileError,
    atomic_write,
    atomic_write_json,
    file_sha256,
    remove_stale_temporaries,
    verify_files,
)

__all__ = ["CachedClip", "FeatureCache", "cache_key", "build_cache", "verify_cache"]

CACHE_FORMAT = 1
LEVELS = ("encoder", "adapter")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _clip_digest(tensors: Dict[str, Tensor]) -> str:
    """sha256 of one clip's cached tensors (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def cache_key(model, level: str, dtype: str) -> dict:
    """The cache key of ``model`` (an ALARMModel) at ``level`` storing ``dtype`` features."""
    if level not in LEVELS:
        raise ValueError(f"cache level must be one of {LEVELS}, got {level!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"cache dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    key = {"format": CACHE_FORMAT, "level": level, "dtype": dtype,
           "encoders": [json.loads(json.dumps(s.__dict__, default=str)) for s in model.config.encoders]}
    if level == "adapter":
        if any(p.requires_grad for p in model.audio.adapters.parameters()):
            raise ValueError("an adapter-level cache needs frozen adapters (stage B); use level 'encoder'")
        h = hashlib.sha256()
        for name, t in sorted(model.audio.adapters.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        key["adapters_sha256"] = h.hexdigest()
    return key


@dataclass
class CachedClip:
    """One clip's cached tensors: ``kind`` "features" ({name: [k, T, D]}) or "streams" ({name: [T, H]})."""
    kind: str
    tensors: Dict[str, Tensor]

    @staticmethod
    def collate(clips: Sequence["CachedClip"]) -> dict:
        """Pack clips into a ``ModelBatch`` audio source: {name: (k x [total, D], cu)} or {name: ([total, H], cu)}."""
        out = {}
        for name in clips[0].tensors:
            parts = [c.tensors[name] for c in clips]
            lens = [p.shape[-2] for p in parts]
            cu = torch.zeros(len(parts) + 1, dtype=torch.int32)
            cu[1:] = torch.tensor(lens).cumsum(0)
            if clips[0].kind == "features":
                out[name] = ([torch.cat([p[j] for p in parts]) for j in range(parts[0].shape[0])], cu)
            else:
                out[name] = (torch.cat(parts), cu)
        return out


_REBUILD = "rerun `alarm cache` with the same arguments: it recomputes only the damaged shards"


def _key_diff(want: dict, have: dict) -> List[str]:
    return sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))


class FeatureCache:
    """Read side of a cache folder. ``get(example_id)`` -> ``CachedClip`` or None (clip not cached)."""

    def __init__(self, folder: str, index: dict):
        self.folder, self.index = Path(folder), index
        self.kind = "features" if index["key"]["level"] == "encoder" else "streams"
        self._sha = index["examples"]  # example id -> sha256 of its audio file
        self._where = {sha: shard for shard, shas in index["shards"].items() for sha in shas}
        self._digests: Optional[Dict[str, str]] = index.get("clip_sha256")  # None: built before checksums
        self._open: Dict[str, object] = {}

    @classmethod
    def open(cls, folder: str, expected_key: dict) -> "FeatureCache":
        """Open ``folder``; ValueError when it is missing, incomplete or built for other features."""
        index_path = Path(folder) / "index.json"
        if not index_path.is_file():
            raise ValueError(f"{folder}: no complete feature cache here (index.json missing; run or finish "
                             "`alarm cache` first)")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        changed = _key_diff(expected_key, index.get("key", {}))
        if changed:
            raise ValueError(f"{folder}: stale feature cache, built for different {', '.join(changed)}; "
                             "rebuild it with `alarm cache` (or drop data.cache)")
        missing = [s for s in index["shards"] if not (Path(folder) / s).is_file()]
        if missing:
            raise CorruptFileError(f"{Path(folder) / missing[0]}: missing ({len(missing)} shard(s) of the index are "
                                   "gone); rerun `alarm cache` with the same arguments to rebuild them")
        if "clip_sha256" not in index:
            warnings.warn(f"{folder}: feature cache built before checksums existed: its features are read unverified "
                          "(rerun `alarm cache` with the same arguments to add them)", stacklevel=2)
        return cls(folder, index)

    def audio_sha256(self, example_id: str) -> Optional[str]:
        """sha256 of the audio file the example's features were computed from (None: not cached)."""
        return self._sha.get(example_id)

    def get(self, example_id: str) -> Optional[CachedClip]:
        """The clip's features, checked against their checksum; CorruptFileError naming the shard and the clip
        when they differ or the shard cannot be read."""
        sha = self._sha.get(example_id)
        shard = self._where.get(sha)
        if shard is None:
            return None
        path = self.folder / shard
        try:
            handle = self._open.get(shard)
            if handle is None:
                handle = self._open[shard] = safe_open(str(path), framework="pt")
            tensors = {n: handle.get_tensor(f"{sha}/{n}") for n in self.index["encoders"]}
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CorruptFileError(f"{path}: unreadable ({str(exc).splitlines()[0] if str(exc) else exc!r}) reading "
                                   f"clip {example_id}; {_REBUILD}") from None
        if self._digests is not None and _clip_digest(tensors) != self._digests.get(sha):
            raise CorruptFileError(f"{path}: corrupt: the features of clip {example_id} differ from the checksum "
                                   f"recorded when the cache was built; {_REBUILD}")
        return CachedClip(self.kind, tensors)

    def __getstate__(self):  # DataLoader workers reopen shards themselves
        return {**self.__dict__, "_open": {}}


@torch.no_grad()
def build_cache(model, examples, folder: str, level: str = "encoder", dtype: str = "float32",
                shard_size: int = 256, batch_size: int = 8, progress: bool = True) -> dict:
    """Compute and store the frozen features of ``examples`` (``alarm.train.data.Example``) in ``folder``.

    Each distinct audio file is encoded once (examples sharing a clip share its entry, keyed by the
    file's sha256). Resumable (finished shards are kept when they verify, recomputed when damaged); returns
    the index. Clips that cannot be decoded, or whose features are not finite, are listed under ``skipped``.
    """
    from alarm.train.data import ClipDataset

    key = cache_key(model, level, dtype)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    names = [s.name for s in model.config.encoders]
    rate = model.config.encoders[0].sample_rate
    device = model.audio.audio_start.device
    sha_of_file: Dict[str, str] = {}
    for e in examples:
        if e.audio not in sha_of_file:
            sha_of_file[e.audio] = file_sha256(e.audio)
    distinct: Dict[str, str] = {}
    for e in examples:
        distinct.setdefault(sha_of_file[e.audio], e.audio)
    clips = list(distinct.items())  # (sha256, path) of each distinct clip, in manifest order
    loader = ClipDataset([_clip_example(path) for _, path in clips], rate, max_seconds=float("inf"))
    meta_key = json.dumps(key, sort_keys=True)
    shards: Dict[str, List[str]] = {}
    skipped: List[dict] = []
    bar = tqdm(total=len(clips), desc="alarm cache", unit="clip", disable=not progress)
    digests: Dict[str, str] = {}  # audio sha256 -> checksum of its cached features
    shard_sha256: Dict[str, str] = {}
    for s, start in enumerate(range(0, len(clips), shard_size)):
        members = list(range(start, min(start + shard_size, len(clips))))
        name = f"shard-{s:05d}.safetensors"
        path = out / name
        wanted = [clips[i][0] for i in members]
        kept = _finished_shard(path, meta_key, wanted, names) if path.is_file() else None
        if isinstance(kept, str):
            bar.write(f"alarm cache: {path} is damaged ({kept}): recomputing it")
        elif kept is not None:
            shards[name], shard_skips, shard_digests = kept
            skipped += shard_skips
            digests.update(shard_digests)
            shard_sha256[name] = file_sha256(path)
            bar.update(len(members))
            continue
        tensors, stored, shard_skips, shard_digests = {}, [], [], {}
        for b in range(0, len(members), batch_size):
            loaded = [loader[i] for i in members[b:b + batch_size]]
            ok = [(i, w) for i, w, _, reason in loaded if reason is None]
            shard_skips += [{"audio": clips[i][1], "reason": reason} for i, _, _, reason in loaded if reason]
            if ok:
                feats = model.encode([w for _, w in ok], [rate] * len(ok))
                if level == "adapter":
                    feats = model.adapter_streams({k: ([x.to(device) for x in layers], cu.to(device))
                                                   for k, (layers, cu) in feats.items()})
                bounds = {n: feats[n][1].tolist() for n in names}
                for j, (i, _) in enumerate(ok):
                    clip = {}
                    for n in names:
                        data, (lo, hi) = feats[n][0], bounds[n][j:j + 2]
                        t = torch.stack([x[lo:hi] for x in data]) if level == "encoder" else data[lo:hi]
                        clip[n] = t.detach().to("cpu", _DTYPES[dtype]).contiguous()
                    bad = [n for n, t in clip.items() if not bool(torch.isfinite(t).all())]
                    if bad:  # refused: never stored, never trained on
                        shard_skips.append({"audio": clips[i][1], "reason": f"non-finite {level} features "
                                            f"({', '.join(bad)}, stored as {dtype})"})
                        continue
                    tensors.update({f"{clips[i][0]}/{n}": t for n, t in clip.items()})
                    shard_digests[clips[i][0]] = _clip_digest(clip)
                    stored.append(clips[i][0])
            bar.update(len(loaded))
        metadata = {"key": meta_key, "members": json.dumps(wanted), "stored": json.dumps(stored),
                    "skipped": json.dumps(shard_skips), "digests": json.dumps(shard_digests)}
        atomic_write(path, lambda p, t=tensors, m=metadata: save_file(t, p, metadata=m))
        shards[name] = stored
        skipped += shard_skips
        digests.update(shard_digests)
        shard_sha256[name] = file_sha256(path)
    bar.close()
    cached = {sha for shas in shards.values() for sha in shas}
    index = {"key": key, "encoders": names, "shards": shards, "skipped": skipped, "clips": len(cached),
             "examples": {e.id: sha_of_file[e.audio] for e in examples if sha_of_file[e.audio] in cached},
             "shard_sha256": shard_sha256, "clip_sha256": digests}
    atomic_write_json(out / "index.json", index)
    return index


def _finished_shard(path: Path, meta_key: str, wanted: List[str], names: List[str]):
    """A shard left by an earlier build: ``(stored, skipped, digests)`` when it holds these clips for this key
    and every clip matches its checksum; None when it was built for something else; a reason (str) when it
    is damaged."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != meta_key or json.loads(meta.get("members", "[]")) != wanted:
                return None
            if "digests" not in meta:
                return "built before checksums existed"
            stored, shard_digests = json.loads(meta["stored"]), json.loads(meta["digests"])
            for sha in stored:
                if _clip_digest({n: f.get_tensor(f"{sha}/{n}") for n in names}) != shard_digests.get(sha):
                    return f"the features of clip {sha[:12]}... differ from their checksum"
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        return f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return stored, json.loads(meta["skipped"]), shard_digests


def verify_cache(folder: str) -> Tuple[dict, List[str]]:
    """Check every shard of a complete cache folder against the sha256 recorded in its index: returns the index
    and one line per damaged shard, naming it (empty: all intact). ValueError for a folder without an index or
    without checksums."""
    index_path = Path(folder) / "index.json"
    if not index_path.is_file():
        raise ValueError(f"{folder}: no complete feature cache here (index.json missing)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{index_path}: not valid JSON ({exc})") from None
    if "shard_sha256" not in index:
        raise ValueError(f"{folder}: built before checksums existed: nothing to check against (rerun `alarm cache` "
                         "with the same arguments to add them)")
    damaged = []
    for name, digest in sorted(index["shard_sha256"].items()):
        try:
            verify_files(folder, {name: digest})
        except CorruptFileError as exc:
            damaged.append(str(exc))
    return index, damaged


def _clip_example(path: str):
    """A stand-in ``Example`` for decoding one audio file through ``ClipDataset``."""
    from alarm.train.data import Example
    return Example(id=path, dataset="", audio=path, duration=0.0, prompt="", suffix=(), target=())

"""Checkpoints that survive a kill at any moment, are verified when read, and resume a run exactly.

A checkpoint is a folder ``<run>/checkpoints/step-NNNNNNNN`` holding:
- ``trainable.safetensors``: the trainable parameters (fp32, by name);
- ``buffers.safetensors``: the buffers training updates (BatchNorm running statistics, by name);
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW's moment tensors and its param groups/steps;
- ``rng-<rank>.safetensors``: every rank's torch generator states, CPU and (on a GPU) CUDA. They are the
  only random streams a training step draws from: dropout masks (``nn.Dropout`` on the device's
  generator) and the Philox seed of every ``packed_attention`` call with dropout (drawn from the CPU
  generator). The DataLoader draws nothing from them: its base seed (from which torch derives each
  worker's seed) comes from a generator seeded by ``(run.seed, epoch, rank)``, and the sampler's plan
  is a pure function of ``(run.seed, epoch)``; so nothing drawn per epoch needs saving;
- ``state.json``: step, epoch, sampler cursor, token/target/skip counters, the current streak of
  non-finite steps, world size, accumulation, the config (and its fingerprint), the data fingerprint;
- ``COMPLETE``: written last: the sha256 of every other file, as ``sha256sum`` lines (so
  ``sha256sum -c COMPLETE`` inside the folder checks it without this project).
It is written into ``step-NNNNNNNN.tmp`` and renamed once complete; only then are older checkpoints beyond
the newest ``keep_last`` deleted. A kill during a write therefore leaves the previous checkpoint as the
newest complete one; a failing write (disk full) removes the unfinished folder and says which checkpoint
is still intact. Non-finite weights or optimizer moments are never written.

Every file is verified against ``COMPLETE`` when it is read (the bytes hashed are the bytes loaded);
``resumable_checkpoint`` walks the checkpoints from the newest and resumes from the first intact one,
reporting each damaged one in a line naming the file. A checkpoint written before checksums existed
(``COMPLETE`` holds only the step) is loaded unverified, with a warning. The learning-rate schedule is a
pure function of the step, so it has no state of its own.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from alarm.fileio import (
    CorruptFileError,
    atomic_write_bytes,
    atomic_write_text,
    format_checksums,
    fsync_dir,
    parse_checksums,
    read_verified,
    verify_files,
)

from .distributed import World, barrier, gather_lists

__all__ = ["save_checkpoint", "latest_checkpoint", "resumable_checkpoint", "verify_checkpoint", "checkpoint_state",
           "load_checkpoint",
           "check_resumable", "nonfinite_state", "NonFiniteError", "COMPLETE"]

COMPLETE = "COMPLETE"
_MAIN_FILES = ("trainable.safetensors", "buffers.safetensors", "optimizer.safetensors", "optimizer.json",
               "state.json")


class NonFiniteError(ValueError):
    """Training produced, or was handed, non-finite weights or losses (the message names the step and the last
    good checkpoint)."""


def _name(step: int) -> str:
    return f"step-{step:08d}"


def _rng_name(rank: int) -> str:
    return f"rng-{rank}.safetensors"


def _tensor_bytes(tensors: Dict[str, torch.Tensor]) -> bytes:
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def _optimizer_tensors(optimizer: torch.optim.Optimizer, trainable: Dict[str, torch.nn.Parameter]):
    """AdamW's state as ``{"<param name>::<key>": tensor}`` and its index -> parameter name map."""
    names = {id(p): n for n, p in trainable.items()}
    index_to_name = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            index_to_name[len(index_to_name)] = names[id(p)]
    tensors = {f"{index_to_name[i]}::{k}": v for i, s in optimizer.state_dict()["state"].items()
               for k, v in s.items() if isinstance(v, torch.Tensor)}
    return tensors, index_to_name


def nonfinite_state(trainable: Dict[str, torch.nn.Parameter], buffers: Dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer) -> Optional[str]:
    """"<kind> <name>" of the first trainable parameter, training buffer or optimizer moment holding a NaN or
    an infinity; None when all are finite."""
    moments, _ = _optimizer_tensors(optimizer, trainable)
    for kind, tensors in (("trainable parameter", trainable), ("training buffer", buffers),
                          ("optimizer moment", moments)):
        for name, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"{kind} {name}"
    return None


def _complete(root: Path) -> List[Path]:
    """Folders of ``root`` with a COMPLETE marker (checked or not), oldest first."""
    return sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / COMPLETE).is_file())


def save_checkpoint(run_dir: str, step: int, world: World, trainable: Dict[str, torch.nn.Parameter],
                    buffers: Dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, state: dict,
                    keep_last: int) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it). Returns the final folder.

    NonFiniteError (nothing written) when a weight, buffer or optimizer moment is not finite; OSError naming
    the intact previous checkpoint when a write fails (the unfinished folder is removed)."""
    root = Path(run_dir) / "checkpoints"
    tmp, final = root / (_name(step) + ".tmp"), root / _name(step)
    previous = _complete(root)[-1:] if root.is_dir() else []
    bad = nonfinite_state(trainable, buffers, optimizer)  # identical on every rank: all ranks stop here alike
    if bad is not None:
        raise NonFiniteError(f"step {step}: the {bad} is not finite; checkpoint not written (last good checkpoint: "
                             f"{previous[0] if previous else 'none'})")
    moments, index_to_name = _optimizer_tensors(optimizer, trainable)
    try:
        if world.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        barrier(world)
        rng = {"cpu": torch.get_rng_state()}
        if world.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(world.device)
        digests = dict(gather_lists([(_rng_name(world.rank),
                                      atomic_write_bytes(tmp / _rng_name(world.rank), _tensor_bytes(rng)))], world))
        if world.is_main:
            digests["trainable.safetensors"] = atomic_write_bytes(tmp / "trainable.safetensors",
                                                                  _tensor_bytes(trainable))
            digests["buffers.safetensors"] = atomic_write_bytes(tmp / "buffers.safetensors", _tensor_bytes(buffers))
            digests["optimizer.safetensors"] = atomic_write_bytes(tmp / "optimizer.safetensors",
                                                                  _tensor_bytes(moments))
            meta = {"param_groups": optimizer.state_dict()["param_groups"], "index_to_name": index_to_name}
            for name, obj in (("optimizer.json", meta), ("state.json", state)):
                text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
                digests[name] = atomic_write_bytes(tmp / name, text.encode("utf-8"))
            atomic_write_text(tmp / COMPLETE, format_checksums(digests))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            fsync_dir(root)
    except ConnectionError:
        raise  # another rank is gone: not a write failure (distributed.py says so)
    except OSError as exc:
        if world.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        intact = f"the previous checkpoint {previous[0]} is intact" if previous else "no earlier checkpoint exists"
        raise OSError(f"checkpoint {final} could not be written ({exc.strerror or exc}"
                      f"{': ' + str(exc.filename) if exc.filename else ''}); {intact}; free space or fix the disk, "
                      "then run again with --resume auto") from exc
    barrier(world)
    if world.is_main:
        for old in _complete(root)[:-keep_last]:
            shutil.rmtree(old)
    barrier(world)
    return final


def latest_checkpoint(run_dir: str) -> Optional[Path]:
    """The newest checkpoint of a run with a COMPLETE marker, not verified (None if there is none)."""
    root = Path(run_dir) / "checkpoints"
    done = _complete(root) if root.is_dir() else []
    return done[-1] if done else None


def _digests(folder: Path) -> Optional[Dict[str, str]]:
    """The checksums recorded in ``folder``'s COMPLETE (None: written before checksums existed)."""
    text = (folder / COMPLETE).read_text(encoding="utf-8", errors="replace")
    if text.strip().isdigit():
        return None
    digests = parse_checksums(text, folder / COMPLETE)
    missing = [n for n in (*_MAIN_FILES, _rng_name(0)) if n not in digests]
    if missing:
        raise CorruptFileError(f"{folder / COMPLETE}: no checksum for {', '.join(missing)}: the marker is damaged")
    return digests


def verify_checkpoint(folder: Path) -> bool:
    """Check every file of checkpoint ``folder`` against its COMPLETE marker: True when verified, False for a
    checkpoint written before checksums existed (nothing to check); CorruptFileError naming the first damaged
    file (or the missing marker)."""
    if not (folder / COMPLETE).is_file():
        raise CorruptFileError(f"{folder}: incomplete ({COMPLETE} missing: its write or copy was interrupted)")
    digests = _digests(folder)
    if digests is None:
        return False
    verify_files(folder, digests)
    return True


def resumable_checkpoint(run_dir: str, say: Callable[[str], None], before: Optional[str] = None) -> Optional[Path]:
    """The newest intact checkpoint of a run (None when the run has none at all); with ``before``, the newest
    intact one older than the checkpoint named ``before``.

    Each newer checkpoint that is damaged (a file differs from its checksum, is missing or truncated, or the
    folder has no COMPLETE marker although it is not an unfinished ``.tmp`` write) is reported with ``say``
    in one line naming the file, then the fallback is announced; CorruptFileError when every one is damaged.
    """
    root = Path(run_dir) / "checkpoints"
    folders = sorted((p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                      and (before is None or p.name < before)), reverse=True) if root.is_dir() else []
    damaged = []
    for folder in folders:
        try:
            verified = verify_checkpoint(folder)
        except CorruptFileError as exc:
            say(f"alarm train: checkpoint {folder.name} is damaged: {exc}")
            damaged.append(folder.name)
            continue
        if not verified:
            say(f"alarm train: checkpoint {folder.name} was written by an older version without checksums: "
                "loaded unverified")
        if damaged:
            say(f"alarm train: falling back to {folder.name}, the newest intact checkpoint (damaged, left in place: "
                f"{', '.join(damaged)})")
        return folder
    if damaged:
        raise CorruptFileError(f"{root}: no intact checkpoint to resume from (damaged: {', '.join(damaged)}); "
                               "restore one from a copy, or start again in a new run.out_dir")
    return None


def check_resumable(saved: dict, now: dict) -> None:
    """ValueError naming what changed between the saved run (``state.json``) and this one."""
    problems = []
    for key in ("world_size", "accumulation", "data_fingerprint"):
        if saved.get(key) != now.get(key):
            problems.append(f"{key} {saved.get(key)!r} -> {now.get(key)!r}")
    if saved.get("config_fingerprint") != now.get("config_fingerprint"):
        before, after = saved.get("config", {}), now.get("config", {})
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                         and k in now.get("fingerprinted", after))
        problems.append("config " + (", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in changed)
                                     or "changed"))
    if problems:
        raise ValueError("cannot resume: " + "; ".join(problems) + " (start a new run folder, or restore them)")


class _Reader:
    """Reads the files of one checkpoint, each checked against COMPLETE (unchecked for an old checkpoint)."""

    def __init__(self, folder: Path):
        self.folder = folder
        if not (folder / COMPLETE).is_file():
            raise CorruptFileError(f"{folder}: not a complete checkpoint folder ({COMPLETE} missing)")
        self.digests = _digests(folder)

    def bytes(self, name: str) -> bytes:
        if self.digests is None:
            return (self.folder / name).read_bytes()
        if name not in self.digests:
            raise CorruptFileError(f"{self.folder / COMPLETE}: no checksum for {name}")
        return read_verified(self.folder / name, self.digests[name])

    def tensors(self, name: str) -> Dict[str, torch.Tensor]:
        data = self.bytes(name)
        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:  # only reachable unverified (old checkpoints)
            raise CorruptFileError(f"{self.folder / name}: not a readable safetensors file ({exc})") from None

    def json(self, name: str) -> dict:
        try:
            return json.loads(self.bytes(name).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError(f"{self.folder / name}: not valid JSON ({exc})") from None


def _load_into(reader: _Reader, name: str, targets: Dict[str, torch.Tensor], what: str) -> None:
    saved = reader.tensors(name)
    missing, unexpected = sorted(set(targets) - set(saved)), sorted(set(saved) - set(targets))
    if missing or unexpected:
        raise ValueError(f"{reader.folder}: {what} differ (missing {missing[:5]}, unexpected {unexpected[:5]})")
    with torch.no_grad():
        for key, t in targets.items():
            t.copy_(saved[key])


def checkpoint_state(folder: Path) -> dict:
    """The verified ``state.json`` of checkpoint ``folder`` (CorruptFileError naming a damaged file)."""
    return _Reader(folder).json("state.json")


def load_checkpoint(folder: Path, world: World, trainable: Dict[str, torch.nn.Parameter],
                    buffers: Dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict:
    """Load weights, training buffers, optimizer state and this rank's generator states from ``folder``, each
    file verified as it is read (CorruptFileError naming it); returns its ``state.json``."""
    reader = _Reader(folder)
    state = reader.json("state.json")
    _load_into(reader, "trainable.safetensors", trainable, "trainable parameters")
    _load_into(reader, "buffers.safetensors", buffers, "training buffers")
    meta = reader.json("optimizer.json")
    tensors = reader.tensors("optimizer.safetensors")
    device = next(iter(trainable.values())).device
    opt_state: Dict[int, dict] = {}
    for index, name in meta["index_to_name"].items():
        entry = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.split("::", 1)[0] == name}
        if entry:
            opt_state[int(index)] = {k: (v if k == "step" else v.to(device)) for k, v in entry.items()}
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    rng = reader.tensors(_rng_name(world.rank))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and world.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], world.device)
    return state

"""Checkpoints that survive a kill at any moment, and exact resumption.

A checkpoint is a folder ``<run>/checkpoints/step-NNNNNNNN`` holding:
- ``trainable.safetensors``: the trainable parameters (fp32, by name);
- ``buffers.safetensors``: the buffers training updates (BatchNorm running statistics, by name);
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW's moment tensors and its param groups/steps;
- ``rng-<rank>.safetensors``: every rank's torch RNG states (CPU and CUDA);
- ``state.json``: step, epoch, sampler cursor, token/target/skip counters, world size, accumulation, the
  config (and its fingerprint), the data fingerprint;
- ``COMPLETE``: written last.
It is written into ``step-NNNNNNNN.tmp`` and renamed once complete; only then are older checkpoints beyond
the newest ``keep_last`` deleted. ``latest_checkpoint`` ignores anything without ``COMPLETE``, so a kill
during a write leaves the previous checkpoint as the newest loadable one. The learning-rate schedule is
a pure function of the step, so it has no state of its own.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional

import torch
from safetensors.torch import load_file, save_file

from alarm.fileio import atomic_write, atomic_write_json, atomic_write_text, fsync_dir

from .distributed import World, barrier

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint", "restore_rng", "check_resumable"]

COMPLETE = "COMPLETE"


def _name(step: int) -> str:
    return f"step-{step:08d}"


def _save_tensors(path: Path, tensors: Dict[str, torch.Tensor]) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(state, p))


def save_checkpoint(run_dir: str, step: int, world: World, trainable: Dict[str, torch.nn.Parameter],
                    buffers: Dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, state: dict,
                    keep_last: int) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it). Returns the final folder."""
    root = Path(run_dir) / "checkpoints"
    tmp, final = root / (_name(step) + ".tmp"), root / _name(step)
    if world.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(world)
    rng = {"cpu": torch.get_rng_state()}
    if world.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(world.device)
    _save_tensors(tmp / f"rng-{world.rank}.safetensors", rng)
    if world.is_main:
        _save_tensors(tmp / "trainable.safetensors", trainable)
        _save_tensors(tmp / "buffers.safetensors", buffers)
        opt = optimizer.state_dict()
        names = {id(p): n for n, p in trainable.items()}
        index_to_name = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                index_to_name[len(index_to_name)] = names[id(p)]
        tensors = {f"{index_to_name[i]}::{k}": v for i, s in opt["state"].items() for k, v in s.items()
                   if isinstance(v, torch.Tensor)}
        _save_tensors(tmp / "optimizer.safetensors", tensors)
        atomic_write_json(tmp / "optimizer.json", {"param_groups": opt["param_groups"],
                                                   "index_to_name": index_to_name})
        atomic_write_json(tmp / "state.json", state)
    barrier(world)
    if world.is_main:
        atomic_write_text(tmp / COMPLETE, f"{step}\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(root)
        done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / COMPLETE).is_file()
                      and not p.name.endswith(".tmp"))
        for old in done[:-keep_last]:
            shutil.rmtree(old)
    barrier(world)
    return final


def latest_checkpoint(run_dir: str) -> Optional[Path]:
    """The newest complete checkpoint of a run (None if there is none); removes unfinished ``.tmp`` ones."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / COMPLETE).is_file())
    return done[-1] if done else None


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


def _load_into(path: Path, targets: Dict[str, torch.Tensor], what: str) -> None:
    saved = load_file(str(path))
    missing, unexpected = sorted(set(targets) - set(saved)), sorted(set(saved) - set(targets))
    if missing or unexpected:
        raise ValueError(f"{path.parent}: {what} differ (missing {missing[:5]}, unexpected {unexpected[:5]})")
    with torch.no_grad():
        for name, t in targets.items():
            t.copy_(saved[name])


def load_checkpoint(folder: Path, trainable: Dict[str, torch.nn.Parameter], buffers: Dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer) -> dict:
    """Load weights, training buffers and optimizer state from ``folder``; returns its ``state.json``."""
    _load_into(folder / "trainable.safetensors", trainable, "trainable parameters")
    _load_into(folder / "buffers.safetensors", buffers, "training buffers")
    meta = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    device = next(iter(trainable.values())).device
    state: Dict[int, dict] = {}
    for index, name in meta["index_to_name"].items():
        entry = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.split("::", 1)[0] == name}
        if entry:
            state[int(index)] = {k: (v if k == "step" else v.to(device)) for k, v in entry.items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def restore_rng(folder: Path, world: World) -> None:
    """Restore this rank's RNG states saved in ``folder``."""
    rng = load_file(str(folder / f"rng-{world.rank}.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and world.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], world.device)

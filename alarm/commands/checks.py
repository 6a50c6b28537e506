"""Cheap argument checks shared by the CLI commands, run before anything expensive (a model load, a
write into the output folder). Each raises ValueError naming the argument and the reason, which the CLI
wrapper prints as one ``alarm: error:`` line with exit status 2."""
from __future__ import annotations

import os
import re
from typing import Optional, Sequence

from alarm.extras import check_installed

__all__ = ["check_range", "check_device", "check_dtype", "check_input_file", "check_backend_installed",
           "check_hf_model", "DTYPES"]

DTYPES = ("auto", "bfloat16", "float16", "float32")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_range(option: str, value, low=None, high=None, allow_none: bool = False) -> None:
    """``low <= value <= high`` (either bound may be None); ``option`` is the flag, e.g. ``--batch-size``."""
    if value is None:
        if allow_none:
            return
        raise ValueError(f"{option} is required")
    if (low is not None and value < low) or (high is not None and value > high) or value != value:
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{option} must be {bounds}, got {value}")


def check_device(option: str, name: Optional[str]) -> Optional[str]:
    """A torch device string that exists on this machine (None passes through: the command's default)."""
    if name is None:
        return None
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{option} {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise ValueError(f"{option} {name}: CUDA requested but this torch ({torch.__version__}) is a CPU build")
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: CUDA requested but no GPU is visible to this process")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: only {torch.cuda.device_count()} GPU(s) are visible")
    elif dev.type not in ("cpu", "mps", "xpu", "meta"):
        raise ValueError(f"{option} {name}: unsupported device type {dev.type!r}")
    return str(dev)


def check_dtype(option: str, name: str, allowed: Sequence[str] = DTYPES) -> str:
    """One of ``allowed`` (names of torch dtypes)."""
    if name not in allowed:
        raise ValueError(f"{option} must be one of {', '.join(allowed)}, got {name!r}")
    return name


def check_input_file(option: str, path: str) -> str:
    """An existing, readable regular file."""
    if not os.path.exists(path):
        raise ValueError(f"{option}: file not found: {path}")
    if not os.path.isfile(path):
        raise ValueError(f"{option}: not a file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option}: file not readable: {path}")
    return path


def check_backend_installed(option: str, backend: str, package: str) -> None:
    """The optional package a backend needs can be found (without importing it)."""
    check_installed(package, f"{option} {backend}", package)


def check_hf_model(option: str, name: str) -> str:
    """A local model folder holding ``config.json``, or a hub id ``org/name`` (downloaded later).

    A name that looks like a path (starts with ``/``, ``.`` or ``~``, has more than one ``/``, or exists
    locally) must be a folder with ``config.json``.
    """
    local = os.path.expanduser(name)
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.path.exists(local)
    if looks_like_path:
        if not os.path.isdir(local):
            raise ValueError(f"{option}: model folder not found: {name}")
        if not os.path.isfile(os.path.join(local, "config.json")):
            raise ValueError(f"{option}: {name} is not a transformers model folder (no config.json)")
        return local
    if not _HUB_ID.match(name):
        raise ValueError(f"{option}: {name!r} is neither a local model folder nor a hub id like org/name")
    return name

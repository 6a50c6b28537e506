"""One backend registry for every op.

Each public op calls :func:`select_backend` with the backends it implements (fastest first) and any
input-specific reasons a backend cannot run. Rules:

* ``backend="reference"|"triton"|"cuda"|"flash_attn"`` is explicit: the op runs on it or raises a
  ``RuntimeError`` saying why it cannot (never a silent substitute).
* ``backend="auto"`` (the default) takes the first usable backend in the op's order and logs, once per
  (op, backend, reason), why a faster one was skipped. On CPU tensors "auto" is always "reference"
  (the Triton interpreter is a correctness tool, not a CPU backend).
* The environment variable ``ALARM_KERNELS_BACKEND`` replaces "auto" globally; an explicit argument
  still wins. If the forced backend is not implemented for an op, that op falls back to "auto" with a
  one-time log line; if it is implemented but cannot run the inputs, the op raises.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Mapping, Optional

import torch

__all__ = ["BACKENDS", "BACKEND_ENV", "select_backend", "backend_unavailable_reason", "log_once"]

BACKENDS = ("reference", "triton", "cuda", "flash_attn")
BACKEND_ENV = "ALARM_KERNELS_BACKEND"

logger = logging.getLogger("alarm_kernels")
_logged: set = set()


def log_once(key, message: str) -> None:
    """Log ``message`` at INFO level the first time ``key`` is seen in this process."""
    if key not in _logged:
        _logged.add(key)
        logger.info(message)


# the dict os.environ keeps its variables in (CPython; os.environ[...] = ..., del and monkeypatch.setenv update it)
_ENVIRON = getattr(os.environ, "_data", None)
_ENVIRON_KEYS: dict = {}


def env_value(name: str) -> str:
    """``os.environ.get(name, "")``, read on every call but without the two ``KeyError`` that ``os.environ.get``
    raises and catches for an unset name (several microseconds in a call path that costs tens): one lookup in
    the dict ``os.environ`` keeps (``os.environ.get`` where it keeps none)."""
    if _ENVIRON is None:
        return os.environ.get(name, "")
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = _ENVIRON_KEYS[name] = os.environ.encodekey(name)
    value = _ENVIRON.get(key)
    return "" if value is None else os.environ.decodevalue(value)


def triton_interpreting() -> bool:
    """True when Triton kernels run under the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return env_value("TRITON_INTERPRET") == "1"


def backend_unavailable_reason(backend: str, device: torch.device) -> Optional[str]:
    """Why ``backend`` cannot run on ``device`` in this process, or None if it can (generic checks only)."""
    if backend == "reference":
        return None
    if backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and triton_interpreting():
            return None
        return f"inputs are on {device.type}; Triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
    if backend == "cuda":
        if device.type != "cuda":
            return f"inputs are on {device.type}; the CUDA extension needs CUDA tensors"
        from ._ext import extension_unavailable_reason

        return extension_unavailable_reason()
    if backend == "flash_attn":
        if device.type != "cuda":
            return f"inputs are on {device.type}; flash-attn needs CUDA tensors"
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return "flash_attn is not installed (pip install '.[gpu]')"
        return None
    raise ValueError(f"unknown backend {backend!r}; expected one of {('auto',) + BACKENDS}")


def select_backend(
    op: str,
    requested: str,
    device: torch.device,
    implemented: Iterable[str],
    input_reasons: Optional[Mapping[str, Optional[str]]] = None,
) -> str:
    """Resolve ``requested`` to a concrete backend name for ``op``.

    Args:
        op: public op name, used in messages.
        requested: "auto" or one of :data:`BACKENDS`.
        device: device of the op's inputs.
        implemented: backends this op implements, fastest first ("reference" must be among them).
        input_reasons: backend -> reason it cannot handle these particular inputs (None = it can).
    Returns:
        The backend name to run.
    Raises:
        ValueError: unknown backend name.
        RuntimeError: an explicitly requested backend cannot run these inputs.
    """
    forced = env_value(BACKEND_ENV).strip() if requested == "auto" else ""
    key = (op, requested, device, forced, triton_interpreting(), tuple(implemented),
           tuple(input_reasons.items()) if input_reasons else ())
    chosen = _chosen.get(key)
    if chosen is None:
        chosen = _chosen[key] = _select(op, requested, device, key[5], input_reasons or {}, forced)
    return chosen


# (op, requested, device, forced, interpreting, implemented, reasons) -> backend: the checks below read the
# environment and import modules, which is not worth repeating on every call (a few entries per op and device)
_chosen: dict = {}


def _select(op: str, requested: str, device: torch.device, implemented: tuple,
            input_reasons: Mapping[str, Optional[str]], forced: str) -> str:
    if requested != "auto" and requested not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {requested!r}; expected 'auto' or one of {BACKENDS}")
    if requested == "auto":
        if forced and forced != "auto":
            if forced not in BACKENDS:
                raise ValueError(f"{BACKEND_ENV}={forced!r} is not a backend; expected one of {BACKENDS}")
            if forced in implemented:
                requested = forced
            else:
                log_once((op, "env", forced),
                         f"{op}: {BACKEND_ENV}={forced} is not implemented for this op; using auto")
    if requested != "auto":
        if requested not in implemented:
            raise RuntimeError(f"{op}: backend {requested!r} is not implemented; available: {implemented}")
        reason = backend_unavailable_reason(requested, device) or input_reasons.get(requested)
        if reason:
            raise RuntimeError(f"{op}: backend {requested!r} cannot run these inputs: {reason}")
        return requested
    for name in implemented:
        if name != "reference" and device.type == "cpu":
            continue  # the interpreter is a correctness tool; CPU default is the reference
        reason = backend_unavailable_reason(name, device) or input_reasons.get(name)
        if reason is None:
            return name
        log_once((op, name, reason), f"{op}: auto skips backend {name!r}: {reason}")
    return "reference"

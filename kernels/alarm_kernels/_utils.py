"""Small shared helpers for op front ends and backends: input checks, output allocation, Triton config."""
from __future__ import annotations

import contextlib
import functools
import os
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch

from .backend import triton_interpreting

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

_nan_prefill = os.environ.get("ALARM_KERNELS_NAN_PREFILL", "0") == "1"


@contextlib.contextmanager
def nan_prefill(enabled: bool = True):
    """Within this context every output of every backend is allocated filled with NaN (testing aid:
    an element a kernel forgets to write then fails the parity check). Also set by
    ``ALARM_KERNELS_NAN_PREFILL=1``."""
    global _nan_prefill
    previous, _nan_prefill = _nan_prefill, enabled
    try:
        yield
    finally:
        _nan_prefill = previous


def empty_output(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate an output tensor; NaN-filled under :func:`nan_prefill` (floating dtypes only)."""
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    if _nan_prefill and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` itself when it has ``dtype`` (no dispatch: ``Tensor.to`` costs about 2 us even then), else a cast copy."""
    return t if t.dtype == dtype else t.to(dtype)


def check_tensor(
    x,
    name: str,
    *,
    ndim: Optional[int] = None,
    dtypes: Iterable[torch.dtype] = FLOAT_DTYPES,
    device: Optional[torch.device] = None,
) -> None:
    """Raise ValueError naming ``name`` if ``x`` is not a tensor of the given rank, dtype and device
    (``dtypes`` a tuple or set; ``device`` a torch.device or a string)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {x.dtype}; supported: {tuple(dtypes)}")
    if device is not None and x.device != (device if isinstance(device, torch.device) else torch.device(device)):
        raise ValueError(f"{name} is on {x.device}, expected {device}")


AUTOTUNE_ENV = "ALARM_KERNELS_AUTOTUNE"


def autotune_enabled() -> bool:
    """True when ``ALARM_KERNELS_AUTOTUNE=1``: Triton benchmarks every candidate config per new shape key.
    Off by default (0): every kernel runs one fixed config from its table (see :class:`DefaultConfig`), so a
    first GPU run, CUDA-graph capture and all DDP ranks see the same configs and no tuning time."""
    return os.environ.get(AUTOTUNE_ENV, "0").strip() == "1"


@dataclass(frozen=True)
class DefaultConfig:
    """One row of a kernel's fixed-config table; the first row whose conditions all hold picks the config.

    Attributes:
        config: index into the kernel's autotune configs.
        dtypes: storage dtypes the row applies to (empty: any).
        min_capability: smallest CUDA compute capability, as ``major * 10 + minor`` (0: any device).
        max_width: largest value of the kernel's width argument the row applies to (None: any).
    """

    config: int
    dtypes: Tuple[torch.dtype, ...] = ()
    min_capability: int = 0
    max_width: Optional[int] = None

    def matches(self, dtype: Optional[torch.dtype], capability: int, width: Optional[int]) -> bool:
        """True if this row applies to a launch with these properties."""
        if self.dtypes and dtype not in self.dtypes:
            return False
        if capability < self.min_capability:
            return False
        return self.max_width is None or width is None or width <= self.max_width


def _first_tensor(values) -> Optional[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (tuple, list)):
            found = _first_tensor(value)
            if found is not None:
                return found
    return None


@functools.lru_cache(maxsize=None)
def _capability(device_index: int) -> int:
    major, minor = torch.cuda.get_device_capability(device_index)
    return major * 10 + minor


def launch_properties(named_args: Mapping[str, object]) -> Tuple[Optional[torch.dtype], int]:
    """(dtype of the first tensor argument, compute capability ``major * 10 + minor`` of its device; 0 off CUDA)."""
    tensor = _first_tensor(named_args.values())
    if tensor is None:
        return None, 0
    capability = _capability(tensor.device.index or 0) if tensor.device.type == "cuda" else 0
    return tensor.dtype, capability


def fixed_config_index(
    table: Sequence[DefaultConfig], named_args: Mapping[str, object], width_arg: Optional[str] = None,
    capability: Optional[int] = None,
) -> int:
    """Index of the config that ``table`` picks for a launch (0 when no row matches); ``capability`` replaces
    the device's (e.g. to ask what an sm_90 launch would run on a machine without a GPU)."""
    dtype, device_capability = launch_properties(named_args)
    capability = device_capability if capability is None else capability
    width = named_args.get(width_arg) if width_arg else None
    width = int(width) if isinstance(width, int) else None
    for row in table:
        if row.matches(dtype, capability, width):
            return row.config
    return 0


def triton_autotune(
    configs,
    key,
    interpret_config: int = 0,
    *,
    defaults: Sequence[DefaultConfig] = (),
    width_arg: Optional[str] = None,
    **kwargs,
):
    """``triton.autotune`` that honours ``ALARM_KERNELS_AUTOTUNE`` (see :func:`autotune_enabled`).

    Args:
        configs: the autotune candidates.
        key: argument names whose values key the tuning cache.
        interpret_config: the config fixed under ``TRITON_INTERPRET=1`` (autotune needs a driver there).
        defaults: the kernel's fixed-config table (first matching row wins; config 0 when none matches),
            used when autotuning is off. A config saved by ``python -m alarm_kernels.tune`` for the same
            device, versions and shape key wins over the table.
        width_arg: the argument compared with :attr:`DefaultConfig.max_width`.
        kwargs: passed to ``triton.autotune``. A caller that passes its own ``prune_configs_by`` decides for
            itself which configs run (it reads the environment variable itself).
    """
    import triton

    if triton_interpreting():
        fixed = dict(configs[interpret_config].kwargs)
        return triton.heuristics({name: (lambda _args, v=value: v) for name, value in fixed.items()})
    if "prune_configs_by" in kwargs:
        return triton.autotune(configs=configs, key=key, **kwargs)

    def decorate(fn):
        def prune(candidates, named_args, **constexprs):
            if autotune_enabled():
                return candidates
            from .tune import saved_config

            saved = saved_config(candidates, key, {**named_args, **constexprs}, fn.__name__)
            if saved is not None:
                return [saved]
            return [candidates[fixed_config_index(defaults, named_args, width_arg)]]

        prune.defaults, prune.width_arg = tuple(defaults), width_arg  # the table, for static checks
        return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": prune}, **kwargs)(fn)

    return decorate


def offsets_on_host(cu_seqlens: torch.Tensor) -> bool:
    """Whether the reference backends read ``cu_seqlens`` on the host and build their index tensors in Python
    (offsets on the CPU: reading them is no device sync, and a few integer loops cost less than the dozen small
    tensor ops of the device route) or derive them with tensor ops on the device (no host read: GPUs). Tests
    replace this function to run the device route on CPU."""
    return cu_seqlens.device.type == "cpu"


class TensorMemo:
    """Values derived from tensors (host reads of offsets, masks), reused while the same tensor object, unchanged
    (same ``_version``), comes back with the same key: a model's layers then read the device once per forward.

    Holds at most ``limit`` entries. When full it first drops the entries of tensors that no longer exist (those of
    earlier forwards) and forgets everything only if every entry is still alive, so an entry of the forward in flight
    survives the arrival of a new one (forgetting it would cost one more device read in a later layer)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.entries: Dict[int, tuple] = {}  # id(tensor) -> (weakref, (version, key), value)

    def get_or_compute(self, tensor: torch.Tensor, key: Any, compute: Callable[[], Any]) -> Any:
        """The value stored for (``tensor``, ``key``), else ``compute()`` stored and returned (always computed while
        compiling: nothing is kept then)."""
        if torch.compiler.is_compiling():
            return compute()
        tag = (tensor._version, key)
        hit = self.entries.get(id(tensor))
        if hit is not None and hit[0]() is tensor and hit[1] == tag:
            return hit[2]
        value = compute()
        if len(self.entries) >= self.limit and id(tensor) not in self.entries:
            self.entries = {k: e for k, e in self.entries.items() if e[0]() is not None}
            if len(self.entries) >= self.limit:
                self.entries.clear()
        self.entries[id(tensor)] = (weakref.ref(tensor), tag, value)
        return value


def is_compiling() -> bool:
    """True while torch.compile / dynamo traces (skip host-side value checks then)."""
    return torch.compiler.is_compiling()

"""The numerics idiom every op is proven with (docs/kernels.md, "How numerics are proven").

A fast backend's output is compared with an *oracle*: the reference backend evaluated in float64 on the
same inputs. It passes when its max abs error is at most ``k`` times the error of the reference backend
run in the same low precision (k = 2 forward, 3 backward), plus a small dtype-dependent floor scaled by
the oracle's magnitude. Used by tests/ and by the kernel report (``alarm demo``).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["ParityResult", "parity", "assert_parity", "check_backend", "FLOOR", "random_seqlens",
           "count_host_transfers"]

# Absolute floor, relative to max(1, max|oracle|): the irreducible rounding of one output element.
FLOOR = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


@dataclass
class ParityResult:
    """Max abs errors against the oracle, and whether the fast backend is within the budget."""

    name: str
    fast_error: float
    reference_error: float
    budget: float
    ok: bool

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"{self.name}: fast err {self.fast_error:.3e}, same-dtype reference err {self.reference_error:.3e}, "
            f"budget {self.budget:.3e} [{verdict}]"
        )


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: {tuple(a.shape)} vs oracle {tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    diff = (a.detach().double().cpu() - b.detach().double().cpu()).abs()
    if torch.isnan(diff).any():
        return float("inf")  # an unwritten (NaN-prefilled) or NaN-producing element
    return float(diff.max())


def parity(
    fast: torch.Tensor,
    reference_low: torch.Tensor,
    oracle: torch.Tensor,
    *,
    k: float = 2.0,
    dtype: Optional[torch.dtype] = None,
    name: str = "output",
) -> ParityResult:
    """Compare ``fast`` and ``reference_low`` (same low dtype) with the float64 ``oracle``."""
    dtype = dtype or fast.dtype
    scale = max(1.0, float(oracle.detach().double().abs().max())) if oracle.numel() else 1.0
    fast_err = _max_abs_diff(fast, oracle)
    ref_err = _max_abs_diff(reference_low, oracle)
    budget = k * ref_err + FLOOR[dtype] * scale
    return ParityResult(name, fast_err, ref_err, budget, fast_err <= budget)


def assert_parity(fast, reference_low, oracle, *, k: float = 2.0, dtype=None, name: str = "output") -> ParityResult:
    """:func:`parity`, raising AssertionError with the numbers when the fast backend is out of budget."""
    result = parity(fast, reference_low, oracle, k=k, dtype=dtype, name=name)
    if not result.ok:
        raise AssertionError(str(result))
    return result


def random_seqlens(generator: torch.Generator, n: int, max_len: int, *, allow_empty: bool = True) -> list:
    """``n`` random sequence lengths in ``[0 or 1, max_len]`` drawn from ``generator``."""
    low = 0 if allow_empty else 1
    return torch.randint(low, max_len + 1, (n,), generator=generator).tolist()


def _cast(value, dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _leaves(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    return []


def _run(fn, inputs: dict, grad_names, grad_output_seed: int, backend: str):
    """Run ``fn(**inputs, backend=backend)``; backprop a seeded random cotangent through its first output."""
    for name in grad_names:
        for t in _leaves(inputs[name]):
            t.requires_grad_(True)
    out = fn(**inputs, backend=backend)
    main = out[0] if isinstance(out, (tuple, list)) else out
    gen = torch.Generator().manual_seed(grad_output_seed)
    cotangent = torch.randn(main.shape, generator=gen, dtype=torch.float64).to(main.dtype).to(main.device)
    leaves = [t for name in grad_names for t in _leaves(inputs[name])]
    grads = torch.autograd.grad(main, leaves, cotangent, allow_unused=True) if leaves else []
    return main.detach(), [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, leaves, strict=True)]


def check_backend(fn, inputs: dict, grad_names, *, backend: str, dtype: torch.dtype, label: str = "",
                  seed: int = 0) -> list:
    """Prove one backend of one op at one shape with the parity idiom, forward and backward.

    Args:
        fn: the public op (called as ``fn(**inputs, backend=...)``; its first output is checked).
        inputs: keyword inputs; floating tensors (also inside lists) are cast to ``dtype`` for the
            backend under test and the same-dtype reference, and to float64 for the oracle.
        grad_names: names of inputs to differentiate (their gradients are checked with k = 3).
    Returns:
        A list of :class:`ParityResult` (output first, then one per gradient); outputs NaN-prefilled.
    """
    from ._utils import nan_prefill

    def prepared(d):
        return {k: _cast(v, d) for k, v in inputs.items()}

    oracle_out, oracle_grads = _run(fn, prepared(torch.float64), grad_names, seed, "reference")
    ref_out, ref_grads = _run(fn, prepared(dtype), grad_names, seed, "reference")
    with nan_prefill():
        fast_out, fast_grads = _run(fn, prepared(dtype), grad_names, seed, backend)
    prefix = f"{label} [{backend}, {str(dtype).replace('torch.', '')}]"
    results = [parity(fast_out, ref_out, oracle_out, k=2.0, dtype=dtype, name=f"{prefix} out")]
    names = [f"d{name}[{i}]" if len(_leaves(inputs[name])) > 1 else f"d{name}"
             for name in grad_names for i in range(len(_leaves(inputs[name])))]
    for n, f, r, o in zip(names, fast_grads, ref_grads, oracle_grads, strict=True):
        results.append(parity(f, r, o, k=3.0, dtype=dtype, name=f"{prefix} {n}"))
    return results


# Tensor methods that copy a value to the host (each one a device sync on GPU)
HOST_TRANSFER_METHODS = ("item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")


@contextlib.contextmanager
def count_host_transfers():
    """Count device-to-host transfers made inside the block, on any device (CPU included, by patching
    :data:`HOST_TRANSFER_METHODS` of ``torch.Tensor``). Yields a ``collections.Counter`` mapping the
    calling site ``"file:line method"`` (first frame outside torch) to the number of transfers."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_TRANSFER_METHODS}
    torch_dir = os.path.dirname(torch.__file__)

    def counting(name, original):
        @functools.wraps(original)
        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(torch_dir):
                frame = frame.f_back
            site = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
            counts[f"{site} {name}"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)

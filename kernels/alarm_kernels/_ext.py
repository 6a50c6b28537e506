"""Lazy loading of the compiled CUDA extension ``alarm_kernels._C``."""
from __future__ import annotations

import functools
from typing import Optional


@functools.lru_cache(maxsize=1)
def _load():
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # not built (CPU torch or no nvcc at install time)
        return None, (
            f"the CUDA extension alarm_kernels._C is not built ({exc}); build it on a machine with a CUDA "
            "torch and nvcc: pip install --no-build-isolation -e ."
        )
    return _C, None


def extension_unavailable_reason() -> Optional[str]:
    """None if ``alarm_kernels._C`` imports, else a sentence saying why not."""
    return _load()[1]


def extension():
    """The loaded ``alarm_kernels._C`` module. Raises RuntimeError if it is not built."""
    module, reason = _load()
    if module is None:
        raise RuntimeError(reason)
    return module

"""Optional dependencies: one way to import them and one error when they are missing."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Optional

__all__ = ["MissingExtraError", "require", "check_installed"]


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is missing or does not import. A ValueError too, so the CLI reports it in one line
    (``alarm: error: ...``, exit 2) instead of a traceback."""


def _install_hint(package: str, extra: Optional[str]) -> str:
    if extra is None:
        return f"pip install {package}"
    return f"pip install 'alarm-toolkit[{extra}]', or pip install {package}"


def require(module: str, what: str, package: str, extra: Optional[str] = None) -> ModuleType:
    """Import ``module`` for ``what`` (e.g. "llm_kernels='liger'") or raise :class:`MissingExtraError` naming the
    package (and the project's extra holding it). An installed package that fails to import (e.g. a build that
    does not match the installed torch: ImportError or OSError) is reported the same way, with its first line."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingExtraError(f"{what} needs the {package} package ({_install_hint(package, extra)}); "
                                f"importing {module} failed: {first}") from None


def check_installed(module: str, what: str, package: str, extra: Optional[str] = None) -> None:
    """Raise :class:`MissingExtraError` unless ``module`` can be found, without importing it (for checks made
    before any work starts)."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingExtraError(f"{what} needs the {package} package, which is not installed "
                                f"({_install_hint(package, extra)})")

"""Running a bench script by its path (``python bench/x.py``) puts ``bench/`` first on ``sys.path``: no module there
may then take the name of an installed package (``bench/kernels.py`` once hid Hugging Face's ``kernels``, which
transformers imports, and broke every script that loads a model)."""
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_bench_module_shadows_an_installed_module():
    names = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("__")) + \
        sorted(p.name for p in BENCH.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert "ops" in names and "e2e_step" in names, names
    bench_dir = str(BENCH)
    shadowed = []
    for name in names:
        if name in sys.builtin_module_names or name in sys.stdlib_module_names:
            shadowed.append(name)
            continue
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        origin = getattr(spec, "origin", None) or ""
        if spec is not None and not origin.startswith(bench_dir):
            shadowed.append(f"{name} ({origin or 'namespace package'})")
    assert not shadowed, f"bench/ modules named like installed or standard modules: {shadowed}"

"""alarm_kernels stands alone: no module of it imports the ``alarm`` application, read from the sources (lazy,
function-level imports included) and seen at run time (ops forward and backward, the tuner's workload and its
config file written)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import alarm_kernels

PACKAGE_DIR = Path(alarm_kernels.__file__).resolve().parent


def application_imports(package_dir: Path) -> List[Tuple[str, int, str]]:
    """(file, line, imported name) of every import of ``alarm`` or ``alarm.*`` in the ``.py`` files below
    ``package_dir``, wherever it stands in the file."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            found += [(str(path.relative_to(package_dir)), node.lineno, n) for n in names
                      if n == "alarm" or n.startswith("alarm.")]
    return found


def test_no_source_file_of_the_toolkit_imports_the_application():
    assert len(list(PACKAGE_DIR.rglob("*.py"))) > 10, f"the toolkit's sources were not found under {PACKAGE_DIR}"
    assert application_imports(PACKAGE_DIR) == []


def test_the_scan_sees_lazy_and_dotted_imports(tmp_path):
    (tmp_path / "ok.py").write_text("import alarm_kernels\nfrom alarm_kernels.varlen import pack\nimport alarmist\n")
    (tmp_path / "lazy.py").write_text("def f():\n    from alarm.fileio import atomic_write_json\n")
    (tmp_path / "plain.py").write_text("import os, alarm.train\n")
    assert application_imports(tmp_path) == [("lazy.py", 2, "alarm.fileio"), ("plain.py", 1, "alarm.train")]


def test_ops_and_tuner_run_without_importing_the_application(tmp_path):
    """Every op forward and backward (reference backend, and the tuner's Triton workload under the interpreter)
    and the tuner's config writer, in a fresh interpreter: afterwards no ``alarm`` module is loaded."""
    code = f"""
import sys, torch
import alarm_kernels as ak
from alarm_kernels import tune
cu = ak.seqlens_to_cu_seqlens([3, 0, 5])
x = torch.randn(8, 4, requires_grad=True)
ak.varlen_pool(x, cu, 2, backend="reference")[0].sum().backward()
ak.varlen_conv1d(x, cu, torch.randn(6, 4, 3), torch.randn(6), backend="reference")[0].sum().backward()
ak.weighted_layer_sum([x, x * 2], torch.zeros(2, requires_grad=True), backend="reference").sum().backward()
ak.multi_encoder_concat([x, x], [cu, cu], torch.randn(5, 8), None, backend="reference")[0].sum().backward()
q = torch.randn(8, 2, 32, requires_grad=True)
ak.packed_attention(q, q, q, cu, cu, 5, 5, causal=True, backend="reference").sum().backward()
tune._workload([8], 8, 6, torch.float32, "cpu")
tune.save_entries({str(tmp_path / 'tuned.json')!r}, {{"kernel": {{"[1]": {{"num_warps": 4}}}}}}, "cpu")
loaded = sorted(m for m in sys.modules if m == "alarm" or m.startswith("alarm."))
assert not loaded, loaded
print("ok")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    assert '"num_warps": 4' in (tmp_path / "tuned.json").read_text()

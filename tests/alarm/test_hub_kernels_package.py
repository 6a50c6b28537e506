"""With and without Hugging Face's ``kernels`` package (transformers >= 5.2x installs it): the repository folder
``kernels/`` never shadows it nor runs ``alarm_kernels`` twice, a stock Qwen3 with ``attn_implementation=
"alarm_packed"`` sends every attention call to this project's op, and no model this project loads is
"kernelized" with hub kernels.

Each case runs in a fresh interpreter whose ``sys.path`` starts with the repository root (as in a checkout):
"installed" uses this environment's site-packages as they are; "absent" uses a copy of it (symbolic links)
without the ``kernels`` package and its metadata, which is what a machine without it looks like to both
``import kernels`` and transformers' ``is_kernels_available()``.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES = Path(next(p for p in site.getsitepackages() if Path(p, "torch").is_dir()))
HUB_KERNELS_INSTALLED = (SITE_PACKAGES / "kernels" / "__init__.py").is_file()
CASES = ["installed", "absent"]


def _site_dir(case: str, tmp_path: Path) -> Path:
    if case == "installed":
        if not HUB_KERNELS_INSTALLED:
            pytest.skip("Hugging Face's kernels package is not installed in this environment (requirements/cpu.lock "
                        "installs it)")
        return SITE_PACKAGES
    copy = tmp_path / "site-packages-without-hub-kernels"
    copy.mkdir()
    for entry in SITE_PACKAGES.iterdir():
        if entry.name == "kernels" or (entry.name.startswith("kernels-") and entry.name.endswith(".dist-info")):
            continue
        (copy / entry.name).symlink_to(entry)
    return copy


def _run(case: str, tmp_path: Path, body: str) -> None:
    """Run ``body`` with the case's site-packages (its .pth files processed, so the editable install works) and the
    repository root first on sys.path; it must print ``ok``. ``HUB`` tells the body which case it is."""
    prelude = (
        "import site, sys\n"
        f"site.addsitedir({str(_site_dir(case, tmp_path))!r})\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        f"HUB = {case == 'installed'}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-S", "-c", prelude + body], capture_output=True, text=True,
                          timeout=600, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.stdout[-2000:], proc.stderr[-4000:])


@pytest.mark.parametrize("case", CASES)
def test_repository_folder_kernels_neither_shadows_the_hub_package_nor_reruns_the_toolkit(case, tmp_path):
    _run(case, tmp_path, """
import torch
import alarm_kernels
from transformers.utils.import_utils import is_kernels_available
import kernels
if HUB:
    # the hub's package, not the repository folder
    assert is_kernels_available()
    assert kernels.__file__ and 'site-packages' in kernels.__file__, kernels
    assert hasattr(kernels, 'get_kernel'), dir(kernels)
else:
    # the repository folder is a namespace package that must not look like an installed `kernels`
    assert not is_kernels_available()
    assert getattr(kernels, '__file__', None) is None and not hasattr(kernels, 'varlen_pool'), kernels
# the toolkit was imported once, under its own name (a second copy would register its ops twice)
assert not [m for m in sys.modules if m.startswith('kernels.alarm_kernels')]
x = torch.randn(10, 4); cu = alarm_kernels.seqlens_to_cu_seqlens([3, 7])
for _ in range(50):
    y, _ = alarm_kernels.varlen_pool(x, cu, 2)
assert torch.allclose(y[0], x[:2].mean(0))
print('ok')
""")


@pytest.mark.parametrize("case", CASES)
def test_qwen3_routes_every_attention_call_to_alarm_packed_and_is_never_kernelized(case, tmp_path):
    """A stock Qwen3 loaded with ``attn_implementation="alarm_packed"``, and the frozen LLM this project loads from
    a folder: every attention call of a forward reaches ``packed_attention`` (one per layer), the logits equal
    eager attention's, and the model is not kernelized (transformers 5.25 kernelizes by default when the hub
    package is installed)."""
    _run(case, tmp_path, f"""
import dataclasses, torch
from transformers import Qwen3Config, Qwen3ForCausalLM
import alarm_kernels.attention.hf as hf
from alarm.model import ALARMConfig
from alarm.model.llm import FrozenLLM
folder = {str(tmp_path / 'qwen3')!r}
cfg = Qwen3Config(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=64)
torch.manual_seed(0)
Qwen3ForCausalLM._from_config(cfg).save_pretrained(folder)
calls = []
op = hf.packed_attention
def counting(*args, **kwargs):
    calls.append(args[0].shape)
    return op(*args, **kwargs)
hf.packed_attention = counting
hf.register_hf_attention()
ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(1))

stock = Qwen3ForCausalLM.from_pretrained(folder, attn_implementation=hf.ATTENTION_NAME, use_kernels=False)
eager = Qwen3ForCausalLM.from_pretrained(folder, attn_implementation="eager", use_kernels=False)
with torch.no_grad():
    got, want = stock(ids).logits, eager(ids).logits
assert len(calls) == 3, calls
assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
assert not stock.use_kernels

calls.clear()
llm = FrozenLLM(dataclasses.replace(ALARMConfig.tiny(), llm_path=folder, llm_config=None, llm_dtype='float32'), 101)
assert not llm.model.use_kernels, 'the frozen LLM was kernelized'
norm = llm.model.model.norm
assert norm.forward.__func__ is type(norm).forward, 'RMSNorm forward replaced'
embeds = llm.embed()(ids.reshape(-1))
cu = torch.tensor([0, 9, 18], dtype=torch.int32)
pos = torch.arange(9).repeat(2)
with torch.no_grad():
    hidden = llm.hidden_packed(embeds, pos, cu, 9)
    want = eager.model(ids).last_hidden_state.reshape(18, -1)
assert len(calls) == 3, calls
assert torch.allclose(hidden, want, atol=1e-5), (hidden - want).abs().max()
print('ok')
""")

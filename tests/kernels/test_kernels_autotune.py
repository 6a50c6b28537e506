"""ALARM_KERNELS_AUTOTUNE: off by default (one fixed config per launch, from the kernel's table or a saved tuning
result), every candidate when set to 1. Checked on the autotuner's pruning hook, without launching anything."""
import importlib

import pytest
import torch
import triton
import triton.language as tl

from alarm_kernels import _utils, tune
from alarm_kernels._utils import DefaultConfig

CONFIGS = [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((64, 2), (128, 4), (256, 8))]
TABLE = (
    DefaultConfig(2, max_width=128),
    DefaultConfig(1, dtypes=(torch.bfloat16,), min_capability=80),
    DefaultConfig(0),
)


@pytest.fixture
def tuner(monkeypatch):
    """A real ``triton.autotune`` object (as on a GPU) around a tiny kernel, with the table above."""
    monkeypatch.setattr(_utils, "triton_interpreting", lambda: False)
    monkeypatch.delenv("ALARM_KERNELS_AUTOTUNE", raising=False)

    @_utils.triton_autotune(configs=CONFIGS, key=["n"], defaults=TABLE, width_arg="n")
    @triton.jit
    def _copy_kernel(src, dst, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)

    yield _copy_kernel
    tune.install({})


def _pruned(tuner, n, dtype=torch.bfloat16):
    x = torch.zeros(4, dtype=dtype)
    return tuner.early_config_prune(tuner.configs, {"src": x, "dst": x, "n": n})


@pytest.mark.parametrize("dtype, capability, width, expected", [
    (torch.bfloat16, 90, 1024, 1),  # bf16 on sm_90: second row
    (torch.bfloat16, 75, 1024, 0),  # device too old: catch-all row
    (torch.float32, 90, 1024, 0),  # dtype not listed: catch-all row
    (torch.bfloat16, 90, 64, 2),  # narrow: first row wins
])
def test_table_picks_first_matching_row(monkeypatch, dtype, capability, width, expected):
    monkeypatch.setattr(_utils, "launch_properties", lambda args: (dtype, capability))
    assert _utils.fixed_config_index(TABLE, {"n": width}, "n") == expected


def test_autotune_off_by_default_runs_one_table_config(tuner, monkeypatch):
    monkeypatch.setattr(_utils, "launch_properties", lambda args: (torch.bfloat16, 90))
    assert _pruned(tuner, 1024) == [CONFIGS[1]]
    assert _pruned(tuner, 100) == [CONFIGS[2]]
    monkeypatch.setenv("ALARM_KERNELS_AUTOTUNE", "0")
    assert _pruned(tuner, 1024) == [CONFIGS[1]]


def test_autotune_on_keeps_every_candidate(tuner, monkeypatch):
    monkeypatch.setenv("ALARM_KERNELS_AUTOTUNE", "1")
    assert _pruned(tuner, 1024) == CONFIGS


def test_saved_tuning_result_wins_over_the_table(tuner):
    x = torch.zeros(4, dtype=torch.float32)
    key = tune.shape_key(["n"], {"src": x, "dst": x, "n": 4096})
    assert key == '[4096, "torch.float32", "torch.float32"]'  # the key Triton's autotuner caches on
    tune.install({"_copy_kernel": {key: {"kwargs": {"BLOCK": 256}, "num_warps": 8, "num_stages": 3}}})
    assert _pruned(tuner, 4096, torch.float32) == [CONFIGS[2]]
    assert _pruned(tuner, 2048, torch.float32) == [CONFIGS[0]]  # other shape: the table


@pytest.mark.parametrize("op", tune.TUNED_OPS)
def test_every_op_table_picks_one_of_its_configs(op, monkeypatch):
    """Each kernel's table, at every width and device class, picks a config of its own list (a bad index
    would otherwise only fail on a GPU). The module is loaded as on a GPU, then restored."""
    name = f"alarm_kernels.{op}.triton"
    module = importlib.import_module(name)
    monkeypatch.setattr(_utils, "triton_interpreting", lambda: False)
    try:
        gpu_module = importlib.reload(module)
        tuners = [v for v in vars(gpu_module).values() if isinstance(v, triton.runtime.Autotuner)]
        assert tuners, f"{op} has no autotuned kernel"
        for dtype, capability in ((torch.bfloat16, 90), (torch.float32, 90), (torch.float16, 75)):
            monkeypatch.setattr(_utils, "launch_properties", lambda args, d=dtype, c=capability: (d, c))
            for width in (64, 768, 1280, 2560):
                for t in tuners:
                    args = {a: width for a in t.arg_names}
                    chosen = t.early_config_prune(t.configs, args)
                    assert len(chosen) == 1 and chosen[0] in t.configs
    finally:
        monkeypatch.undo()
        importlib.reload(module)

"""Every Triton kernel of the package compiles for sm_90, with no GPU needed.

The interpreter (``TRITON_INTERPRET=1``, how the other tests run Triton on CPU) accepts things the GPU compiler
rejects: non-constexpr globals, dtype mixes, layouts the backend cannot lower. ``tests/kernels/sm90_compile.py`` runs
the whole GPU compiler down to ptxas for every kernel of one op, in fp16, bf16 and fp32, for its first and largest
autotune configs (see there), in a subprocess without ``TRITON_INTERPRET``, one per CPU core at a time.
On top of compiling, the PTX must use tensor cores for the fp16/bf16 GEMM-like kernels and must not for fp32 (their
``"ieee"`` dots would silently lose precision as tf32), and every compiled config must fit sm_90's shared memory.
Attention is also a static performance check: its default (untuned) configs at the model's head dims must not
spill registers (``ptxas -v``). Each op prints a table of registers, spills, shared memory and tensor-core and
cp.async instruction counts (``pytest -s`` shows it).
"""
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# slowest first
OPS = ("attention", "varlen_conv1d", "multi_encoder_concat", "frontend", "varlen_pool", "weighted_layer_sum")
# the kernels built on tl.dot: tensor-core instructions (wgmma / mma.sync) in fp16/bf16, none in fp32
DOT_KERNELS = {
    "varlen_conv1d": {"_fwd_kernel", "_dx_kernel", "_dw_kernel"},
    "multi_encoder_concat": {"_concat_linear_fwd_kernel", "_grad_stream_kernel", "_grad_weight_kernel"},
    "attention": {"_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"},
    "frontend": {"_mel_kernel"},  # fp32 only: its "ieee" dot must not run as tf32
}
SM90_MAX_SHARED = 227 * 1024  # bytes of shared memory one block may use on sm_90
# attention head dims the default configs must run without register spills: the ALARM model's (Qwen3 128, CA 64,
# perceiver 192)
NO_SPILL_HEAD_DIMS = {"attention": (64, 128, 192)}
_SCRIPT = Path(__file__).with_name("sm90_compile.py")


def _compile_op(op, env):
    return subprocess.run([sys.executable, str(_SCRIPT), op], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compile_runs(request, tmp_path_factory):
    """Start the compile subprocesses of the ops selected in this session, one per CPU core at a time, slowest
    first; map op -> future of its ``subprocess.CompletedProcess``."""
    selected = {item.callspec.params["op"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_kernels_compile_for_sm90"}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))  # compile for real, not from a cache
    env["TRITON_DISABLE_LINE_INFO"] = "1"  # debug info only; saves compile time
    env["ALARM_KERNELS_AUTOTUNE"] = "1"  # compile the configs GPU autotuning would try, not just the first
    pool = ThreadPoolExecutor(max_workers=os.cpu_count())
    yield {op: pool.submit(_compile_op, op, env) for op in OPS if op in selected}
    pool.shutdown(cancel_futures=True)


def _results(future):
    """(records, launched kernel names) of one op's compile subprocess."""
    proc = future.result()
    assert proc.returncode == 0, f"compile subprocess failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return lines[1:], lines[0]["launched"]


def _describe(op, r):
    return f"{op}.{r['kernel']} [{r['variant']}] [{r['config']}]"


def _table(op, records) -> str:
    """One line per compile: kernel, variant, config (* = default), registers, spill bytes, shared memory, mma."""
    lines = [f"{op}: {'kernel':<24} {'variant':<70} {'config':<46} {'regs':>4} {'spill st/ld':>11} {'smem KB':>7} "
             f"{'mma':>4} {'cp.async':>8}"]
    for r in records:
        if r["error"]:
            continue
        spills = f"{r['spill_stores']}/{r['spill_loads']}" if r["spill_stores"] is not None else "cached"
        config = ("* " if r["default"] else "  ") + r["config"]
        lines.append(f"{op}: {r['kernel']:<24} {r['variant'][:70]:<70} {config:<46} {r['registers'] or 0:>4}"
                     f" {spills:>11} {r['shared'] / 1024:>7.1f} {r['wgmma'] + r['mma']:>4} {r['cp_async']:>8}")
    return "\n".join(lines)


def _head_dim(variant: str):
    found = re.search(r"HEAD_DIM=(\d+)", variant)
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("op", OPS)
def test_kernels_compile_for_sm90(op, compile_runs):
    records, launched = _results(compile_runs[op])
    print("\n" + _table(op, records))
    failed = [f"{_describe(op, r)}: {r['error']}" for r in records if r["error"]]
    assert not failed, f"{len(failed)} of {len(records)} sm_90 compiles failed:\n\n" + "\n\n".join(failed)
    missing = set(launched) - {r["kernel"] for r in records}
    assert not missing, (f"{op} launches kernels the check never compiles "
                         f"(add them to tests/kernels/sm90_compile.py): {missing}")

    too_big = [f"{_describe(op, r)}: {r['shared']} bytes" for r in records if r["shared"] > SM90_MAX_SHARED]
    assert not too_big, f"configs over sm_90's {SM90_MAX_SHARED} bytes of shared memory:\n" + "\n".join(too_big)
    for r in records:
        if r["kernel"] in DOT_KERNELS.get(op, ()):
            tensor_core = r["wgmma"] + r["mma"] > 0
            if r["dtype"] == "float32":
                assert not tensor_core, f"{_describe(op, r)}: fp32 dots run on tensor cores (tf32, not ieee)"
            else:
                assert tensor_core, f"{_describe(op, r)}: no wgmma / mma.sync in the PTX (dots not on tensor cores)"
    checked = [r for r in records if r["default"] and r["dtype"] != "float32"
               and _head_dim(r["variant"]) in NO_SPILL_HEAD_DIMS.get(op, ())]
    assert all(r["spill_stores"] is not None for r in checked), "ptxas -v output missing (compiled from a cache?)"
    spilling = [f"{_describe(op, r)}: {r['spill_stores']} bytes spilled" for r in checked if r["spill_stores"]]
    assert not spilling, "default configs spill registers:\n" + "\n".join(spilling)
    assert not NO_SPILL_HEAD_DIMS.get(op) or {_head_dim(r["variant"]) for r in checked} == set(NO_SPILL_HEAD_DIMS[op])

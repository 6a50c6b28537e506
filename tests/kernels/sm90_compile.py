"""Compile (warm up, never launch) every Triton kernel of one op for sm_90 on a machine without a GPU.

Run as ``python tests/kernels/sm90_compile.py <op>`` with ``TRITON_INTERPRET`` unset
(tests/kernels/test_triton_sm90_compile.py does): a stand-in driver reports an sm_90 target, so
``JITFunction.warmup`` runs the whole GPU compiler (frontend, TTGIR, LLVM, PTX and ptxas), which catches what
the interpreter accepts and the GPU compiler rejects. Each kernel is compiled in fp16, bf16 and fp32 with
representative constexprs (attention: the model's head dims 64, 128, 192 and the test dims), for the config it
runs without autotuning and its largest autotune candidate (see ``_configs``).

Prints JSON lines: first ``{"launched": [...]}`` (the kernels the op's module launches, found by ``name[`` in its
source), then one record per compile: kernel, dtype, variant (dtype and constexprs), config, error (null when it
compiled), whether the config is the default one, the counts of ``wgmma.mma_async`` / ``mma.sync`` / ``cp.async``
instructions in the PTX, shared memory bytes, registers and spill bytes (from ``ptxas -v``) and the seconds the
compile took.
"""
import contextlib
import importlib
import inspect
import io
import json
import re
import sys
import time

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver

from alarm_kernels._utils import fixed_config_index

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class _Sm90Driver:
    """Just enough of a CUDA driver for ``warmup``: an sm_90 target, device 0, the null stream."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda

    def get_benchmarker(self):
        raise RuntimeError("the sm_90 compile check never runs a kernel")


def _ptr(dtype, *shape):
    """A pointer argument of ``dtype`` (contents and size do not matter to the compiler)."""
    return torch.empty(shape or (16,), dtype=dtype)


def _i32():
    return _ptr(torch.int32)


# Each spec yields (kernel, args, constexprs) for one dtype; int arguments are representative sizes (multiples of
# 16 where real launches usually have them, since Triton specializes on divisibility by 16).


_POOL_MAX = {torch.float16: (False,), torch.bfloat16: (False, True), torch.float32: (True,)}  # mean and max pooling


def _varlen_pool(m, dt):
    x = _ptr(dt)
    for is_max in _POOL_MAX[dt]:
        consts = dict(MAX=is_max)
        yield m._pool_fwd_kernel, (x, x, _i32(), _i32(), 4000, 12, 1024, 3, 4), consts
        yield m._pool_bwd_kernel, (x, x, x, x, _i32(), _i32(), 4000, 12, 1024, 3, 4), consts


def _varlen_conv1d(m, dt):
    x, cu = _ptr(dt), _i32()
    prec = m._dot_prec(dt)
    yield m._fwd_kernel, (x, x, x, x, x, cu, cu, 4000, 12, 4, 1024, 1024), dict(
        K=3, STRIDE=1, PAD=1, HAS_BIAS=True, GELU=True, DOT_PREC=prec)
    yield m._dx_kernel, (x, x, x, cu, cu, cu, 12, 4, 1024, 1024), dict(K=4, STRIDE=2, PAD=1, DOT_PREC=prec)
    f32 = _ptr(torch.float32)
    yield m._dw_kernel, (x, x, f32, f32, cu, 4000, 1024, 1024, 1024), dict(K=4, DOT_PREC=prec)
    yield m._gelu_grad_kernel, (x, x, x, 4096000), dict(BLOCK=1024)


def _weighted_layer_sum(m, dt):
    layers = tuple(_ptr(dt) for _ in range(5))
    logits, partials, n = _ptr(torch.float32), _ptr(torch.float32), 4096 * 1280
    yield m._wls_fwd_kernel, (layers, logits, _ptr(dt), n), dict(KP=8)
    yield m._wls_bwd_kernel, (layers, layers, logits, _ptr(dt), partials, n), dict(KP=8, NEED_LAYER_GRADS=True)
    yield m._wls_grad_logits_kernel, (partials, logits, _ptr(torch.float32), 5120), dict(K=5, KP=8, BLOCK_P=64)


def _multi_encoder_concat(m, dt):
    widths = (1024, 1280, 768)
    streams, cus, offsets = tuple(_ptr(dt) for _ in widths), tuple(_i32() for _ in widths), m._offsets(widths)
    x, cu_y, d_total, d_out, prec = _ptr(dt), _i32(), sum(widths), 2048, m._precision(dt)
    if dt == DTYPES[0]:  # int32 offsets only: one compile covers every dtype
        yield m._output_cu_kernel, (cus, cu_y, 12), dict(BLOCK=16)
        yield m._row_map_kernel, (cus[0], cu_y, _i32(), 4000, 12, 4), dict(BLOCK=1024)
    yield m._concat_fwd_kernel, (streams, cus, widths, offsets, cu_y, x, 4000, d_total, 12, 4), {}
    yield m._concat_linear_fwd_kernel, (streams, cus, widths, offsets, cu_y, x, x, x, 4000, d_total, d_out, 12, 4), \
        dict(HAS_BIAS=True, PRECISION=prec)
    yield m._gather_cols_kernel, (x, cu_y, x, 4000, widths[1], d_total, offsets[1]), {}
    yield m._grad_stream_kernel, (x, cu_y, x, x, 4000, widths[1], d_out, d_total, offsets[1]), dict(PRECISION=prec)
    yield m._grad_weight_kernel, (x, cu_y, x, x, 4000, widths[1], d_out, d_total, offsets[1]), dict(PRECISION=prec)
    yield m._column_sum_kernel, (x, _ptr(torch.float32), 4000, d_out, 64), dict(BLOCK_R=32, BLOCK_C=128)
    yield m._column_sum_kernel, (_ptr(torch.float32), x, 63, d_out, 63), dict(BLOCK_R=32, BLOCK_C=128)


# (head dim, q heads per kv head, causal, dropout): the model's shapes (Qwen3 D=128 GQA 4 causal, the CA fusion
# D=64, also with its attention dropout, the perceiver D=192), a test dim (72: not a multiple of 16) and fp32
_ATTENTION_SHAPES = {
    torch.float16: [(64, 1, False, False), (128, 4, True, False), (192, 1, False, False), (72, 4, False, False)],
    torch.bfloat16: [(64, 1, False, True), (128, 4, True, False), (192, 1, False, False)],
    torch.float32: [(64, 2, False, False)],
}
# head dims whose forward is also compiled for short query sequences (SHORT_Q: the perceiver's latents; its own
# config table), in the 16-bit dtypes
_SHORT_Q_HEAD_DIMS = (64, 128, 192)


def _attention(m, dt):
    for head_dim, group, causal, dropout in _ATTENTION_SHAPES[dt]:
        q, k = _ptr(dt, 16, 8 * group, head_dim), _ptr(dt, 16, 8, head_dim)
        _, hq, hkv, d, block_d, block_dhi, prec = m._common(q, k)
        lse, cu, sq, sk = _ptr(torch.float32), _i32(), q.stride(), k.stride()
        drop_args, dropout = m._dropout_args(0.1 if dropout else 0.0, 2**40 + 3, 5)
        shape = dict(GROUP=hq // hkv, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_DHI=block_dhi, CAUSAL=causal, PREC=prec,
                     DROPOUT=dropout)
        for short_q in (False, True) if head_dim in _SHORT_Q_HEAD_DIMS and dt != torch.float32 else (False,):
            yield m._fwd_kernel, (q, k, k, q, lse, cu, cu, 0.18, *drop_args, sq[0], sk[0], 4000), dict(
                shape, SHORT_Q=short_q)
        if dt == torch.float16 and not dropout:  # no dot: one compile per head dim
            yield m._bwd_preprocess_kernel, (q, q, lse, 4000, sq[0], 4000), dict(
                HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_M=64)
        for atomic in (True, False) if dt != torch.float32 else (True,):
            yield m._bwd_dkdv_kernel, (q, k, k, q, lse, k, k, lse, lse, cu, cu, 0.18, 0.12, *drop_args, sq[0], sk[0],
                                       sq[0], 4000), dict(shape, ATOMIC_DQ=atomic)
        yield m._bwd_dq_kernel, (q, k, k, q, q, lse, lse, cu, cu, 0.18, 0.12, *drop_args, sq[0], sk[0], 4000), shape


def _frontend(m, dt):
    if dt != torch.float32:  # the front ends compute in fp32 only
        return
    f32, cu = _ptr(torch.float32), _i32()
    for edges, dc, pre, out in ((0, True, True, torch.float64), (1, True, True, torch.float32),
                                (2, False, False, torch.float32)):  # w2v-BERT (fp64 frames) / Kaldi / Whisper
        o = _ptr(out)
        yield m._frames_kernel, (f32, cu, cu, o, o, o, 16000, 8, 4, -160, 160, 0, 400, 512), dict(
            EDGES=edges, DC=dc, PRE=pre, BLOCK_W=512)
    f64 = _ptr(torch.float64)
    for spectrum, n_freq, n_mels, log, peak in ((f64, 257, 80, 1, False), (f32, 201, 128, 2, True)):  # w2v / Whisper
        yield m._mel_kernel, (spectrum, f32, f32, f32, cu, 16000, 8, 4, n_freq, n_mels, 1e-7, -10.0), dict(
            LOG=log, POWER=True, PEAK=peak, ROUND=spectrum is f64, BLOCK_M=128)
    yield m._whisper_finish_kernel, (f32, f32, cu, f32, 128, 3000, -10.0), dict(BLOCK_M=128)
    yield m._normalize_stack_kernel, (f32, cu, cu, f32, 80, 1e-7), dict(STRIDE=2)


SPECS = {
    "varlen_pool": _varlen_pool,
    "varlen_conv1d": _varlen_conv1d,
    "weighted_layer_sum": _weighted_layer_sum,
    "multi_encoder_concat": _multi_encoder_concat,
    "attention": _attention,
    "frontend": _frontend,
}


def _jit(kernel):
    while not isinstance(kernel, triton.runtime.jit.JITFunction):  # unwrap autotune / heuristics
        kernel = kernel.fn
    return kernel


def _configs(module, kernel, args, consts, dtype):
    """``[(config, is_default)]``: the config the kernel runs without autotuning (the op's fixed-config table
    for an sm_90 launch, or, for attention, its ``early_config_prune`` with the module's ``AUTOTUNE`` off), then,
    in fp16 (shared memory is the same in bf16), the largest (tile elements, then warps x stages) of the
    autotune candidates the prune keeps for these arguments; [(None, True)] if not autotuned.

    Kernels with fp32 ``"ieee"`` dots get their one config only: their dots unroll into FMA chains, so a large tile
    costs ptxas 5-50 s, and the largest fp32 attention tiles exceed sm_90's shared memory (never launchable)."""
    configs = getattr(kernel, "configs", None)
    if not configs:
        return [(None, True)]
    named = dict(zip(kernel.arg_names, args, strict=False))
    prune = kernel.early_config_prune or (lambda cs, _named, **_kw: cs)
    autotune = getattr(module, "AUTOTUNE", None)
    try:
        if autotune is not None:
            module.AUTOTUNE = False
        default = prune(configs, named, **consts)[0]
        table = getattr(kernel.early_config_prune, "defaults", None)
        if table is not None:  # the non-attention ops: a fixed-config table keyed by width, dtype, capability
            default = configs[fixed_config_index(table, named, kernel.early_config_prune.width_arg, capability=90)]
        if autotune is not None:
            module.AUTOTUNE = True
        candidates = prune(configs, named, **consts)
    finally:
        if autotune is not None:
            module.AUTOTUNE = autotune
    if "ieee" in consts.values() or dtype != torch.float16:  # one 16-bit dtype shows each tile's shared memory
        return [(default, True)]

    def size(c):
        tile = 1
        for v in c.kwargs.values():
            tile *= v
        return tile, c.num_warps * c.num_stages

    largest = max(candidates, key=size)
    same = largest.kwargs == default.kwargs and (largest.num_warps, largest.num_stages) == (
        default.num_warps, default.num_stages)
    return [(default, True)] + ([] if same else [(largest, False)])


def _describe(config):
    if config is None:
        return "not autotuned"
    tile = " ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{tile} num_warps={config.num_warps} num_stages={config.num_stages}"


def _launched(module):
    """Names of the module's JIT functions that it launches (``name[grid](...)``), i.e. its kernels."""
    src = inspect.getsource(module)
    names = {name for name, obj in vars(module).items() if isinstance(obj, triton.runtime.jit.KernelInterface)}
    return sorted(n for n in names if re.search(rf"\b{n}\[", src))


def _ptxas_usage(log: str) -> dict:
    """Registers and spill bytes from ``ptxas -v`` output (None when the compile came from Triton's cache)."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return dict(registers=int(regs.group(1)) if regs else None,
                spill_stores=int(spills.group(1)) if spills else None,
                spill_loads=int(spills.group(2)) if spills else None)


def _compile(kernel, args, consts, config):
    options = config.all_kwargs() if config is not None else {}
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # knobs.nvidia.dump_ptxas_log prints ptxas -v there
        compiled = _jit(kernel).warmup(*args, grid=(1,), **consts, **options)
    ptx = compiled.asm["ptx"]
    return dict(wgmma=ptx.count("wgmma.mma_async"), mma=ptx.count("mma.sync"), shared=compiled.metadata.shared,
                cp_async=ptx.count("cp.async"), **_ptxas_usage(log.getvalue()))


def main(op):
    driver.set_active(_Sm90Driver())
    triton.knobs.nvidia.dump_ptxas_log = True
    module = importlib.import_module(f"alarm_kernels.{op}.triton")
    print(json.dumps({"launched": _launched(module)}), flush=True)
    for dt in DTYPES:
        for kernel, args, consts in SPECS[op](module, dt):
            dtype = str(dt).removeprefix("torch.")
            variant = " ".join([dtype] + [f"{k}={v}" for k, v in consts.items()])
            for config, is_default in _configs(module, kernel, args, consts, dt):
                record = dict(kernel=_jit(kernel).__name__, dtype=dtype, variant=variant, config=_describe(config),
                              default=is_default, error=None)
                start = time.perf_counter()
                try:
                    record.update(_compile(kernel, args, consts, config))
                except Exception as exc:  # every failure is reported, then the next compile runs
                    record["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
                record["seconds"] = round(time.perf_counter() - start, 2)
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

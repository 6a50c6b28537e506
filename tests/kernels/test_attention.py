"""packed_attention: fast backends vs the float64 oracle (docs/kernels.md numerics rule), edge cases, errors."""
import math

import pytest
import torch

import alarm_kernels as ak
from alarm_kernels._utils import nan_prefill
from alarm_kernels.testing import assert_parity
from conftest import DEVICE, FAST_BACKENDS, FAST_DTYPES, HAS_CUDA

ATTN_FAST_BACKENDS = tuple(b for b in FAST_BACKENDS if b != "cuda")  # attention has no CUDA-extension backend


@pytest.fixture(autouse=True)
def _no_autotune(monkeypatch):
    """On GPU every new (head dim, causal, group, dtype) key would compile and time every config."""
    from alarm_kernels.attention import triton as attention_triton

    monkeypatch.setattr(attention_triton, "AUTOTUNE", False)


def _inputs(lens_q, lens_k, hq, hkv, d, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    tq, tk = sum(lens_q), sum(lens_k)
    q = torch.randn(tq, hq, d, generator=g)
    k = torch.randn(tk, hkv, d, generator=g)
    v = torch.randn(tk, hkv, d, generator=g)
    dout = torch.randn(tq, hq, d, generator=g)
    cu_q = ak.seqlens_to_cu_seqlens(lens_q).to(device)
    cu_k = ak.seqlens_to_cu_seqlens(lens_k).to(device)
    return [t.to(device) for t in (q, k, v, dout)], cu_q, cu_k


def _run(q, k, v, dout, cu_q, cu_k, max_q, max_k, dtype, backend, **kwargs):
    """Forward + backward in ``dtype``; returns (out, dq, dk, dv)."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    with nan_prefill():
        out = ak.packed_attention(*leaves, cu_q, cu_k, max_q, max_k, backend=backend, **kwargs)
        grads = torch.autograd.grad(out, leaves, dout.to(dtype))
    return (out.detach(),) + tuple(grads)


def _check(lens_q, lens_k, hq, hkv, d, causal, dtype, backend, seed=0, softmax_scale=None, deterministic=False):
    (q, k, v, dout), cu_q, cu_k = _inputs(lens_q, lens_k, hq, hkv, d, seed)
    max_q, max_k = max(lens_q, default=0), max(lens_k, default=0)
    kw = dict(causal=causal, softmax_scale=softmax_scale)
    fast = _run(q, k, v, dout, cu_q, cu_k, max_q, max_k, dtype, backend, deterministic=deterministic, **kw)
    low = _run(q, k, v, dout, cu_q, cu_k, max_q, max_k, dtype, "reference", **kw)
    oracle = _run(q, k, v, dout, cu_q, cu_k, max_q, max_k, torch.float64, "reference", **kw)
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        assert_parity(fast[i], low[i], oracle[i], k=2.0 if i == 0 else 3.0, dtype=dtype, name=name)
    return fast


SELF_CASES = [
    # lens, hq, hkv, head dim
    ([1, 2, 63, 113, 0], 2, 2, 64),
    ([113, 0, 1, 63], 4, 1, 40),
    ([2, 63, 1, 113], 8, 1, 72),
    ([40, 0, 17], 8, 2, 128),
]


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS)
@pytest.mark.parametrize("dtype", FAST_DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lens,hq,hkv,d", SELF_CASES)
def test_self_attention_parity(lens, hq, hkv, d, causal, dtype, backend):
    _check(lens, lens, hq, hkv, d, causal, dtype, backend, seed=len(lens) * 7 + d)


CROSS_CASES = [
    # lens_q, lens_k, hq, hkv, d: q longer than k (causal rows without visible keys), shorter, empty sides
    ([5, 63, 1, 0, 20], [7, 30, 0, 4, 113], 4, 1, 72),
    ([113, 2, 9], [63, 1, 40], 8, 8, 40),
]


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS)
@pytest.mark.parametrize("dtype", FAST_DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lens_q,lens_k,hq,hkv,d", CROSS_CASES)
def test_cross_attention_parity(lens_q, lens_k, hq, hkv, d, causal, dtype, backend):
    _check(lens_q, lens_k, hq, hkv, d, causal, dtype, backend, seed=sum(lens_q) + d)


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS)
@pytest.mark.parametrize("d", [32, 96, 192, 256])
def test_head_dims_and_scale(d, backend):
    _check([9, 30], [30, 9], 4, 1, d, True, torch.float32, backend, seed=d, softmax_scale=0.3)


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS)
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("d", [80, 96, 192])
def test_head_dim_as_two_column_blocks(d, deterministic, backend):
    """Head dims that are a sum of two powers of two (the perceiver's 192 = 128 + 64) run unpadded as two column
    blocks in every kernel: GQA, causal and cross lengths, atomic and deterministic dQ."""
    from alarm_kernels.attention.triton import head_blocks

    assert head_blocks(d)[1] > 0 and sum(head_blocks(d)) == d
    _check([5, 40, 17], [5, 40, 17], 4, 2, d, True, torch.float16, backend, seed=d, deterministic=deterministic)
    _check([7, 33], [20, 9], 2, 2, d, False, torch.float32, backend, seed=d + 1, deterministic=deterministic)


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS)
def test_long_sequence(backend):
    _check([1023], [1023], 1, 1, 32, True, torch.float16, backend, seed=1023)


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS + ("reference",))
def test_total_smaller_than_n_and_empty(backend):
    _check([0, 0, 1, 0, 0], [0, 2, 1, 0, 3], 2, 1, 32, True, torch.float32, backend, seed=3)
    _check([0, 0], [0, 0], 2, 1, 32, False, torch.float32, backend, seed=4)


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS + ("reference",))
@pytest.mark.parametrize("deterministic", [True, False])
def test_rows_without_visible_keys_are_zero(backend, deterministic):
    # causal with Lq > Lk: the first Lq - Lk rows see no key (bottom-right alignment); Lk = 0 sees none
    lens_q, lens_k = [10, 4], [3, 0]
    out, dq, dk, dv = _check(lens_q, lens_k, 4, 2, 32, True, torch.float32, backend, seed=5,
                             deterministic=deterministic)
    blind = torch.tensor([True] * 7 + [False] * 3 + [True] * 4)
    assert torch.equal(out[blind], torch.zeros_like(out[blind]))
    assert torch.equal(dq[blind], torch.zeros_like(dq[blind]))
    assert (out[~blind].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("backend", ATTN_FAST_BACKENDS + ("reference",))
def test_deterministic_backward_is_bitwise_reproducible(backend):
    (q, k, v, dout), cu_q, cu_k = _inputs([63, 5, 40], [63, 5, 40], 4, 1, 40, seed=11)
    runs = [_run(q, k, v, dout, cu_q, cu_k, 63, 63, torch.float32, backend, causal=True, deterministic=True)
            for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_flash_attn_backend(causal):
    pytest.importorskip("flash_attn")
    for dtype in (torch.float16, torch.bfloat16):
        _check([5, 63, 1, 0, 20], [7, 30, 0, 4, 113], 4, 1, 72, causal, dtype, "flash_attn", seed=9)
        _check([113, 2, 9], [113, 2, 9], 8, 2, 128, causal, dtype, "flash_attn", seed=10)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel_name", ["_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"])
def test_every_autotune_config(kernel_name, monkeypatch):
    # the other tests run each kernel's default config only (AUTOTUNE off): pin each config in turn
    from alarm_kernels.attention import triton as attention_triton

    kernel = getattr(attention_triton, kernel_name)
    monkeypatch.setattr(attention_triton, "AUTOTUNE", True)  # otherwise the fixed default config runs
    try:
        for config in list(kernel.configs):
            monkeypatch.setattr(kernel, "configs", [config])
            kernel.cache.clear()
            for causal in (True, False):
                _check([1, 63, 200, 0, 129], [1, 90, 200, 3, 140], 8, 2, 72, causal, torch.bfloat16, "triton",
                       seed=config.kwargs["BLOCK_M"], deterministic=kernel_name == "_bwd_dq_kernel")
    finally:
        kernel.cache.clear()


def test_causal_bottom_right_alignment_matches_explicit_mask():
    # one sequence, Lq=3 queries against Lk=5 keys: query i sees keys j <= i + 2
    (q, k, v, _), cu_q, cu_k = _inputs([3], [5], 1, 1, 32, seed=2, device="cpu")
    q, k, v = q.double(), k.double(), v.double()
    out = ak.packed_attention(q, k, v, cu_q.cpu(), cu_k.cpu(), 3, 5, causal=True, backend="reference")
    s = (q[:, 0] @ k[:, 0].T) / math.sqrt(32)
    allowed = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    expected = torch.softmax(s.masked_fill(~allowed, -math.inf), -1) @ v[:, 0]
    torch.testing.assert_close(out[:, 0], expected)


def test_auto_backend_on_cpu_is_reference_and_explicit_unavailable_raises():
    (q, k, v, _), cu_q, cu_k = _inputs([4, 3], [4, 3], 2, 1, 32, seed=1, device="cpu")
    out = ak.packed_attention(q, k, v, cu_q.cpu(), cu_k.cpu(), 4, 4)
    ref = ak.packed_attention(q, k, v, cu_q.cpu(), cu_k.cpu(), 4, 4, backend="reference")
    assert torch.equal(out, ref)
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="flash"):
            ak.packed_attention(q.half(), k.half(), v.half(), cu_q.cpu(), cu_k.cpu(), 4, 4, backend="flash_attn")
    with pytest.raises(RuntimeError, match="float64"):
        ak.packed_attention(q.double(), k.double(), v.double(), cu_q.cpu(), cu_k.cpu(), 4, 4, backend="triton")


def _bad(**overrides):
    (q, k, v, _), cu_q, cu_k = _inputs([3, 2], [4, 1], 4, 2, 32, seed=0, device="cpu")
    args = dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=3, max_seqlen_k=4)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(q=torch.randn(5, 4)), "q must have 3"),
        (dict(k=torch.randn(5, 2, 32, dtype=torch.float64)), "k has dtype"),
        (dict(v=torch.randn(5, 2, 40)), "k and v"),
        (dict(q=torch.randn(5, 3, 32)), "multiple of k/v heads"),
        (dict(q=torch.randn(5, 4, 16), k=torch.randn(5, 2, 16), v=torch.randn(5, 2, 16)), "head dim"),
        (dict(q=torch.randn(5, 4, 288), k=torch.randn(5, 2, 288), v=torch.randn(5, 2, 288)), "head dim"),
        (dict(q=torch.randn(5, 4, 64)), "head dim"),
        (dict(cu_seqlens_q=torch.tensor([0, 3, 5], dtype=torch.int64)), "cu_seqlens_q must be int32"),
        (dict(cu_seqlens_q=torch.tensor([0, 3, 4], dtype=torch.int32)), "cu_seqlens_q"),
        (dict(cu_seqlens_k=torch.tensor([0, 4, 3, 5], dtype=torch.int32)), "cu_seqlens_k"),
        (dict(cu_seqlens_k=torch.tensor([1, 4, 5], dtype=torch.int32)), "cu_seqlens_k"),
        (dict(cu_seqlens_k=torch.tensor([0, 5], dtype=torch.int32)), "same number of sequences"),
        (dict(max_seqlen_q=2), "max_seqlen_q"),
        (dict(max_seqlen_k=3), "max_seqlen_k"),
        (dict(max_seqlen_k=4.0), "max_seqlen_k"),
    ],
)
def test_malformed_inputs_raise_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        ak.packed_attention(**_bad(**overrides), backend="reference")


def test_offsets_are_revalidated_after_in_place_change():
    args = _bad()
    ak.packed_attention(**args, backend="reference")  # valid: cached as validated
    args["cu_seqlens_q"][1] = 4  # now [0, 4, 5] with max_seqlen_q=3
    with pytest.raises(ValueError, match="max_seqlen_q"):
        ak.packed_attention(**args, backend="reference")
    args["cu_seqlens_q"][1] = 6
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        ak.packed_attention(**args, backend="reference")


def test_bad_softmax_scale_and_backend_names():
    with pytest.raises(ValueError, match="softmax_scale"):
        ak.packed_attention(**_bad(), softmax_scale=float("nan"))
    with pytest.raises(ValueError, match="backend"):
        ak.packed_attention(**_bad(), backend="cudnn")


def test_custom_op_registration():
    (q, k, v, _), cu_q, cu_k = _inputs([3, 2], [4, 1], 4, 2, 32, seed=0, device="cpu")
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), cu_q.cpu(), cu_k.cpu(), 3, 4, True, 0.2,
            False, "reference", 0.0, 0, 0)
    torch.library.opcheck(torch.ops.alarm_kernels.packed_attention.default, args)


def test_bench_cases_run_on_cpu():
    from bench.cases.attention import cases

    built = cases(torch.device("cpu"), quick=True)
    assert {c.direction for c in built} == {"fwd", "bwd", "fwd+bwd"}
    for case in built:
        assert case.flops > 0 and "reference" in case.variants and "padded_mask_build_ms" in case.notes
        for name, fn in case.variants.items():
            result = fn()
            tensors = result if isinstance(result, (tuple, list)) else [result]
            assert all(torch.isfinite(t).all() for t in tensors), (case.name, case.direction, name)


FUSED_CPU_CASES = [
    # lens_q, lens_k, hq, hkv, d, causal: runs of equal lengths (one fused call each), empty runs, GQA,
    # cross-attention, and causal Lq != Lk (the plain formula inside the fused route)
    ([5, 5, 5, 0, 0, 7, 7, 3], [5, 5, 5, 0, 0, 7, 7, 3], 4, 2, 40, True),
    ([9, 9, 1, 30, 30], [9, 9, 1, 30, 30], 2, 2, 64, False),
    ([4, 4, 6, 0, 2], [11, 11, 3, 5, 0], 8, 2, 32, False),
    ([4, 4, 6, 2, 3], [11, 11, 3, 2, 3], 4, 1, 72, True),
]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("route", ["runs", "padded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lens_q,lens_k,hq,hkv,d,causal", FUSED_CPU_CASES)
def test_reference_fused_cpu_route_matches_oracle(lens_q, lens_k, hq, hkv, d, causal, dtype, route, monkeypatch,
                                                  request):
    # the CPU reference in fp32/fp16/bf16 runs PyTorch's fused attention once per run of equal-length sequences or
    # once over all sequences padded (the call cost decides: 0 never pads, a huge one always does); its error budget
    # is the plain formula's in the same dtype (the plain formula in float64 is the oracle)
    from alarm_kernels.attention import reference

    assert reference.uses_fused_cpu_route(torch.empty(0, dtype=dtype))
    monkeypatch.setattr(reference, "_CALL_COST", 0 if route == "runs" else 2**40)
    reference._plan.cache_clear()  # plans are cached per offsets; this test changes how they are made
    request.addfinalizer(reference._plan.cache_clear)
    padded_calls = []  # the padded call pads its inputs
    pad = reference._Padded.pad
    monkeypatch.setattr(reference._Padded, "pad", lambda self, x, keys: (padded_calls.append(1), pad(self, x, keys))[1])
    (q, k, v, dout), cu_q, cu_k = _inputs(lens_q, lens_k, hq, hkv, d, seed=sum(lens_q) + d, device="cpu")
    args = (cu_q, cu_k, max(lens_q), max(lens_k), causal, 0.7 / math.sqrt(d))
    fused = _run(q, k, v, dout, *args[:4], dtype, "reference", causal=causal, softmax_scale=args[5])
    oracle = _run(q, k, v, dout, *args[:4], torch.float64, "reference", causal=causal, softmax_scale=args[5])
    low_in = [t.to(dtype) for t in (q, k, v, dout)]
    with nan_prefill():
        out, lse = reference.forward(*low_in[:3], *args, plain=True)
        plain = (out,) + reference.backward(low_in[3], *low_in[:3], out, lse, *args, False, plain=True)
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        assert_parity(fused[i], plain[i], oracle[i], k=2.0 if i == 0 else 3.0, dtype=dtype, name=name)
    assert bool(padded_calls) == (route == "padded")


def test_flash_attn_backward_is_called_by_parameter_name(monkeypatch):
    # flash-attn's private varlen backward changes its signature between releases: a stand-in with the 2.6+ names
    # is called with our tensors; one with an unknown required parameter is skipped (None: the Triton backward runs)
    import sys
    import types

    from alarm_kernels.attention import flash_attn as flash_backend

    seen = {}

    def newer(dout, q, k, v, out, softmax_lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
              dropout_p, softmax_scale, causal, window_size_left, window_size_right, softcap, alibi_slopes,
              deterministic, rng_state=None, zero_tensors=False):
        seen.update(causal=causal, scale=softmax_scale, lse=softmax_lse, window=(window_size_left, window_size_right))
        dq.fill_(1.0)
        dk.fill_(2.0)
        dv.fill_(3.0)

    def unknown(dout, q, k, v, out, softmax_lse, new_required_argument):
        raise AssertionError("must not be called")

    interface = types.ModuleType("flash_attn.flash_attn_interface")
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.flash_attn_interface", interface)
    (q, k, v, dout), cu_q, cu_k = _inputs([3, 2], [4, 1], 4, 2, 32, seed=0, device="cpu")
    lse = torch.zeros(4, 5)
    args = (dout, q, k, v, q, lse, cu_q, cu_k, 3, 4, True, 0.25, False)
    interface._flash_attn_varlen_backward = newer
    dq, dk, dv = flash_backend._flash_backward(*args)
    assert (dq == 1).all() and (dk == 2).all() and (dv == 3).all() and dk.shape == k.shape
    assert seen["causal"] is True and seen["scale"] == 0.25 and seen["lse"] is lse and seen["window"] == (-1, -1)
    interface._flash_attn_varlen_backward = unknown
    assert flash_backend._flash_backward(*args) is None

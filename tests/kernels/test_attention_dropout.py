"""packed_attention dropout: one Philox mask shared by the reference and Triton backends, regenerated in the
backward, reproducible from (seed, offset); inverted-dropout scaling; the plain formula proven with autograd."""
import math

import pytest
import torch

import alarm_kernels as ak
from alarm_kernels._utils import nan_prefill
from alarm_kernels.attention import reference
from alarm_kernels.testing import assert_parity
from conftest import DEVICE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_autotune(monkeypatch):
    from alarm_kernels.attention import triton as attention_triton

    monkeypatch.setattr(attention_triton, "AUTOTUNE", False)


def _inputs(lens_q, lens_k, hq, hkv, d, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    q, dout = (torch.randn(sum(lens_q), hq, d, generator=g) for _ in range(2))
    k, v = (torch.randn(sum(lens_k), hkv, d, generator=g) for _ in range(2))
    cu_q, cu_k = (ak.seqlens_to_cu_seqlens(lens).to(device) for lens in (lens_q, lens_k))
    return [t.to(device) for t in (q, k, v, dout)], cu_q, cu_k


def _run(q, k, v, dout, cu_q, cu_k, dtype, backend, **kwargs):
    """(out, dq, dk, dv) of one forward + backward in ``dtype``."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    max_q, max_k = int((cu_q[1:] - cu_q[:-1]).max()), int((cu_k[1:] - cu_k[:-1]).max())
    with nan_prefill():
        out = ak.packed_attention(*leaves, cu_q, cu_k, max_q, max_k, backend=backend, **kwargs)
        grads = torch.autograd.grad(out, leaves, dout.to(dtype))
    return (out.detach(),) + tuple(grads)


CASES = [
    # lens_q, lens_k, hq, hkv, d, causal
    ([1, 40, 0, 17], [1, 40, 0, 17], 4, 2, 32, True),
    ([5, 23, 9], [30, 7, 9], 2, 1, 40, False),
]


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("lens_q,lens_k,hq,hkv,d,causal", CASES)
def test_triton_uses_the_reference_mask(lens_q, lens_k, hq, hkv, d, causal, deterministic):
    # fp32 Triton (interpreter on CPU) against the float64 reference with the same (seed, offset): the budget is the
    # fp32 reference's own error, so a single differently dropped entry fails
    (q, k, v, dout), cu_q, cu_k = _inputs(lens_q, lens_k, hq, hkv, d, seed=d)
    kw = dict(causal=causal, dropout_p=0.3, dropout_seed=2**61 + 12345, dropout_offset=7)
    fast = _run(q, k, v, dout, cu_q, cu_k, torch.float32, "triton", deterministic=deterministic, **kw)
    low = _run(q, k, v, dout, cu_q, cu_k, torch.float32, "reference", **kw)
    oracle = _run(q, k, v, dout, cu_q, cu_k, torch.float64, "reference", **kw)
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        assert_parity(fast[i], low[i], oracle[i], k=2.0 if i == 0 else 3.0, dtype=torch.float32, name=name)
    no_drop = _run(q, k, v, dout, cu_q, cu_k, torch.float64, "reference", causal=causal)
    assert (oracle[0] - no_drop[0]).abs().max() > 0.1  # the mask really dropped something


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_plain_formula_matches_autograd_with_the_same_mask(dtype):
    # an independent expression (dense softmax, explicit mask, torch autograd) of each sequence vs the reference's
    # explicit backward formulas, in float64 (and fp32: the CPU default route falls back to the plain formula)
    lens_q, lens_k, hq, hkv, d, p, seed, offset = [3, 8], [6, 8], 4, 2, 32, 0.25, 99, 3
    (q, k, v, dout), cu_q, cu_k = _inputs(lens_q, lens_k, hq, hkv, d, seed=1, device="cpu")
    q, k, v, dout = (t.to(dtype) for t in (q, k, v, dout))
    got = _run(q, k, v, dout, cu_q, cu_k, dtype, "reference", causal=True, dropout_p=p, dropout_seed=seed,
               dropout_offset=offset)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    outs, q0, k0 = [], 0, 0
    for lq, lk in zip(lens_q, lens_k, strict=True):
        qi, ki, vi = leaves[0][q0:q0 + lq], leaves[1][k0:k0 + lk], leaves[2][k0:k0 + lk]
        ki, vi = ki.repeat_interleave(hq // hkv, 1), vi.repeat_interleave(hq // hkv, 1)
        s = torch.einsum("qhd,khd->hqk", qi, ki) / math.sqrt(d)
        visible = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
        probs = torch.softmax(s.masked_fill(~visible, -math.inf), -1)
        keep = reference.dropout_keep_mask(seed, offset, p, torch.arange(hq), torch.arange(q0, q0 + lq),
                                           torch.arange(k0, k0 + lk))
        outs.append(torch.einsum("hqk,khd->qhd", probs * keep / (1 - p), vi))
        q0, k0 = q0 + lq, k0 + lk
    out = torch.cat(outs)
    expected = (out,) + torch.autograd.grad(out, leaves, dout)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, expected, strict=True):
        torch.testing.assert_close(a, b.detach(), **tol, msg=name)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropped_fraction_is_p(p):
    keep = reference.dropout_keep_mask(1234, 0, p, torch.arange(4), torch.arange(300, 556), torch.arange(256))
    # 262144 draws: the standard deviation of the fraction is below 0.001
    assert abs((~keep).double().mean().item() - p) < 0.005
    # every head, query row and key row drops about p too (1024+ draws each: standard deviation below 0.016)
    for dims in ((1, 2), (0, 2), (0, 1)):
        assert ((~keep).double().mean(dims) - p).abs().max() < 0.08


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_zero_rate_is_plain_attention_and_seeds_reproduce(backend):
    (q, k, v, dout), cu_q, cu_k = _inputs([9, 30], [9, 30], 2, 2, 32, seed=4)
    plain = _run(q, k, v, dout, cu_q, cu_k, torch.float32, backend, causal=True)
    zero = _run(q, k, v, dout, cu_q, cu_k, torch.float32, backend, causal=True, dropout_p=0.0, dropout_seed=8)
    for a, b in zip(plain, zero, strict=True):
        assert torch.equal(a, b)
    runs = {}
    for name, kw in {"a": dict(dropout_seed=8), "again": dict(dropout_seed=8), "seed": dict(dropout_seed=9),
                     "offset": dict(dropout_seed=8, dropout_offset=1)}.items():
        runs[name] = _run(q, k, v, dout, cu_q, cu_k, torch.float32, backend, causal=True, dropout_p=0.2,
                          deterministic=True, **kw)
    for a, b in zip(runs["a"], runs["again"], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(runs["a"][0], runs["seed"][0])
    assert not torch.equal(runs["a"][0], runs["offset"][0])
    torch.manual_seed(0)
    drawn = _run(q, k, v, dout, cu_q, cu_k, torch.float32, backend, causal=True, dropout_p=0.2, deterministic=True)
    torch.manual_seed(0)
    redrawn = _run(q, k, v, dout, cu_q, cu_k, torch.float32, backend, causal=True, dropout_p=0.2, deterministic=True)
    assert torch.equal(drawn[0], redrawn[0]) and not torch.equal(drawn[0], plain[0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(dropout_p=1.0), "dropout_p"),
    (dict(dropout_p=-0.1), "dropout_p"),
    (dict(dropout_p=0.1, dropout_seed=-1), "dropout_seed"),
    (dict(dropout_p=0.1, dropout_seed=2**62), "dropout_seed"),
    (dict(dropout_p=0.1, dropout_offset=2**31), "dropout_offset"),
])
def test_bad_dropout_arguments(kwargs, match):
    (q, k, v, _), cu_q, cu_k = _inputs([3], [3], 2, 2, 32, seed=0, device="cpu")
    with pytest.raises(ValueError, match=match):
        ak.packed_attention(q, k, v, cu_q, cu_k, 3, 3, **kwargs)


def test_custom_op_registration_with_dropout():
    (q, k, v, _), cu_q, cu_k = _inputs([3, 2], [4, 1], 4, 2, 32, seed=0, device="cpu")
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), cu_q, cu_k, 3, 4, True, 0.2, False,
            "reference", 0.3, 77, 2)
    torch.library.opcheck(torch.ops.alarm_kernels.packed_attention.default, args)


@pytest.mark.gpu
def test_triton_bf16_with_dropout():
    (q, k, v, dout), cu_q, cu_k = _inputs([63, 200, 1], [90, 200, 3], 8, 2, 128, seed=5)
    kw = dict(causal=True, dropout_p=0.1, dropout_seed=5)
    fast = _run(q, k, v, dout, cu_q, cu_k, torch.bfloat16, "triton", **kw)
    low = _run(q, k, v, dout, cu_q, cu_k, torch.bfloat16, "reference", **kw)
    oracle = _run(q, k, v, dout, cu_q, cu_k, torch.float64, "reference", **kw)
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        assert_parity(fast[i], low[i], oracle[i], k=2.0 if i == 0 else 3.0, dtype=torch.bfloat16, name=name)


class _SeededAttention(torch.nn.Module):
    def forward(self, q, k, v, cu):
        return ak.packed_attention(q, k, v, cu, cu, 9, 9, causal=True, dropout_p=0.2, dropout_seed=3, dropout_offset=1)


def test_torch_compile_fullgraph_with_dropout():
    # a given seed keeps the op traceable without graph breaks; compiled and eager drop the same entries
    from compile_check import assert_compiled_matches_eager

    (q, k, v, _), cu, _ = _inputs([9, 4], [9, 4], 4, 2, 32, seed=6, device="cpu")
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert_compiled_matches_eager(_SeededAttention(), (q, k, v, cu), [q, k, v])

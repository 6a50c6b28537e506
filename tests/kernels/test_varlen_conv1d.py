"""varlen_conv1d: reference vs a per-sequence F.conv1d loop, fast backends vs the float64 oracle
(parity idiom, NaN-prefilled outputs), gradcheck, determinism, edge layouts, bad inputs, a property
test over random layouts and torch.compile(fullgraph=True)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, FAST_BACKENDS, FAST_DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st

import alarm_kernels as ak
from alarm_kernels._utils import nan_prefill
from alarm_kernels.testing import assert_parity
from compile_check import assert_compiled_matches_eager

# (C_in, C_out, k, stride, padding, activation): odd sizes plus ALARM's two downsampler layers in miniature
CONFIGS = [(40, 72, 3, 1, 1, "gelu"), (72, 40, 4, 2, 1, None), (40, 40, 4, 2, 1, "gelu")]
LENGTHS = [0, 1, 2, 63, 113, 3]


def _inputs(lengths, c_in, c_out, k, dtype, seed, bias=True):
    g = torch.Generator().manual_seed(seed)
    cu = ak.seqlens_to_cu_seqlens(lengths).to(DEVICE)
    x = torch.randn(sum(lengths), c_in, generator=g).to(DEVICE, dtype)
    w = (torch.randn(c_out, c_in, k, generator=g) / (c_in * k) ** 0.5).to(DEVICE, dtype)
    b = torch.randn(c_out, generator=g).to(DEVICE, dtype) if bias else None
    return x, cu, w, b


def _run(backend, x, cu, w, b, stride, padding, act, grad_seed=7, dtype=None):
    """Forward + backward with a fixed upstream gradient; returns [y, grad_x, grad_w, (grad_b)], cu_y."""
    dtype = dtype or x.dtype
    leaves = [t.detach().to(dtype).requires_grad_() if t is not None else None for t in (x, w, b)]
    y, cu_y = ak.varlen_conv1d(leaves[0], cu, leaves[1], leaves[2], stride, padding, act, backend=backend)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed)).to(y.device, dtype)
    (y * gy).sum().backward()
    return [y.detach()] + [t.grad for t in leaves if t is not None], cu_y


def _check_parity(backend, dtype, x, cu, w, b, stride, padding, act):
    oracle, cu_o = _run("reference", x, cu, w, b, stride, padding, act, dtype=torch.float64)
    low, _ = _run("reference", x, cu, w, b, stride, padding, act)
    with nan_prefill():
        fast, cu_f = _run(backend, x, cu, w, b, stride, padding, act)
    assert torch.equal(cu_f, cu_o)
    for i, name in enumerate(["y", "grad_x", "grad_w", "grad_b"][: len(fast)]):
        assert_parity(fast[i], low[i], oracle[i], k=2.0 if i == 0 else 3.0, dtype=dtype, name=f"{backend} {name}")


def _per_sequence(x, cu, w, b, stride, padding, act):
    outs = []
    bounds = cu.tolist()
    for i in range(len(bounds) - 1):
        xs = x[bounds[i] : bounds[i + 1]]
        if xs.shape[0] == 0 or xs.shape[0] + 2 * padding < w.shape[2]:
            continue
        o = F.conv1d(xs.T[None], w, b, stride=stride, padding=padding)[0].T
        outs.append(F.gelu(o) if act == "gelu" else o)
    return torch.cat(outs) if outs else x.new_zeros(0, w.shape[0])


@pytest.mark.parametrize("cfg", CONFIGS + [(5, 3, 3, 1, 0, None), (4, 6, 1, 3, 2, "gelu")])
def test_reference_matches_per_sequence_conv(cfg):
    c_in, c_out, k, s, p, act = cfg
    x, cu, w, b = _inputs(LENGTHS, c_in, c_out, k, torch.float64, seed=1)
    y, cu_y = ak.varlen_conv1d(x, cu, w, b, s, p, act, backend="reference")
    expected = _per_sequence(x, cu, w, b, s, p, act)
    lengths = torch.tensor(LENGTHS)
    out_len = torch.where(lengths > 0, ((lengths + 2 * p - k) // s + 1).clamp(min=0), 0)
    assert cu_y.tolist() == [0] + torch.cumsum(out_len, 0).tolist()
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", [None, "gelu"])
@pytest.mark.parametrize("stride,k", [(1, 3), (2, 4)])
def test_reference_gradcheck(stride, k, act):
    x, cu, w, b = _inputs([5, 0, 1, 2, 7], 3, 4, k, torch.float64, seed=2)
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x, w, b: ak.varlen_conv1d(x, cu, w, b, stride, 1, act, backend="reference")[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("dtype", FAST_DTYPES)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_parity(backend, dtype, cfg):
    c_in, c_out, k, s, p, act = cfg
    x, cu, w, b = _inputs(LENGTHS, c_in, c_out, k, dtype, seed=3)
    _check_parity(backend, dtype, x, cu, w, b, s, p, act)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize(
    "lengths,k,stride,padding",
    [
        ([0, 1, 0, 0], 3, 1, 1),  # total < N, zero-length and one-token sequences
        ([1, 2, 3, 0, 5], 4, 2, 0),  # L shorter than the kernel: those sequences yield no token
        ([1, 2], 4, 1, 0),  # no output token at all: grads are zeros
        ([2, 63], 4, 2, 1),
    ],
)
def test_edge_layouts(backend, lengths, k, stride, padding):
    x, cu, w, b = _inputs(lengths, 40, 24, k, torch.float32, seed=4)
    _check_parity(backend, torch.float32, x, cu, w, b, stride, padding, "gelu")


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("frozen", ["x", "weight"])
def test_partial_grads(backend, frozen):
    """Only the requested gradients are computed (frozen encoder input, or frozen weight with a bias)."""
    x, cu, w, b = _inputs([3, 17, 0, 9], 40, 24, 3, torch.float32, seed=5, bias=frozen == "weight")
    grads = {}
    for name in ("reference", backend):
        xl = x.clone().requires_grad_(frozen != "x")
        wl = w.clone().requires_grad_(frozen != "weight")
        bl = b.clone().requires_grad_() if b is not None else None
        y, _ = ak.varlen_conv1d(xl, cu, wl, bl, 1, 1, "gelu", backend=name)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(8)).to(y.device)
        (y * gy).sum().backward()
        grads[name] = [y.detach()] + [t.grad for t in (xl, wl, bl) if t is not None and t.requires_grad]
        assert (xl.grad is None) == (frozen == "x") and (wl.grad is None) == (frozen == "weight")
    for fast, ref in zip(grads[backend], grads["reference"], strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_deterministic(backend):
    x, cu, w, b = _inputs(LENGTHS, 40, 72, 4, torch.float16, seed=6)
    first, _ = _run(backend, x, cu, w, b, 2, 1, "gelu")
    second, _ = _run(backend, x, cu, w, b, 2, 1, "gelu")
    for a, c in zip(first, second, strict=True):
        assert torch.equal(a, c)


@pytest.mark.parametrize("backend", [b for b in FAST_BACKENDS if b == "triton"])
def test_split_k_weight_grad(backend, monkeypatch):
    """The weight gradient's token splits (cut inside sequences here: 16 tokens each) sum to the oracle's
    result and reproduce bit for bit; the split count stays within its token and memory bounds."""
    import importlib

    conv_triton = importlib.import_module("alarm_kernels.varlen_conv1d.triton")
    assert conv_triton.dw_splits(10**6, 72 * 40 * 4) == conv_triton._DW_MAX_SPLITS
    assert conv_triton.dw_splits(100, 72 * 40 * 4) == 1
    assert conv_triton.dw_splits(10**6, 2**30) == 1  # partials would not fit: no split
    monkeypatch.setattr(conv_triton, "_DW_TOKENS_PER_SPLIT", 16)
    x, cu, w, b = _inputs(LENGTHS, 40, 72, 4, torch.float32, seed=9)
    assert conv_triton.dw_splits(90, w.numel()) == 6
    _check_parity(backend, torch.float32, x, cu, w, b, 2, 1, "gelu")
    first, _ = _run(backend, x, cu, w, b, 2, 1, None)
    second, _ = _run(backend, x, cu, w, b, 2, 1, None)
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])


def test_bad_inputs():
    x, cu, w, b = _inputs([3, 4], 8, 6, 3, torch.float32, seed=7)
    ok = dict(stride=1, padding=1, activation=None)
    bad_cu = {
        "dtype": cu.long(),
        "decreasing": torch.tensor([0, 5, 4, 7], dtype=torch.int32, device=DEVICE),
        "last": torch.tensor([0, 3, 6], dtype=torch.int32, device=DEVICE),
        "first": torch.tensor([1, 3, 7], dtype=torch.int32, device=DEVICE),
        "rank": cu[None],
    }
    if DEVICE.type == "cuda":
        bad_cu["device"] = cu.cpu()
    for c in bad_cu.values():
        with pytest.raises(ValueError, match="cu_seqlens"):
            ak.varlen_conv1d(x, c, w, b, **ok)
    with pytest.raises(ValueError, match="weight"):
        ak.varlen_conv1d(x, cu, w[:, :5], b, **ok)
    with pytest.raises(ValueError, match="weight"):
        ak.varlen_conv1d(x, cu, w[:, :, 0], b, **ok)
    with pytest.raises(ValueError, match="weight"):
        ak.varlen_conv1d(x, cu, w.double(), b, **ok)
    with pytest.raises(ValueError, match="bias"):
        ak.varlen_conv1d(x, cu, w, b[:4], **ok)
    with pytest.raises(ValueError, match="x"):
        ak.varlen_conv1d(x[None], cu, w, b, **ok)
    with pytest.raises(ValueError, match="stride"):
        ak.varlen_conv1d(x, cu, w, b, stride=0, padding=1)
    with pytest.raises(ValueError, match="padding"):
        ak.varlen_conv1d(x, cu, w, b, stride=1, padding=-1)
    with pytest.raises(ValueError, match="activation"):
        ak.varlen_conv1d(x, cu, w, b, stride=1, padding=1, activation="relu")


@settings(max_examples=6, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    act=st.sampled_from([None, "gelu"]),
    seed=st.integers(0, 2**16),
)
def test_property_random_layouts(lengths, k, stride, padding, act, seed):
    x, cu, w, b = _inputs(lengths, 16, 16, k, torch.float32, seed=seed)
    expected = _per_sequence(x.double(), cu, w.double(), b.double(), stride, padding, act)
    for backend in ("reference",) + FAST_BACKENDS:
        with nan_prefill():
            y, _ = ak.varlen_conv1d(x, cu, w, b, stride, padding, act, backend=backend)
        torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-4)
    if FAST_BACKENDS:
        _check_parity(FAST_BACKENDS[0], torch.float32, x, cu, w, b, stride, padding, act)


class _Downsampler(torch.nn.Module):
    """ALARM's conv downsampler shape in miniature: conv k=3 s=1 + GELU, then conv k=4 s=2."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv1d(8, 16, 3, padding=1)
        self.c2 = torch.nn.Conv1d(16, 8, 4, stride=2, padding=1)

    def forward(self, x, cu):
        h, cu_h = ak.varlen_conv1d(x, cu, self.c1.weight, self.c1.bias, 1, 1, "gelu", backend="reference")
        return ak.varlen_conv1d(h, cu_h, self.c2.weight, self.c2.bias, 2, 1, None, backend="reference")


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    x = torch.randn(15, 8, requires_grad=True)
    assert_compiled_matches_eager(_Downsampler(), (x, ak.seqlens_to_cu_seqlens([5, 0, 9, 1])), [x])

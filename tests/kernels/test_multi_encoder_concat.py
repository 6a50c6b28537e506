"""multi_encoder_concat (plain and fused with a projection): fast backends vs the float64 oracle (parity
idiom, NaN-prefilled outputs), gradcheck, determinism, edge layouts (zero-length and one-token sequences,
total < N, an empty stream, odd widths), bad inputs, a property test over random layouts and
torch.compile(fullgraph=True)."""
import importlib

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

# per stream, per sequence lengths (N = 5): zero-length, one-token, different lengths per stream
LAYOUT = [[3, 0, 1, 17, 2], [5, 0, 1, 4, 0], [0, 0, 1, 9, 6]]
WIDTHS = [40, 72, 24]


def _inputs(layout, widths, dtype, seed, d_out=None, bias=True):
    g = torch.Generator().manual_seed(seed)
    cus = [ak.seqlens_to_cu_seqlens(lengths).to(DEVICE) for lengths in layout]
    streams = [torch.randn(sum(lengths), d, generator=g).to(DEVICE, dtype)
               for lengths, d in zip(layout, widths, strict=True)]
    weight = b = None
    if d_out is not None:
        weight = (torch.randn(d_out, sum(widths), generator=g) / sum(widths) ** 0.5).to(DEVICE, dtype)
        b = torch.randn(d_out, generator=g).to(DEVICE, dtype) if bias else None
    return streams, cus, weight, b


def _run(backend, streams, cus, weight, bias, dtype=None):
    """Forward + backward with a fixed upstream gradient -> ([y, *grad_streams, grad_w, grad_b], cu_y)."""
    conv = lambda t: None if t is None else t.detach().to(dtype or t.dtype).requires_grad_()  # noqa: E731
    xs, w, b = [conv(x) for x in streams], conv(weight), conv(bias)
    y, cu_y = ak.multi_encoder_concat(xs, cus, w, b, backend=backend)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(11)).to(y.device, y.dtype)
    (y * gy).sum().backward()
    grads = [x.grad for x in xs] + [t.grad for t in (w, b) if t is not None]
    return [y.detach()] + grads, cu_y


def _check_parity(backend, dtype, streams, cus, weight, bias):
    oracle, cu_o = _run("reference", streams, cus, weight, bias, dtype=torch.float64)
    low, _ = _run("reference", streams, cus, weight, bias)
    with nan_prefill():
        fast, cu_f = _run(backend, streams, cus, weight, bias)
    assert torch.equal(cu_f, cu_o)
    names = ["y"] + [f"grad_streams[{e}]" for e in range(len(streams))] + ["grad_weight", "grad_bias"]
    for i, (f, lo, o) in enumerate(zip(fast, low, oracle, strict=True)):
        assert f.dtype == lo.dtype
        assert_parity(f, lo, o, k=2.0 if i == 0 else 3.0, dtype=dtype, name=f"{backend} {names[i]}")


@pytest.mark.parametrize("dtype", FAST_DTYPES)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("d_out,bias", [(None, False), (33, True), (64, False)])
@pytest.mark.parametrize("widths", [WIDTHS, [37, 8, 5]], ids=["aligned", "odd"])
def test_parity(backend, dtype, d_out, bias, widths):
    _check_parity(backend, dtype, *_inputs(LAYOUT, widths, dtype, seed=1, d_out=d_out, bias=bias))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize(
    "layout",
    [
        [[0, 1, 0, 0], [0, 0, 2, 0]],  # total < N, zero-length sequences
        [[1], [1]],  # one token
        [[0, 0], [0, 0]],  # no rows at all
        [[4, 3, 2], [0, 0, 0]],  # one stream entirely empty
        [[2, 63], [63, 2]],
    ],
)
@pytest.mark.parametrize("d_out", [None, 24])
def test_edge_layouts(backend, layout, d_out):
    streams, cus, weight, bias = _inputs(layout, [40, 72], torch.float32, seed=2, d_out=d_out)
    _check_parity(backend, torch.float32, streams, cus, weight, bias)


def test_reference_semantics():
    a = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)  # lengths [2, 1]
    b = torch.tensor([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0], [40.0, 41.0]], dtype=torch.float64)  # [1, 3]
    cus = [ak.seqlens_to_cu_seqlens([2, 1]), ak.seqlens_to_cu_seqlens([1, 3])]
    y, cu_y = ak.multi_encoder_concat([a, b], cus, backend="reference")
    assert cu_y.tolist() == [0, 2, 5]
    assert y.tolist() == [[1, 10, 11], [2, 0, 0], [3, 20, 21], [0, 30, 31], [0, 40, 41]]
    weight = torch.randn(4, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    y_w, _ = ak.multi_encoder_concat([a, b], cus, weight, bias, backend="reference")
    torch.testing.assert_close(y_w, F.linear(y, weight, bias))


@pytest.mark.parametrize("backend", ("reference",) + FAST_BACKENDS)
def test_backend_reads_total_when_unknown(backend):
    """The public function passes the output length it read while validating; a traced call passes -1
    and the backend reads it from cu_y instead: same result."""
    impl = importlib.import_module(f"alarm_kernels.multi_encoder_concat.{backend}")
    streams, cus, weight, bias = _inputs(LAYOUT, WIDTHS, torch.float32, seed=7, d_out=16)
    for w, b in ((None, None), (weight, bias)):
        y_known, cu_known = ak.multi_encoder_concat(streams, cus, w, b, backend=backend)
        y_read, cu_read = impl.forward(streams, cus, w, b, -1)
        assert torch.equal(cu_read, cu_known) and torch.equal(y_read, y_known)


@pytest.mark.parametrize("d_out", [None, 5])
def test_reference_gradcheck(d_out):
    streams, cus, weight, bias = _inputs([[2, 0, 3], [1, 2, 0]], [3, 4], torch.float64, seed=3, d_out=d_out)
    inputs = tuple(t.requires_grad_() for t in streams + [weight, bias] if t is not None)
    ne = len(streams)

    def fn(*ts):
        w, b = (ts[ne], ts[ne + 1]) if d_out else (None, None)
        return ak.multi_encoder_concat(list(ts[:ne]), cus, w, b, backend="reference")[0]

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("d_out", [None, 48])
def test_deterministic(backend, d_out):
    inputs = _inputs(LAYOUT, WIDTHS, torch.float16, seed=4, d_out=d_out)
    first, _ = _run(backend, *inputs)
    second, _ = _run(backend, *inputs)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("backend", ("reference",) + FAST_BACKENDS)
def test_grads_only_where_required(backend):
    streams, cus, weight, bias = _inputs(LAYOUT, WIDTHS, torch.float32, seed=5, d_out=16)
    streams[1].requires_grad_()
    w = weight.clone().requires_grad_()
    y, _ = ak.multi_encoder_concat(streams, cus, w, bias, backend=backend)
    y.sum().backward()
    assert streams[0].grad is None and streams[2].grad is None and streams[1].grad is not None
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_bad_inputs():
    streams, cus, weight, bias = _inputs([[3, 4], [2, 2]], [8, 4], torch.float32, seed=6, d_out=5)
    bad_cu = [
        cus[0].long(),
        torch.tensor([0, 5, 4], dtype=torch.int32),
        torch.tensor([0, 3, 6], dtype=torch.int32),
        torch.tensor([1, 3, 7], dtype=torch.int32),
        cus[0][None],
    ]
    for c in bad_cu:
        with pytest.raises(ValueError, match=r"cu_seqlens\[0\]"):
            ak.multi_encoder_concat(streams, [c, cus[1]])
    with pytest.raises(ValueError, match=r"cu_seqlens\[1\]"):  # mismatched N
        ak.multi_encoder_concat(streams, [cus[0], ak.seqlens_to_cu_seqlens([1, 1, 2])])
    with pytest.raises(ValueError, match="cu_seqlens"):  # list lengths differ
        ak.multi_encoder_concat(streams, cus[:1])
    with pytest.raises(ValueError, match="cu_seqlens"):
        ak.multi_encoder_concat(streams, cus[0])
    with pytest.raises(ValueError, match="streams"):
        ak.multi_encoder_concat([], [])
    with pytest.raises(ValueError, match="streams"):
        ak.multi_encoder_concat(streams[0], cus)
    with pytest.raises(ValueError, match=r"streams\[1\]"):
        ak.multi_encoder_concat([streams[0], streams[1].half()], cus)
    with pytest.raises(ValueError, match=r"streams\[1\]"):
        ak.multi_encoder_concat([streams[0], streams[1][:, 0]], cus)
    with pytest.raises(ValueError, match=r"streams\[0\]"):
        ak.multi_encoder_concat([streams[0].long(), streams[1].long()], cus)
    with pytest.raises(ValueError, match="weight"):
        ak.multi_encoder_concat(streams, cus, weight[:, :-1])
    with pytest.raises(ValueError, match="weight"):
        ak.multi_encoder_concat(streams, cus, weight.half())
    with pytest.raises(ValueError, match="weight"):
        ak.multi_encoder_concat(streams, cus, weight[0])
    with pytest.raises(ValueError, match="bias"):
        ak.multi_encoder_concat(streams, cus, weight, bias[:-1])
    with pytest.raises(ValueError, match="bias"):
        ak.multi_encoder_concat(streams, cus, None, bias)
    with pytest.raises(ValueError, match="bias"):
        ak.multi_encoder_concat(streams, cus, weight, bias.half())


@settings(max_examples=5, deadline=None)
@given(
    n=st.integers(1, 5),
    widths=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    d_out=st.sampled_from([None, 17]),
    data=st.data(),
)
def test_property_random_layouts(n, widths, d_out, data):
    layout = [data.draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)) for _ in widths]
    seed = data.draw(st.integers(0, 2**16))
    streams, cus, weight, bias = _inputs(layout, widths, torch.float32, seed=seed, d_out=d_out)
    rows = []  # per sequence: pad every stream to the longest, then concatenate features
    for i in range(n):
        longest = max(lengths[i] for lengths in layout)
        parts = [F.pad(ak.unpack(x.double(), cu)[i], (0, 0, 0, longest - lengths[i]))
                 for x, cu, lengths in zip(streams, cus, layout, strict=True)]
        rows.append(torch.cat(parts, 1))
    expected = torch.cat(rows, 0)
    if weight is not None:
        expected = F.linear(expected, weight.double(), bias.double())
    for backend in ("reference",) + FAST_BACKENDS:
        with nan_prefill():
            y, cu_y = ak.multi_encoder_concat(streams, cus, weight, bias, backend=backend)
        assert cu_y[-1].item() == expected.shape[0]
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    if FAST_BACKENDS:
        _check_parity(FAST_BACKENDS[0], torch.float32, streams, cus, weight, bias)


class _Fuse(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.adapters = torch.nn.ModuleList([torch.nn.Linear(6, 8), torch.nn.Linear(4, 8)])
        self.proj = torch.nn.Linear(16, 12)

    def forward(self, a, b, cu_a, cu_b):
        streams = [self.adapters[0](a), self.adapters[1](b)]
        y, cu_y = ak.multi_encoder_concat(streams, [cu_a, cu_b], self.proj.weight, self.proj.bias, backend="reference")
        z, _ = ak.multi_encoder_concat([y, a], [cu_y, cu_a], backend="reference")
        return z, cu_y


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    cu_a, cu_b = ak.seqlens_to_cu_seqlens([3, 0, 5]), ak.seqlens_to_cu_seqlens([4, 1, 2])
    a = torch.randn(8, 6, requires_grad=True)
    assert_compiled_matches_eager(_Fuse(), (a, torch.randn(7, 4), cu_a, cu_b), [a])

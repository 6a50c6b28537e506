"""varlen_pool: fast backends vs the float64 oracle (parity idiom, NaN-prefilled outputs), gradcheck,
max-tie gradient rule, determinism, edge layouts, bad inputs, a property test over random layouts and
torch.compile(fullgraph=True)."""
import math

import pytest
import torch
from conftest import DEVICE, FAST_BACKENDS, FAST_DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st

import alarm_kernels as ak
from alarm_kernels._utils import nan_prefill
from alarm_kernels.testing import assert_parity
from compile_check import assert_compiled_matches_eager

# every test on both size routes of the reference (the oracle): see conftest.reference_size_route
pytestmark = pytest.mark.usefixtures("reference_size_route")

LENGTHS = [0, 1, 2, 63, 113, 5]


def _inputs(lengths, d, dtype, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(lengths), d, generator=g)
    if ties:  # few distinct values: windows with tied maxima
        x = (x * 2).round()
    return x.to(DEVICE, dtype), ak.seqlens_to_cu_seqlens(lengths).to(DEVICE)


def _run(backend, x, cu, ratio, mode, dtype=None):
    """Forward + backward with a fixed upstream gradient; returns (y, grad_x), cu_y."""
    xl = x.detach().to(dtype or x.dtype).requires_grad_()
    y, cu_y = ak.varlen_pool(xl, cu, ratio, mode, backend=backend)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(11)).to(y.device, y.dtype)
    (y * gy).sum().backward()
    return (y.detach(), xl.grad), cu_y


def _check_parity(backend, dtype, x, cu, ratio, mode):
    oracle, cu_o = _run("reference", x, cu, ratio, mode, dtype=torch.float64)
    low, _ = _run("reference", x, cu, ratio, mode)
    with nan_prefill():
        fast, cu_f = _run(backend, x, cu, ratio, mode)
    assert torch.equal(cu_f, cu_o)
    assert_parity(fast[0], low[0], oracle[0], k=2.0, dtype=dtype, name=f"{backend} y")
    assert_parity(fast[1], low[1], oracle[1], k=3.0, dtype=dtype, name=f"{backend} grad_x")


@pytest.mark.parametrize("mode", ["mean", "max"])
@pytest.mark.parametrize("dtype", FAST_DTYPES)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("ratio,d", [(1, 40), (2, 72), (3, 40), (4, 72)])
def test_parity(backend, dtype, ratio, d, mode):
    x, cu = _inputs(LENGTHS, d, dtype, seed=ratio, ties=mode == "max")
    _check_parity(backend, dtype, x, cu, ratio, mode)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("lengths", [[0, 1, 0, 0], [0, 0], [1, 2, 3], [2, 63]])
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_edge_layouts(backend, lengths, mode):
    x, cu = _inputs(lengths, 40, torch.float32, seed=2, ties=True)
    _check_parity(backend, torch.float32, x, cu, 3, mode)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_huge_ratio_runs_at_once(backend, mode):
    """The window is a run-time loop bounded by the frames present: ratio 10**5 (or 2**31 - 1) neither unrolls
    at compile time nor loops past the sequence (a compile-time unroll took over a minute at 10**5)."""
    x, cu = _inputs([3, 0, 70, 1], 40, torch.float32, seed=5, ties=mode == "max")
    _check_parity(backend, torch.float32, x, cu, 10**5, mode)
    y, cu_y = ak.varlen_pool(x, cu, 2**31 - 1, mode, backend=backend)
    assert cu_y.tolist() == [0, 1, 1, 2, 3] and y.shape == (3, 40)


def test_reference_semantics():
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0], [5.0], [7.0]], dtype=torch.float64)
    cu = ak.seqlens_to_cu_seqlens([5, 1])
    for mode, expected, grad in [
        ("mean", [[7 / 3], [3.5], [7.0]], [[1 / 3], [1 / 3], [1 / 3], [0.5], [0.5], [1.0]]),
        ("max", [[3.0], [5.0], [7.0]], [[0.0], [0.5], [0.5], [0.0], [1.0], [1.0]]),
    ]:
        xl = x.clone().requires_grad_()
        y, cu_y = ak.varlen_pool(xl, cu, 3, mode, backend="reference")
        y.sum().backward()
        assert cu_y.tolist() == [0, 2, 3]
        assert y.tolist() == expected
        torch.testing.assert_close(xl.grad, torch.tensor(grad, dtype=torch.float64))


def test_max_splits_negative_gradients_among_ties():
    """Ties share the window's gradient whatever its sign (torch's own segment_reduce backward splits only positive
    gradients: the reference must not inherit that); fast backends agree."""
    x = torch.tensor([[2.0, -1.0], [2.0, -1.0], [1.0, -1.0], [0.0, 5.0], [0.0, 5.0], [0.0, 4.0]], device=DEVICE)
    cu = ak.seqlens_to_cu_seqlens([3, 3]).to(DEVICE)
    gy = torch.tensor([[-3.0, 6.0], [-4.0, -2.0]], device=DEVICE)
    expected = torch.tensor([[-1.5, 2.0], [-1.5, 2.0], [0.0, 2.0], [-4 / 3, -1.0], [-4 / 3, -1.0], [-4 / 3, 0.0]],
                            device=DEVICE)
    for backend in ("reference",) + FAST_BACKENDS:
        xl = x.clone().requires_grad_()
        y, _ = ak.varlen_pool(xl, cu, 3, "max", backend=backend)
        y.backward(gy)
        torch.testing.assert_close(xl.grad, expected, msg=backend)


def test_nan_window_passes_no_gradient():
    """A NaN propagates to its window's maximum, and a NaN maximum equals no frame: the window's frames get no
    gradient, on every backend (other windows are untouched)."""
    nan = float("nan")
    x = torch.tensor([[1.0, 2.0], [nan, 5.0], [3.0, 5.0], [0.0, 1.0], [2.0, 2.0]], device=DEVICE)
    cu = ak.seqlens_to_cu_seqlens([4, 1]).to(DEVICE)
    for backend in ("reference",) + FAST_BACKENDS:
        xl = x.clone().requires_grad_()
        y, _ = ak.varlen_pool(xl, cu, 2, "max", backend=backend)
        y.backward(-torch.ones_like(y))
        assert torch.isnan(y[0, 0]) and y[0, 1] == 5.0, backend
        torch.testing.assert_close(xl.grad, torch.tensor(
            [[0.0, 0.0], [0.0, -1.0], [-1.0, -1.0], [0.0, 0.0], [-1.0, -1.0]], device=DEVICE), msg=backend)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_low_precision_mean_sums_in_fp32(dtype):
    """A mean over long windows in fp16 / bf16 is one rounding of the fp32 sum's mean (summing in the input's dtype
    would drift by many units in the last place)."""
    x, cu = _inputs([3000, 1000], 4, dtype, seed=7)
    y, _ = ak.varlen_pool(x, cu, 1000, "mean", backend="reference")
    expected = ak.varlen_pool(x.double(), cu, 1000, "mean", backend="reference")[0]
    ulp = torch.finfo(dtype).eps * expected.abs().clamp(min=torch.finfo(dtype).tiny)
    assert ((y.double() - expected).abs() <= ulp).all()


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_reference_gradcheck(mode):
    x, cu = _inputs([5, 0, 1, 7], 3, torch.float64, seed=3)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ak.varlen_pool(t, cu, 3, mode, backend="reference")[0], (x,))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_deterministic(backend, mode):
    x, cu = _inputs(LENGTHS, 72, torch.float16, seed=4, ties=True)
    first, _ = _run(backend, x, cu, 4, mode)
    second, _ = _run(backend, x, cu, 4, mode)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_bad_inputs():
    x, cu = _inputs([3, 4], 8, torch.float32, seed=5)
    bad_cu = [
        cu.long(),
        torch.tensor([0, 5, 4, 7], dtype=torch.int32, device=DEVICE),
        torch.tensor([0, 3, 6], dtype=torch.int32, device=DEVICE),
        torch.tensor([1, 3, 7], dtype=torch.int32, device=DEVICE),
        cu[None],
    ]
    if DEVICE.type == "cuda":
        bad_cu.append(cu.cpu())
    for c in bad_cu:
        with pytest.raises(ValueError, match="cu_seqlens"):
            ak.varlen_pool(x, c, 2)
    for ratio in (0, -1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            ak.varlen_pool(x, cu, ratio)
    with pytest.raises(ValueError, match="mode"):
        ak.varlen_pool(x, cu, 2, mode="sum")
    with pytest.raises(ValueError, match="x"):
        ak.varlen_pool(x[:, 0], cu, 2)


@settings(max_examples=6, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 20), min_size=1, max_size=6),
    ratio=st.integers(1, 5),
    mode=st.sampled_from(["mean", "max"]),
    seed=st.integers(0, 2**16),
)
def test_property_random_layouts(lengths, ratio, mode, seed):
    x, cu = _inputs(lengths, 24, torch.float32, seed=seed)
    expected = []
    for seq in ak.unpack(x.double(), cu):
        for w in range(math.ceil(seq.shape[0] / ratio)):
            window = seq[w * ratio : (w + 1) * ratio]
            expected.append(window.mean(0) if mode == "mean" else window.amax(0))
    expected = torch.stack(expected) if expected else x.new_zeros(0, 24, dtype=torch.float64)
    for backend in ("reference",) + FAST_BACKENDS:
        with nan_prefill():
            y, cu_y = ak.varlen_pool(x, cu, ratio, mode, backend=backend)
        assert cu_y[-1].item() == expected.shape[0]
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    if FAST_BACKENDS:
        _check_parity(FAST_BACKENDS[0], torch.float32, x, cu, ratio, mode)


class _Pool(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x, cu):
        y, cu_y = ak.varlen_pool(self.proj(x), cu, 2, "mean", backend="reference")
        return ak.varlen_pool(y, cu_y, 3, "max", backend="reference")


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    x = torch.randn(15, 8, requires_grad=True)
    assert_compiled_matches_eager(_Pool(), (x, ak.seqlens_to_cu_seqlens([5, 0, 9, 1])), [x])

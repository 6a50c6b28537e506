"""weighted_layer_sum: fast backends vs the float64 oracle (parity idiom, NaN-prefilled outputs), gradcheck,
layer grads skipped when no layer needs them, determinism, edge shapes, bad inputs, a property test over
random shapes and torch.compile(fullgraph=True)."""
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


def _inputs(shape, k, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    layers = [torch.randn(shape, generator=g).to(DEVICE, dtype) for _ in range(k)]
    logits = torch.randn(k, generator=g).to(DEVICE)
    return layers, logits


def _run(backend, layers, logits, dtype=None, layer_grads=True):
    """Forward + backward with a fixed upstream gradient -> (y, grad_logits, [grad_layers])."""
    ls = [x.detach().to(dtype or x.dtype).requires_grad_(layer_grads) for x in layers]
    lg = logits.detach().to(torch.float64 if dtype == torch.float64 else logits.dtype).requires_grad_()
    y = ak.weighted_layer_sum(ls, lg, backend=backend)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(11)).to(y.device, y.dtype)
    (y * gy).sum().backward()
    return y.detach(), lg.grad, [x.grad for x in ls]


def _check_parity(backend, dtype, layers, logits):
    oracle = _run("reference", layers, logits, dtype=torch.float64)
    low = _run("reference", layers, logits)
    with nan_prefill():
        fast = _run(backend, layers, logits)
    assert fast[0].dtype == layers[0].dtype and fast[1].dtype == logits.dtype
    assert_parity(fast[0], low[0], oracle[0], k=2.0, dtype=dtype, name=f"{backend} y")
    assert_parity(fast[1], low[1], oracle[1], k=3.0, dtype=torch.float32, name=f"{backend} grad_logits")
    for j, (f, lo, o) in enumerate(zip(fast[2], low[2], oracle[2], strict=True)):
        assert_parity(f, lo, o, k=3.0, dtype=dtype, name=f"{backend} grad_layers[{j}]")


@pytest.mark.parametrize("dtype", FAST_DTYPES)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("shape,k", [((37, 40), 4), ((2, 13, 72), 5), ((1, 1280), 1), ((3000,), 9), ((5, 7), 3)])
def test_parity(backend, dtype, shape, k):
    layers, logits = _inputs(shape, k, dtype, seed=k)
    _check_parity(backend, dtype, layers, logits)


@pytest.mark.parametrize("backend", ("reference",) + FAST_BACKENDS)
def test_layer_grads_skipped_when_frozen(backend):
    layers, logits = _inputs((5, 40), 3, torch.float32, seed=1)
    y, grad_logits, grad_layers = _run(backend, layers, logits, layer_grads=False)
    assert grad_layers == [None, None, None]
    assert grad_logits is not None and torch.isfinite(grad_logits).all()
    # only some layers trainable: only those get a gradient
    ls = [x.clone().requires_grad_(j == 1) for j, x in enumerate(layers)]
    lg = logits.clone().requires_grad_()
    ak.weighted_layer_sum(ls, lg, backend=backend).sum().backward()
    assert ls[0].grad is None and ls[2].grad is None
    torch.testing.assert_close(ls[1].grad, torch.softmax(logits, 0)[1].expand(5, 40))


def test_stacked_tensor_input_matches_list():
    layers, logits = _inputs((6, 40), 4, torch.float64, seed=2)
    stacked = torch.stack(layers).requires_grad_()
    lg = logits.double().requires_grad_()
    y = ak.weighted_layer_sum(stacked, lg, backend="reference")
    expected = (torch.softmax(lg, 0)[:, None, None] * stacked).sum(0)
    torch.testing.assert_close(y, expected)
    y.square().sum().backward()
    g_stacked, g_logits = stacked.grad.clone(), lg.grad.clone()
    stacked.grad, lg.grad = None, None
    expected.square().sum().backward()
    torch.testing.assert_close(g_stacked, stacked.grad)
    torch.testing.assert_close(g_logits, lg.grad)


def test_reference_gradcheck():
    layers, logits = _inputs((3, 5), 3, torch.float64, seed=3)
    inputs = (logits.double().requires_grad_(), *[x.requires_grad_() for x in layers])
    assert torch.autograd.gradcheck(lambda lg, *ls: ak.weighted_layer_sum(list(ls), lg, backend="reference"), inputs)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_deterministic(backend):
    layers, logits = _inputs((40, 72), 5, torch.float16, seed=4)
    first = _run(backend, layers, logits)
    second = _run(backend, layers, logits)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert all(torch.equal(a, b) for a, b in zip(first[2], second[2], strict=True))


@pytest.mark.parametrize("backend", ("reference",) + FAST_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 40), (1,), (1, 1, 3)])
def test_edge_shapes(backend, shape):
    layers, logits = _inputs(shape, 3, torch.float32, seed=5)
    with nan_prefill():
        y, grad_logits, grad_layers = _run(backend, layers, logits)
    w = torch.softmax(logits, 0)
    torch.testing.assert_close(y, sum(w[j] * layers[j] for j in range(3)))
    assert torch.isfinite(grad_logits).all() and all(g.shape == torch.Size(shape) for g in grad_layers)
    if y.numel() == 0:
        assert torch.equal(grad_logits, torch.zeros_like(grad_logits))


def test_bad_inputs():
    layers, logits = _inputs((4, 8), 3, torch.float32, seed=6)
    with pytest.raises(ValueError, match="layers"):
        ak.weighted_layer_sum([], logits[:0])
    with pytest.raises(ValueError, match="layers"):
        ak.weighted_layer_sum("abc", logits)
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        ak.weighted_layer_sum([layers[0], layers[1][:, :4], layers[2]], logits)
    with pytest.raises(ValueError, match=r"layers\[2\]"):
        ak.weighted_layer_sum([layers[0], layers[1], layers[2].half()], logits)
    with pytest.raises(ValueError, match=r"layers\[0\]"):
        ak.weighted_layer_sum([layers[0].long(), layers[1].long()], logits[:2])
    with pytest.raises(ValueError, match="logits"):
        ak.weighted_layer_sum(layers, logits[:2])
    with pytest.raises(ValueError, match="logits"):
        ak.weighted_layer_sum(layers, logits[None])
    with pytest.raises(ValueError, match="logits"):
        ak.weighted_layer_sum(layers, logits.long())
    with pytest.raises(ValueError, match="layers"):
        ak.weighted_layer_sum(torch.zeros(0, 4), logits[:0])
    with pytest.raises(ValueError, match="backend"):
        ak.weighted_layer_sum(layers, logits, backend="nope")
    with pytest.raises(RuntimeError, match="float64"):
        ak.weighted_layer_sum([x.double() for x in layers], logits, backend="triton")


@settings(max_examples=6, deadline=None)
@given(
    shape=st.lists(st.integers(0, 50), min_size=1, max_size=3),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes(shape, k, seed):
    layers, logits = _inputs(tuple(shape), k, torch.float32, seed=seed)
    w = torch.softmax(logits.double(), 0)
    expected = sum(w[j] * layers[j].double() for j in range(k))
    for backend in ("reference",) + FAST_BACKENDS:
        with nan_prefill():
            y = ak.weighted_layer_sum(layers, logits, backend=backend)
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    if FAST_BACKENDS:
        _check_parity(FAST_BACKENDS[0], torch.float32, layers, logits)


class _LayerMix(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(k))
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, hidden_states):
        return self.proj(ak.weighted_layer_sum(hidden_states, self.logits, backend="reference"))


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    model = _LayerMix(3)
    with torch.no_grad():
        model.logits.copy_(torch.randn(3))
    hidden = [torch.randn(2, 5, 8) for _ in range(3)]
    hidden[2].requires_grad_()
    assert_compiled_matches_eager(model, (hidden,), [hidden[2]])

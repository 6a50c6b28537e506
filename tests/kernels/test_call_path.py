"""The ops' call path (docs/kernels.md, "Call path and host cost"): the eager path (an autograd.Function around
the backend, with the intermediates it keeps for the backward) and the registered custom op (what torch.compile
traces) compute the same bits; the reference backends' host route (CPU offsets read in Python) and device route
(tensor ops, what a GPU runs) agree bit for bit; no gradient is materialized for offsets or the log-sum-exp;
meta tensors take the custom op's fake implementation."""
import random

import pytest
import torch
from conftest import DEVICE

import alarm_kernels as ak
from alarm_kernels import _utils

# every test on both size routes of the reference (the oracle): see conftest.reference_size_route
pytestmark = pytest.mark.usefixtures("reference_size_route")

LAYOUTS = [[0, 5, 1, 23, 9], [3], [0, 0, 2], [7, 0, 12, 1, 1, 4]]


def _leaf(*shape, g, dtype=torch.float32):
    return (torch.randn(*shape, generator=g) * 2).round().to(DEVICE, dtype).requires_grad_()  # ties for max


def _cases(lengths, dtype):
    """(name, run) where run(via_custom_op) -> (outputs, grads) of one forward + backward, inputs fixed."""
    g = torch.Generator().manual_seed(len(lengths) * 31 + sum(lengths))
    total = sum(lengths)
    cu = ak.seqlens_to_cu_seqlens(lengths).to(DEVICE)
    short = [max(0, n - 1) for n in lengths]
    cus = [cu, ak.seqlens_to_cu_seqlens(short).to(DEVICE)]
    x, w, b = _leaf(total, 6, g=g, dtype=dtype), _leaf(5, 6, 3, g=g, dtype=dtype), _leaf(5, g=g, dtype=dtype)
    layers, logits = [_leaf(total, 6, g=g, dtype=dtype) for _ in range(3)], _leaf(3, g=g)
    streams = [_leaf(total, 4, g=g, dtype=dtype), _leaf(sum(short), 3, g=g, dtype=dtype)]
    pw, pb = _leaf(5, 7, g=g, dtype=dtype), _leaf(5, g=g, dtype=dtype)
    q, k, v = (_leaf(total, 2, 32, g=g, dtype=dtype) for _ in range(3))
    longest = max(lengths)
    ops = torch.ops.alarm_kernels
    cases = []
    for mode in ("mean", "max"):
        cases.append((f"varlen_pool {mode}", [x], lambda c, m=mode: (
            ops.varlen_pool(x, cu, 2, m, -1, "reference") if c else ak.varlen_pool(x, cu, 2, m, backend="reference"))))
    for act in (None, "gelu"):
        cases.append((f"varlen_conv1d {act}", [x, w, b], lambda c, a=act: (
            ops.varlen_conv1d(x, cu, w, b, 2, 1, a or "none", -1, -1, "reference")[:2] if c
            else ak.varlen_conv1d(x, cu, w, b, 2, 1, a, backend="reference"))))
    cases.append(("weighted_layer_sum", layers + [logits], lambda c: (
        (ops.weighted_layer_sum(layers, logits, "reference"),) if c
        else (ak.weighted_layer_sum(layers, logits, backend="reference"),))))
    cases.append(("multi_encoder_concat", streams + [pw, pb], lambda c: (
        ops.multi_encoder_concat(streams, cus, pw, pb, -1, "reference") if c
        else ak.multi_encoder_concat(streams, cus, pw, pb, backend="reference"))))
    cases.append(("packed_attention", [q, k, v], lambda c: (
        ops.packed_attention(q, k, v, cu, cu, longest, longest, True, 0.3, False, "reference", 0.0, 0, 0)[:1] if c
        else (ak.packed_attention(q, k, v, cu, cu, longest, longest, causal=True, softmax_scale=0.3,
                                  backend="reference"),))))

    def runner(leaves, fn):
        def run(via_custom_op, autocast=False):
            for t in leaves:
                t.grad = None
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):  # the forward only
                outputs = fn(via_custom_op)
            cotangent = torch.randn(outputs[0].shape, generator=torch.Generator().manual_seed(5)).to(outputs[0])
            (outputs[0] * cotangent).sum().backward()
            return [o.detach() for o in outputs], [t.grad for t in leaves]
        return run

    return [(name, runner(leaves, fn)) for name, leaves, fn in cases]


def _assert_same(a, b, what):
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert (x is None) == (y is None), f"{what}[{i}]"
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), f"{what}[{i}] differs"


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", LAYOUTS)
def test_eager_path_matches_the_custom_op(lengths, dtype, autocast):
    """The public functions' eager path and torch.ops.alarm_kernels.<op> (registered autograd, recomputing what the
    eager path keeps) give the same outputs and gradients, bit for bit; also with a bf16-autocast forward (it reaches
    the backends' ATen ops on both paths), whose outputs stay in the inputs' dtype as documented."""
    for name, run in _cases(lengths, dtype):
        if autocast and name.startswith("multi_encoder_concat"):
            continue  # its reference projection is an autocast F.linear: bf16 output, fp32 weight in the backward
        eager_out, eager_grads = run(False, autocast)
        op_out, op_grads = run(True, autocast)
        assert eager_out[0].dtype == dtype, f"{name}: output in {eager_out[0].dtype}, inputs in {dtype}"
        _assert_same(eager_out, op_out, f"{name} outputs")
        _assert_same(eager_grads, op_grads, f"{name} grads")


@pytest.mark.parametrize("seed", range(6))
def test_reference_host_and_device_routes_agree(seed, monkeypatch):
    """On CPU the reference backends read the offsets and build their index tensors in Python; on a GPU tensor ops
    derive them on the device. Both routes, on random layouts (empty and one-frame sequences included), give the
    same outputs, offsets and gradients, bit for bit."""
    rng = random.Random(seed)
    lengths = [rng.choice([0, 1, 2, 5, 9, 16]) for _ in range(rng.randint(1, 7))]
    if sum(lengths) == 0:
        lengths.append(3)
    dtype = rng.choice([torch.float32, torch.float16, torch.float64])
    results = {}
    for on_host in (True, False):
        monkeypatch.setattr(_utils, "offsets_on_host", lambda cu, h=on_host: h)
        results[on_host] = [run(False) for _, run in _cases(lengths, dtype)]
    for (name, _), host, device in zip(_cases(lengths, dtype), results[True], results[False], strict=True):
        _assert_same(host[0], device[0], f"{name} outputs {lengths}")
        _assert_same(host[1], device[1], f"{name} grads {lengths}")


def test_no_gradient_materialized_for_offsets_or_lse(monkeypatch):
    """Outputs without a gradient (offsets, the attention's log-sum-exp, conv's saved pre-activation) reach the
    backward as None, never as zero tensors allocated for nothing."""
    import sys

    seen = {}
    for module_name, op_name, label in (("varlen_pool", "varlen_pool", "pool"),
                                        ("varlen_conv1d", "varlen_conv1d", "conv"),
                                        ("multi_encoder_concat", "multi_encoder_concat", "concat"),
                                        ("attention", "packed_attention", "attn")):
        op = vars(sys.modules[f"alarm_kernels.{module_name}"])[f"_{op_name}_op"]
        spec = op.spec
        original = spec.gradients

        def recording(ctx, saved, backward, *grads, original=original, label=label):
            seen[label] = grads[1:]
            return original(ctx, saved, backward, *grads)

        monkeypatch.setattr(op, "spec", type(spec)(**{**spec.__dict__, "gradients": recording}))
    for _, run in _cases([4, 0, 7], torch.float32):
        run(False)
    assert set(seen) == {"pool", "conv", "concat", "attn"}
    for label, grads in seen.items():
        assert grads and all(g is None for g in grads), f"{label}: {grads}"


def test_meta_tensors_take_the_fake_implementation():
    x = torch.empty(12, 8, device="meta")
    cu = torch.empty(4, dtype=torch.int32, device="meta")
    y, cu_y = ak.varlen_pool(x, cu, 3, backend="reference", total_out=5, validate=False)
    assert y.device.type == "meta" and tuple(y.shape) == (5, 8) and tuple(cu_y.shape) == (4,)


def test_record_backends_names_each_op_and_backend_eager_and_compiled():
    x = torch.randn(10, 8, requires_grad=True)
    cu = ak.seqlens_to_cu_seqlens([4, 6])
    with ak.record_backends() as ran:
        ak.varlen_pool(x, cu, 2, backend="reference")[0].sum().backward()
        ak.varlen_pool(x.detach(), cu, 2, backend="triton")
        ak.weighted_layer_sum([x, x], torch.zeros(2), backend="reference")
    assert ran == {"varlen_pool": {"reference", "triton"}, "weighted_layer_sum": {"reference"}}
    ak.varlen_pool(x, cu, 2, backend="reference")  # outside the block: not recorded
    assert ran == {"varlen_pool": {"reference", "triton"}, "weighted_layer_sum": {"reference"}}

    compiled = torch.compile(lambda t: ak.varlen_pool(t, cu, 2, backend="reference", validate=False)[0],
                             fullgraph=True, backend="eager")
    compiled(x.detach())  # traced outside the block
    with ak.record_backends() as ran:
        compiled(x.detach())
    assert ran == {"varlen_pool": {"reference"}}


def test_create_graph_gives_the_same_gradients_and_refuses_a_second_derivative():
    """With create_graph=True the eager backward runs the same backend backward (under once_differentiable): the
    same gradients, and differentiating them again raises instead of silently returning nothing."""
    g = torch.Generator().manual_seed(3)
    layers, logits = [_leaf(9, 6, g=g) for _ in range(3)], _leaf(3, g=g)
    x, cu = _leaf(9, 6, g=g), ak.seqlens_to_cu_seqlens([4, 5]).to(DEVICE)
    for name, fn, leaf in (("weighted_layer_sum", lambda: ak.weighted_layer_sum(layers, logits), logits),
                           ("varlen_pool max", lambda: ak.varlen_pool(x, cu, 2, "max")[0], x)):
        plain, = torch.autograd.grad(fn().square().sum(), leaf)
        graphed, = torch.autograd.grad(fn().square().sum(), leaf, create_graph=True)
        assert torch.equal(plain, graphed), name
        with pytest.raises(RuntimeError, match="differentiate twice"):
            graphed.sum().backward()

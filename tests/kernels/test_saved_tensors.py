"""What the ops' eager autograd path keeps for the backward goes through ``ctx.save_for_backward``: the tensors a
reference backend's ``forward_saving`` hands over (index tensors, padded inputs, stacks) are seen by
``torch.autograd.graph.saved_tensors_hooks`` (activation offloading, ``torch.utils.checkpoint``'s non-reentrant mode,
memory accounting) like the op's own, none is held on the autograd node besides; gradients under such hooks and under
non-reentrant checkpointing are those of the plain call, bit for bit; the attention reference keeps padded copies
of q, k, v, out, lse on top of them only while they are small."""
import pytest
import torch
import torch.utils.checkpoint
from conftest import DEVICE

import alarm_kernels as ak
from alarm_kernels.attention import reference as attention_reference

# both size routes of the pooling and layer sum references (see conftest.reference_size_route)
pytestmark = pytest.mark.usefixtures("reference_size_route")

LENGTHS = [5, 0, 9, 2, 9]
HEADS, HEAD_DIM = 2, 32


@pytest.fixture(params=["runs", "padded"])
def attention_route(request, monkeypatch):
    """The CPU attention reference's two fused routes: one call per run of equal lengths, or one padded call."""
    monkeypatch.setattr(attention_reference, "_CALL_COST", 0 if request.param == "runs" else 2**40)
    attention_reference._plan.cache_clear()  # plans are cached per offsets
    yield request.param
    attention_reference._plan.cache_clear()


def _leaf(*shape, g):
    return torch.randn(*shape, generator=g).to(DEVICE).requires_grad_()


def _cases():
    """(name, leaves, call(custom_op: bool) -> the op's outputs) for every op on the reference backend."""
    g = torch.Generator().manual_seed(7)
    total, longest = sum(LENGTHS), max(LENGTHS)
    cu = ak.seqlens_to_cu_seqlens(LENGTHS).to(DEVICE)
    short = [max(0, n - 2) for n in LENGTHS]
    cus = [cu, ak.seqlens_to_cu_seqlens(short).to(DEVICE)]
    x, w, b = _leaf(total, 6, g=g), _leaf(5, 6, 3, g=g), _leaf(5, g=g)
    layers, logits = [_leaf(total, 6, g=g) for _ in range(3)], _leaf(3, g=g)
    streams, pw, pb = [_leaf(total, 4, g=g), _leaf(sum(short), 3, g=g)], _leaf(5, 7, g=g), _leaf(5, g=g)
    q, k, v = (_leaf(total, HEADS, HEAD_DIM, g=g) for _ in range(3))
    ops = torch.ops.alarm_kernels
    return [
        ("varlen_pool max", [x], lambda c: ops.varlen_pool(x, cu, 2, "max", -1, "reference") if c
         else ak.varlen_pool(x, cu, 2, "max", backend="reference")),
        ("varlen_pool mean", [x], lambda c: ops.varlen_pool(x, cu, 3, "mean", -1, "reference") if c
         else ak.varlen_pool(x, cu, 3, "mean", backend="reference")),
        ("varlen_conv1d", [x, w, b], lambda c: ops.varlen_conv1d(x, cu, w, b, 2, 1, "gelu", -1, -1, "reference") if c
         else ak.varlen_conv1d(x, cu, w, b, 2, 1, "gelu", backend="reference")),
        ("weighted_layer_sum", layers + [logits], lambda c: (ops.weighted_layer_sum(layers, logits, "reference") if c
                                                             else ak.weighted_layer_sum(layers, logits,
                                                                                        backend="reference"),)),
        ("multi_encoder_concat", streams + [pw, pb], lambda c: ops.multi_encoder_concat(streams, cus, pw, pb, -1,
                                                                                        "reference") if c
         else ak.multi_encoder_concat(streams, cus, pw, pb, backend="reference")),
        ("packed_attention", [q, k, v], lambda c: ops.packed_attention(
            q, k, v, cu, cu, longest, longest, True, 0.3, False, "reference", 0.0, 0, 0) if c
         else (ak.packed_attention(q, k, v, cu, cu, longest, longest, causal=True, softmax_scale=0.3,
                                   backend="reference"), None)),
    ]


NAMES = [name for name, _, _ in _cases()]


def _case(name):
    return next(c for c in _cases() if c[0] == name)


def _backward(outputs, leaves):
    """Gradients of ``<outputs[0], fixed cotangent>`` with respect to ``leaves``."""
    y = outputs[0]
    cotangent = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y)
    return torch.autograd.grad((y * cotangent).sum(), leaves)


def _tensors_in(value, found, seen):
    """Append every tensor reachable from ``value`` (through tuples, lists, dicts and the attributes of alarm_kernels
    objects) to ``found``."""
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _tensors_in(item, found, seen)
    elif isinstance(value, dict):
        for item in value.values():
            _tensors_in(item, found, seen)
    elif type(value).__module__.startswith("alarm_kernels") and id(value) not in seen:
        seen.add(id(value))
        slots = [getattr(value, s, None) for cls in type(value).__mro__ for s in getattr(cls, "__slots__", ())]
        _tensors_in(list(getattr(value, "__dict__", {}).values()) + slots, found, seen)
    return found


def _packed_by_hooks(call):
    """(outputs of ``call()``, the tensors the pack hook saw, in order)."""
    packed = []

    def pack(t):
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = call()
    return outputs, packed


@pytest.mark.usefixtures("attention_route")
@pytest.mark.parametrize("name", NAMES)
def test_pack_hook_sees_every_tensor_the_eager_path_keeps(name, monkeypatch):
    """Counted: the eager path packs what the custom op (no intermediates) packs plus each tensor its backend's
    ``forward_saving`` returned for the backward, those very tensors; none of them is held elsewhere on the node."""
    _, _, call = _case(name)
    kept = []
    if name == "packed_attention":
        module = attention_reference
    else:
        module = __import__(f"alarm_kernels.{name.split()[0]}.reference", fromlist=["forward_saving"])
    original = getattr(module, "forward_saving", None)
    if original is not None:
        def recording(*args, **kwargs):
            outputs, saved = original(*args, **kwargs)
            _tensors_in(saved, kept, set())
            return outputs, saved

        monkeypatch.setattr(module, "forward_saving", recording)
    _, by_custom_op = _packed_by_hooks(lambda: call(True))
    kept.clear()  # its forward runs forward_saving too, and drops what it returns
    outputs, by_eager = _packed_by_hooks(lambda: call(False))
    missing = [tuple(t.shape) for t in kept if not any(t is p for p in by_eager)]
    assert not missing, f"{name}: intermediates kept outside save_for_backward, shapes {missing}"
    assert len(by_eager) == len(by_custom_op) + len(kept), (name, len(by_eager), len(by_custom_op), len(kept))
    on_node = _tensors_in({k: v for k, v in vars(outputs[0].grad_fn).items() if k not in ("op", "impl")}, [], set())
    assert not on_node, f"{name}: tensors held on the autograd node: {[tuple(t.shape) for t in on_node]}"


@pytest.mark.usefixtures("attention_route")
@pytest.mark.parametrize("name", NAMES)
def test_gradients_unchanged_under_saved_tensor_hooks_and_checkpoint(name):
    """Under hooks that hand the backward copies of what was saved (as an offloading hook does), and under
    ``torch.utils.checkpoint`` (non-reentrant: saved tensors dropped, the forward recomputed in the backward), the
    outputs and gradients equal the plain call's, bit for bit."""
    _, leaves, call = _case(name)
    plain_out = call(False)[0].detach()
    plain = _backward(call(False), leaves)
    copies = {}

    def pack(t):
        copies[len(copies)] = t.detach().clone()
        return len(copies) - 1

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda key: copies[key]):
        hooked_out = call(False)
    assert copies, f"{name}: nothing packed"
    hooked = _backward(hooked_out, leaves)
    checkpointed_out = torch.utils.checkpoint.checkpoint(lambda: call(False)[0], use_reentrant=False)
    checkpointed = _backward((checkpointed_out,), leaves)
    for label, out, grads in (("hooks", hooked_out[0], hooked), ("checkpoint", checkpointed_out, checkpointed)):
        assert torch.equal(out, plain_out), f"{name} under {label}: outputs differ"
        for i, (a, b) in enumerate(zip(grads, plain, strict=True)):
            assert torch.equal(a, b), f"{name} under {label}: gradient {i} differs"


@pytest.mark.usefixtures("attention_route")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_attention_reference_keeps_padded_copies_only_when_small(dtype, large, monkeypatch):
    """Above ``KEEP_PADDED_BYTES`` (set to 0 here, standing for a large batch) the bytes the attention's eager path
    keeps are those of q, k, v, out, lse and the offsets, no padded copies besides (at most 1.2x q + k + v + out +
    lse; with these lengths a padded copy alone is 1.5x the packed rows); below it (the default, at these tiny
    sizes) the padded call's tensors are kept too, through the hooks, so the backward does not pad them again."""
    if large:
        monkeypatch.setattr(attention_reference, "KEEP_PADDED_BYTES", 0)
    g = torch.Generator().manual_seed(1)
    lengths = [8, 4, 12]
    cu = ak.seqlens_to_cu_seqlens(lengths).to(DEVICE)
    q, k, v = (torch.randn(sum(lengths), HEADS, HEAD_DIM, generator=g).to(DEVICE, dtype).requires_grad_()
               for _ in range(3))
    out, packed = _packed_by_hooks(lambda: ak.packed_attention(q, k, v, cu, cu, 12, 12, backend="reference"))
    lse_bytes = HEADS * sum(lengths) * (8 if dtype == torch.float64 else 4)  # [H, total] float32 (float64)
    qkv_out_lse = sum(t.numel() * t.element_size() for t in (q, k, v, out)) + lse_bytes
    held = _tensors_in({k: v for k, v in vars(out.grad_fn).items() if k not in ("op", "impl")}, [], set())
    saved = sum(t.numel() * t.element_size() for t in packed + held)  # what the hooks see and what bypasses them
    padded_call = attention_reference._plan_for(q, cu, cu, False, False)[1] is not None
    if large or not padded_call:
        assert saved <= 1.2 * qkv_out_lse, (saved, qkv_out_lse)
    else:
        assert saved >= 2 * qkv_out_lse, (saved, qkv_out_lse)

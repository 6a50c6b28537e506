"""No device-to-host transfer inside the ops when the caller passes the host-side sizes and ``validate=False``
(counted by patching ``Tensor.item / tolist / cpu / numpy / __int__ / __float__ / __bool__ / __index__``, which
is how a transfer looks on any device). The default path (validated offsets) is counted too, so the counter is
shown to see the ops' own reads. The reference backends read CPU offsets on the host by design (no device there;
``alarm_kernels._utils.offsets_on_host``): their device route, what a GPU runs, is forced here on any machine."""
import os

import pytest
import torch
from conftest import DEVICE, FAST_BACKENDS

import alarm_kernels as ak
from alarm_kernels import _utils
from alarm_kernels.testing import count_host_transfers

# every test on both size routes of the reference (the oracle): see conftest.reference_size_route
pytestmark = pytest.mark.usefixtures("reference_size_route")

KERNELS_DIR = os.path.dirname(os.path.abspath(ak.__file__))
LENGTHS = [0, 5, 1, 23, 9]


def _inside_kernels(counts):
    return {site: n for site, n in counts.items() if site.startswith(KERNELS_DIR)}


def _ops(backend, host_sizes):
    """(name, run) pairs: forward + backward of every non-attention op at small shapes."""
    g = torch.Generator().manual_seed(0)
    cu = ak.seqlens_to_cu_seqlens(LENGTHS).to(DEVICE)
    total = sum(LENGTHS)

    def leaf(*shape):
        return torch.randn(*shape, generator=g).to(DEVICE).requires_grad_()

    sizes = dict(validate=False) if host_sizes else {}

    def backward(out):
        (out[0] if isinstance(out, tuple) else out).sum().backward()

    x, w, b = leaf(total, 8), leaf(16, 8, 3), leaf(16)
    pool_extra = dict(sizes, total_out=sum(-(-n // 3) for n in LENGTHS)) if host_sizes else {}
    conv_out = sum((n + 2 - 3) // 2 + 1 for n in LENGTHS if n)
    conv_extra = dict(sizes, total_out=conv_out, max_seqlen=max(LENGTHS)) if host_sizes else {}
    short = [n // 2 for n in LENGTHS]
    cus = [cu, ak.seqlens_to_cu_seqlens(short).to(DEVICE)]
    streams = [leaf(total, 8), leaf(sum(short), 16)]
    proj_w, proj_b = leaf(12, 24), leaf(12)
    concat_extra = dict(sizes, total_out=total) if host_sizes else {}
    layers, logits = [leaf(total, 8) for _ in range(3)], leaf(3)
    return [
        ("varlen_pool", lambda: backward(ak.varlen_pool(x, cu, 3, "max", backend=backend, **pool_extra))),
        ("varlen_conv1d", lambda: backward(ak.varlen_conv1d(x, cu, w, b, 2, 1, "gelu", backend=backend,
                                                            **conv_extra))),
        ("multi_encoder_concat",
         lambda: backward(ak.multi_encoder_concat(streams, cus, backend=backend, **concat_extra))),
        ("multi_encoder_concat+linear",
         lambda: backward(ak.multi_encoder_concat(streams, cus, proj_w, proj_b, backend=backend, **concat_extra))),
        ("weighted_layer_sum", lambda: backward(ak.weighted_layer_sum(layers, logits, backend=backend))),
    ]


@pytest.mark.parametrize("backend", ("reference",) + FAST_BACKENDS)
def test_ops_make_no_host_transfer_given_host_sizes(backend, monkeypatch):
    monkeypatch.setattr(_utils, "offsets_on_host", lambda cu: False)
    for name, run in _ops(backend, host_sizes=True):
        with count_host_transfers() as counts:
            run()
        assert not _inside_kernels(counts), f"{name} [{backend}] read the device: {_inside_kernels(counts)}"


def test_counter_sees_the_validating_path():
    """Control: with validation on (the default) the offset-taking ops read their offsets once."""
    for name, run in _ops("reference", host_sizes=False):
        with count_host_transfers() as counts:
            run()
        if name != "weighted_layer_sum":
            assert _inside_kernels(counts), f"{name}: the counter saw no transfer on the validating path"


def test_host_sizes_checked_against_validated_offsets():
    """With validation on, a host size that disagrees with the offsets is refused (never a silent wrong shape)."""
    cu = ak.seqlens_to_cu_seqlens(LENGTHS)
    x = torch.randn(sum(LENGTHS), 4)
    with pytest.raises(ValueError, match="total_out=3 but"):
        ak.varlen_pool(x, cu, 3, total_out=3)
    with pytest.raises(ValueError, match="total_out=1 but"):
        ak.varlen_conv1d(x, cu, torch.randn(4, 4, 3), None, total_out=1)
    with pytest.raises(ValueError, match="max_seqlen=5 is below the longest sequence"):
        ak.varlen_conv1d(x, cu, torch.randn(4, 4, 3), None, max_seqlen=5)
    with pytest.raises(ValueError, match="total_out=7 but"):
        ak.multi_encoder_concat([x], [cu], total_out=7)
    with pytest.raises(ValueError, match="total_out must be an int >= 0"):
        ak.varlen_pool(x, cu, 3, total_out=-1, validate=False)


def test_tensor_memo_keeps_live_entries_when_full():
    """``TensorMemo``: a hit for the same unchanged tensor and key; recomputed after an in-place change or for
    another key; when full of freed tensors' entries it drops those and keeps the live ones; full of live ones it
    starts over."""
    memo = _utils.TensorMemo(limit=4)
    calls = []

    def compute(value):
        return lambda: calls.append(value) or value

    live = torch.zeros(3)
    assert memo.get_or_compute(live, "k", compute(1)) == 1
    assert memo.get_or_compute(live, "k", compute(2)) == 1 and calls == [1]
    assert memo.get_or_compute(live, "other", compute(3)) == 3
    live.add_(1)  # a new version
    assert memo.get_or_compute(live, "other", compute(4)) == 4 and calls == [1, 3, 4]
    doomed = [torch.zeros(1) for _ in range(3)]  # alive together, so their ids differ
    for t in doomed:
        memo.get_or_compute(t, "k", lambda: None)
    assert len(memo.entries) == 4
    newcomer = torch.zeros(2)  # made before they are freed: an id of its own
    del doomed, t  # the memo is full, three of its entries of freed tensors
    memo.get_or_compute(newcomer, "k", compute(5))
    assert memo.get_or_compute(live, "other", compute(6)) == 4, "a live entry was dropped"
    assert len(memo.entries) == 2
    others = [torch.zeros(1) for _ in range(4)]
    for t in others:  # live entries only: the memo starts over rather than grow
        memo.get_or_compute(t, "k", lambda: None)
    assert len(memo.entries) <= 4

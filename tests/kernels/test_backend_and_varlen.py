"""The backend registry, the varlen helpers and the parity idiom itself."""
import logging
import os

import pytest
import torch

import alarm_kernels as ak
from alarm_kernels import backend as backend_mod
from alarm_kernels.testing import assert_parity, parity


# ---- backend selection -------------------------------------------------------------------------
def test_auto_on_cpu_is_reference(monkeypatch):
    monkeypatch.delenv(ak.BACKEND_ENV, raising=False)
    assert ak.select_backend("op", "auto", torch.device("cpu"), ("cuda", "triton", "reference")) == "reference"


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend 'tritonn'"):
        ak.select_backend("op", "tritonn", torch.device("cpu"), ("triton", "reference"))


def test_explicit_backend_that_cannot_run_raises_with_reason():
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run these inputs: inputs are on cpu"):
        ak.select_backend("op", "cuda", torch.device("cpu"), ("cuda", "reference"))


def test_explicit_backend_not_implemented_raises():
    with pytest.raises(RuntimeError, match="not implemented"):
        ak.select_backend("op", "flash_attn", torch.device("cpu"), ("triton", "reference"))


def test_input_specific_reason_blocks_explicit_backend():
    with pytest.raises(RuntimeError, match="float64 is reference-only"):
        ak.select_backend("op", "triton", torch.device("cpu"), ("triton", "reference"),
                          {"triton": "float64 is reference-only"})


def test_env_var_replaces_auto(monkeypatch):
    monkeypatch.setenv(ak.BACKEND_ENV, "triton")
    assert ak.select_backend("op", "auto", torch.device("cpu"), ("triton", "reference")) == "triton"
    # an explicit argument still wins
    assert ak.select_backend("op", "reference", torch.device("cpu"), ("triton", "reference")) == "reference"


def test_env_var_is_read_on_every_call(monkeypatch):
    """select_backend reads the environment without os.environ.get (backend.env_value): setting, changing and
    unsetting the variable between calls takes effect at once, as os.environ.get would see it."""
    from alarm_kernels.backend import env_value

    cpu = torch.device("cpu")
    monkeypatch.delenv(ak.BACKEND_ENV, raising=False)
    assert env_value(ak.BACKEND_ENV) == "" and ak.select_backend("op_e", "auto", cpu, ("triton", "reference")) == \
        "reference"
    monkeypatch.setenv(ak.BACKEND_ENV, "triton")
    assert env_value(ak.BACKEND_ENV) == "triton" and ak.select_backend("op_e", "auto", cpu, ("triton", "reference")) \
        == "triton"
    monkeypatch.setenv(ak.BACKEND_ENV, "réf")  # a non-ASCII value decodes as os.environ does
    assert env_value(ak.BACKEND_ENV) == os.environ.get(ak.BACKEND_ENV) == "réf"
    monkeypatch.delenv(ak.BACKEND_ENV)
    assert env_value(ak.BACKEND_ENV) == "" and ak.select_backend("op_e", "auto", cpu, ("triton", "reference")) == \
        "reference"


def test_env_var_for_unimplemented_backend_falls_back_with_one_log(monkeypatch, caplog):
    monkeypatch.setenv(ak.BACKEND_ENV, "flash_attn")
    with caplog.at_level(logging.INFO, logger="alarm_kernels"):
        for _ in range(3):
            assert ak.select_backend("op_x", "auto", torch.device("cpu"), ("triton", "reference")) == "reference"
    assert sum("op_x" in r.message for r in caplog.records) == 1


def test_bad_env_var_is_a_value_error(monkeypatch):
    monkeypatch.setenv(ak.BACKEND_ENV, "fastest")
    with pytest.raises(ValueError, match="ALARM_KERNELS_BACKEND"):
        ak.select_backend("op", "auto", torch.device("cpu"), ("reference",))


def test_auto_logs_why_it_skips_a_faster_backend(monkeypatch, caplog):
    monkeypatch.delenv(ak.BACKEND_ENV, raising=False)
    monkeypatch.setattr(backend_mod, "backend_unavailable_reason",
                        lambda name, device: None if name == "reference" else f"{name} is broken today")
    with caplog.at_level(logging.INFO, logger="alarm_kernels"):
        chosen = ak.select_backend("op_y", "auto", torch.device("cuda"), ("cuda", "triton", "reference"))
    assert chosen == "reference"
    messages = " ".join(r.message for r in caplog.records)
    assert "cuda is broken today" in messages and "triton is broken today" in messages


# ---- varlen helpers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cu, total, message",
    [
        (torch.tensor([0, 2, 5], dtype=torch.int64), 5, "int32"),
        (torch.tensor([[0, 2, 5]], dtype=torch.int32), 5, "1-D"),
        (torch.tensor([1, 2, 5], dtype=torch.int32), 5, r"\[0\] must be 0"),
        (torch.tensor([0, 3, 2, 5], dtype=torch.int32), 5, "non-decreasing"),
        (torch.tensor([0, 2, 4], dtype=torch.int32), 5, "must equal the packed length 5"),
        ([0, 2, 5], 5, "torch.Tensor"),
    ],
)
def test_validate_cu_seqlens_names_the_problem(cu, total, message):
    with pytest.raises(ValueError, match=message) as info:
        ak.validate_cu_seqlens(cu, total, name="cu_seqlens_k")
    assert "cu_seqlens_k" in str(info.value)


def test_empty_and_one_token_sequences_are_legal():
    cu = ak.seqlens_to_cu_seqlens([0, 1, 0, 3])
    ak.validate_cu_seqlens(cu, 4)
    assert cu.tolist() == [0, 0, 1, 1, 4] and cu.dtype == torch.int32
    assert ak.cu_seqlens_to_seqlens(cu).tolist() == [0, 1, 0, 3]
    assert ak.max_seqlen(cu) == 3


def test_seqlens_to_cu_seqlens_refuses_int32_overflow():
    assert ak.seqlens_to_cu_seqlens([2**31 - 2, 1])[-1].item() == 2**31 - 1  # the largest total that fits
    for lengths in ([2**31 - 1, 5], [2**31]):
        with pytest.raises(ValueError, match="more than int32 offsets can hold"):
            ak.seqlens_to_cu_seqlens(lengths)
    with pytest.raises(ValueError, match="non-negative, got -2"):
        ak.seqlens_to_cu_seqlens([3, -2])
    assert ak.seqlens_to_cu_seqlens([]).tolist() == [0]


def test_pack_pad_unpad_round_trip():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randn(n, 3, generator=g) for n in (2, 0, 5, 1)]
    packed, cu = ak.pack(seqs)
    padded, mask = ak.pad_packed(packed, cu)
    assert padded.shape == (4, 5, 3) and mask.sum() == 8
    assert (padded[~mask] == 0).all()
    repacked, cu2 = ak.unpad(padded, mask.sum(1))
    assert torch.equal(repacked, packed) and torch.equal(cu2, cu)
    assert [t.shape[0] for t in ak.unpack(packed, cu)] == [2, 0, 5, 1]


def test_unpad_rejects_lengths_beyond_padding():
    with pytest.raises(ValueError, match="lengths must lie"):
        ak.unpad(torch.zeros(2, 3, 1), [1, 4])


# ---- the parity idiom --------------------------------------------------------------------------
def test_parity_flags_nan_and_large_errors():
    oracle = torch.randn(10, dtype=torch.float64)
    low = oracle.half()
    assert parity(low, low, oracle).ok
    bad = low.clone()
    bad[3] = float("nan")
    assert not parity(bad, low, oracle).ok
    with pytest.raises(AssertionError, match="FAIL"):
        assert_parity(low + 0.1, low, oracle)


def test_strided_cu_seqlens_view_gives_the_same_answer():
    """A non-contiguous offsets view (here every other element) must not be misread by a fast backend."""
    strided = torch.tensor([0, 99, 3, 99, 10, 99], dtype=torch.int32)[::2]
    assert not strided.is_contiguous()
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    expected, cu_expected = ak.varlen_pool(x, strided.contiguous(), 2, backend="reference")
    for backend in ("reference", "triton"):
        y, cu_y = ak.varlen_pool(x, strided, 2, backend=backend)
        assert torch.equal(cu_y, cu_expected) and torch.allclose(y, expected, atol=1e-6), backend

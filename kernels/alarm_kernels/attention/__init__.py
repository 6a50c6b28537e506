"""``packed_attention``: flash-attention style attention over packed (varlen) sequences.

Layering (the op template): ``reference.py`` / ``triton.py`` / ``flash_attn.py`` implement ``forward``
(returns ``out`` and the log-sum-exp ``lse``) and ``backward`` per backend; this file validates inputs,
resolves the backend and calls the ``torch.library`` custom op ``alarm_kernels::packed_attention``
(fake shapes + registered autograd calling ``alarm_kernels::packed_attention_backward``).
``hf.py`` plugs the op into transformers as the attention implementation ``"alarm_packed"``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._opdef import OpSpec, define_op
from .._utils import TensorMemo, check_tensor
from ..backend import select_backend
from ..varlen import cu_seqlens_to_seqlens, validate_cu_seqlens
from .reference import OFFSET_LIMIT, SEED_BITS

__all__ = ["packed_attention", "MIN_HEAD_DIM", "MAX_HEAD_DIM"]

# fastest first: flash-attn where installed (proven kernels), then our Triton kernels, then PyTorch
IMPLEMENTED = ("flash_attn", "triton", "reference")
MIN_HEAD_DIM, MAX_HEAD_DIM = 32, 256


def _fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale, deterministic,
          dropout_p, dropout_seed, dropout_offset):
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=lse_dtype)


def _save(ctx, inputs, output):
    q, k, v, cu_q, cu_k = inputs[:5]
    out, lse = output
    ctx.args = inputs[5:]  # max_q, max_k, causal, scale, deterministic, dropout_p, seed, offset
    return q, k, v, out, lse, cu_q, cu_k


def _gradients(ctx, saved, backward, grad_out, _grad_lse):
    dq, dk, dv = backward(grad_out.contiguous(), *saved, *ctx.args)
    return (dq, dk, dv) + (None,) * (len(ctx.args) + 2)


_packed_attention_op = define_op(OpSpec(
    name="packed_attention",
    package=__name__,
    schema="(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, SymInt max_seqlen_q, "
           "SymInt max_seqlen_k, bool causal, float softmax_scale, bool deterministic, str backend, float dropout_p, "
           "SymInt dropout_seed, SymInt dropout_offset) -> (Tensor, Tensor)",
    backward_schema="(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor cu_seqlens_q, "
                    "Tensor cu_seqlens_k, SymInt max_seqlen_q, SymInt max_seqlen_k, bool causal, float softmax_scale, "
                    "bool deterministic, str backend, float dropout_p, SymInt dropout_seed, SymInt dropout_offset) "
                    "-> (Tensor, Tensor, Tensor)",
    fake=_fake,
    backward_fake=lambda grad_out, q, k, v, *_: (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)),
    save=_save,
    gradients=_gradients,
    non_differentiable=(1,),  # lse
))


# offsets already validated -> their longest sequence (per packed total). A model calls the op once per layer with
# the same offsets; re-reading them on the host would sync the GPU in every layer.
_validated = TensorMemo(limit=256)


def _check_offsets(cu_seqlens: Tensor, total: int, name: str, device: torch.device, values: bool = True
                   ) -> Optional[int]:
    """Validate ``cu_seqlens`` (ValueError naming ``name``); return its longest sequence (None while compiling,
    or when ``values`` is False: then only shape, dtype and device are checked, nothing is read back)."""
    validate_cu_seqlens(cu_seqlens, total, name=name, device=device, check_values=False)
    if torch.compiler.is_compiling() or not values:
        return None

    def longest() -> int:
        validate_cu_seqlens(cu_seqlens, total, name=name, device=device)
        return int(cu_seqlens_to_seqlens(cu_seqlens).max()) if cu_seqlens.numel() > 1 else 0

    return _validated.get_or_compute(cu_seqlens, total, longest)


def _check_max_seqlen(value, longest: Optional[int], name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if longest is not None and value < longest:
        raise ValueError(f"{name}={value} is smaller than the longest sequence ({longest})")


def _input_reasons(q: Tensor, dropout_p: float) -> dict:
    fast_dtype = None if q.dtype != torch.float64 else "float64 is reference-only"
    fa = fast_dtype or (None if q.dtype in (torch.float16, torch.bfloat16) else "flash-attn needs fp16/bf16 inputs")
    if fa is None and dropout_p > 0:
        fa = "flash-attn draws its own dropout mask (not this op's seeded Philox mask)"
    return {"triton": fast_dtype, "flash_attn": fa}


def _check_dropout(dropout_p, dropout_seed, dropout_offset) -> Tuple[float, int, int]:
    """Validated ``(p, seed, offset)``; a missing seed is drawn from torch's default CPU generator (so
    ``torch.manual_seed`` makes runs reproducible; no device sync)."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    for name, value, limit in (("dropout_seed", dropout_seed, 2**SEED_BITS), ("dropout_offset", dropout_offset,
                                                                                OFFSET_LIMIT)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit):
            raise ValueError(f"{name} must be an int in [0, 2^{limit.bit_length() - 1}), got {value!r}")
    if dropout_p == 0:
        return 0.0, 0, 0
    if dropout_seed is None:
        dropout_seed = int(torch.randint(0, 2**SEED_BITS, ()))
    return float(dropout_p), dropout_seed, dropout_offset


def packed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool = False,
    softmax_scale: Optional[float] = None,
    backend: str = "auto",
    deterministic: bool = False,
    dropout_p: float = 0.0,
    dropout_seed: Optional[int] = None,
    dropout_offset: int = 0,
    validate: bool = True,
) -> Tensor:
    """Attention over packed sequences (flash-attn's varlen API; differentiable in q, k, v).

    Args:
        q: ``[total_q, Hq, D]`` float tensor (fp32, fp16, bf16; fp64 on the reference backend).
        k, v: ``[total_k, Hkv, D]``, same dtype and device as q; ``Hq % Hkv == 0`` (GQA / MQA: query head
            ``h`` uses key/value head ``h // (Hq // Hkv)``). ``32 <= D <= 256`` (any size, not only powers of 2).
        cu_seqlens_q, cu_seqlens_k: int32 ``[N+1]`` offsets of the N sequences in q and in k/v.
        max_seqlen_q, max_seqlen_k: Python ints, at least the longest query / key sequence.
        causal: causal mask, aligned bottom-right when a sequence's query and key lengths differ
            (query ``i`` sees key ``j`` iff ``j <= i + Lk - Lq``, as flash-attn >= 2.1).
        softmax_scale: multiplies ``Q K^T`` before the softmax; default ``1 / sqrt(D)``.
        backend: "auto", "reference", "triton" or "flash_attn".
        deterministic: the backward runs without atomics (bitwise reproducible); slower on GPU.
        dropout_p: attention dropout rate in [0, 1) (training); kept probabilities are scaled by
            ``1 / (1 - dropout_p)``. The mask is a function of ``(dropout_seed, dropout_offset, head, query row,
            key row)`` only (Philox, identical on the reference and Triton backends, regenerated in the
            backward); flash-attn is skipped (its own RNG).
        dropout_seed: int in ``[0, 2^62)``; None draws one from torch's default generator (``torch.manual_seed``
            makes it reproducible). dropout_offset: int in ``[0, 2^31)``, e.g. the layer index, so that one
            seed gives every call its own mask.
        validate: check the offsets' values against the totals and ``max_seqlen_*`` (reads them back from
            the device once per offsets tensor). ``False`` keeps the shape/dtype/device checks only, for
            callers that built the offsets from host-side lengths (no device-to-host transfer); wrong
            offsets are then undefined behaviour.
    Returns:
        ``out [total_q, Hq, D]`` in q's dtype. A query row that sees no key (empty key sequence, or
        causal with ``i + Lk - Lq < 0``) outputs 0 and receives zero gradients.
    """
    check_tensor(q, "q", ndim=3)
    check_tensor(k, "k", ndim=3, dtypes=(q.dtype,), device=q.device)
    check_tensor(v, "v", ndim=3, dtypes=(q.dtype,), device=q.device)
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q head dim {q.shape[2]} differs from k/v head dim {k.shape[2]}")
    head_dim, hq, hkv = q.shape[2], q.shape[1], k.shape[1]
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"q head dim must lie in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], got {head_dim}")
    if hkv == 0 or hq == 0 or hq % hkv != 0:
        raise ValueError(f"q heads ({hq}) must be a positive multiple of k/v heads ({hkv})")
    longest_q = _check_offsets(cu_seqlens_q, q.shape[0], "cu_seqlens_q", q.device, validate)
    longest_k = _check_offsets(cu_seqlens_k, k.shape[0], "cu_seqlens_k", q.device, validate)
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(
            f"cu_seqlens_q {tuple(cu_seqlens_q.shape)} and cu_seqlens_k {tuple(cu_seqlens_k.shape)} must describe "
            "the same number of sequences"
        )
    _check_max_seqlen(max_seqlen_q, longest_q, "max_seqlen_q")
    _check_max_seqlen(max_seqlen_k, longest_k, "max_seqlen_k")
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_dim)
    if (isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float))
            or not math.isfinite(softmax_scale)):
        raise ValueError(f"softmax_scale must be a finite float or None, got {softmax_scale!r}")
    dropout = _check_dropout(dropout_p, dropout_seed, dropout_offset)
    name = select_backend("packed_attention", backend, q.device, IMPLEMENTED, _input_reasons(q, dropout[0]))
    out, _lse = _packed_attention_op(
        q.contiguous(), k.contiguous(), v.contiguous(), cu_seqlens_q.contiguous(), cu_seqlens_k.contiguous(),
        max_seqlen_q, max_seqlen_k, bool(causal), float(softmax_scale), bool(deterministic), name, *dropout,
    )
    return out

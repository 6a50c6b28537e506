"""flash-attn backend (optional GPU extra ``pip install '.[gpu]'``; imported lazily, absent on CPU machines).

Forward: ``flash_attn.flash_attn_varlen_func`` with ``return_attn_probs=True`` for the log-sum-exp
(flash-attn >= 2.6 returns it as ``[Hq, total_q]`` float32 with +inf on rows without a visible key, the
same layout and convention as our Triton kernels). Backward: flash-attn's own varlen backward
(``flash_attn_interface._flash_attn_varlen_backward``, a private entry point whose signature changes between
releases, so it is called by parameter name and only when every required parameter is one this module knows);
otherwise, and for head dims that are not multiples of 8 or empty inputs, our Triton backward on the same ``lse``.
"""
from __future__ import annotations

import inspect
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import reference


def forward(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, causal: bool, softmax_scale: float, deterministic: bool = False,
    dropout_p: float = 0.0, dropout_seed: int = 0, dropout_offset: int = 0,
) -> Tuple[Tensor, Tensor]:
    """Same contract as :func:`alarm_kernels.attention.reference.forward` (fp16/bf16 CUDA tensors, no dropout:
    the op's front end never selects this backend with ``dropout_p > 0``)."""
    if dropout_p:
        raise RuntimeError("the flash_attn backend runs without dropout (flash-attn draws its own mask)")
    if q.shape[0] == 0 or k.shape[0] == 0:
        return reference.forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale)
    from flash_attn import flash_attn_varlen_func

    out, lse, _ = flash_attn_varlen_func(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
        softmax_scale=softmax_scale, causal=causal, return_attn_probs=True,
    )
    if tuple(lse.shape) != (q.shape[1], q.shape[0]):
        raise RuntimeError(
            f"flash-attn returned lse of shape {tuple(lse.shape)}, expected [Hq, total_q] = "
            f"{(q.shape[1], q.shape[0])}; flash-attn >= 2.6 is required"
        )
    return out.contiguous(), lse.contiguous()


def backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
    causal: bool, softmax_scale: float, deterministic: bool, dropout_p: float = 0.0, dropout_seed: int = 0,
    dropout_offset: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`alarm_kernels.attention.triton.backward` (flash-attn's backward where it can)."""
    grads = None
    if not dropout_p and q.shape[0] and k.shape[0] and q.shape[2] % 8 == 0:
        grads = _flash_backward(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                causal, softmax_scale, deterministic)
    if grads is not None:
        return grads
    from . import triton as triton_backend

    return triton_backend.backward(
        grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
        softmax_scale, deterministic, dropout_p, dropout_seed, dropout_offset,
    )


def _flash_backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool, softmax_scale: float,
    deterministic: bool,
) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
    """``(dq, dk, dv)`` from flash-attn's varlen backward, or None when its entry point is missing or takes a
    required parameter not known here."""
    try:
        from flash_attn.flash_attn_interface import _flash_attn_varlen_backward as flash_bwd
    except ImportError:
        return None
    try:  # a torch.library custom op in recent releases: the wrapped Python function carries the signature
        params = inspect.signature(getattr(flash_bwd, "_init_fn", flash_bwd)).parameters
    except (TypeError, ValueError):
        return None
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    known = dict(
        dout=grad_out, q=q, k=k, v=v, out=out, softmax_lse=lse, dq=dq, dk=dk, dv=dv, cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, dropout_p=0.0,
        softmax_scale=softmax_scale, causal=causal, window_size=(-1, -1), window_size_left=-1, window_size_right=-1,
        softcap=0.0, alibi_slopes=None, deterministic=deterministic, rng_state=None, zero_tensors=False,
    )
    if any(p.default is inspect.Parameter.empty and name not in known for name, p in params.items()):
        return None
    flash_bwd(**{name: known[name] for name in params if name in known})
    return dq, dk, dv

"""flash-attn backend (optional GPU extra ``pip install '.[gpu]'``; imported lazily, absent on CPU machines).

Forward: ``flash_attn.flash_attn_varlen_func`` with ``return_attn_probs=True`` for the log-sum-exp
(flash-attn >= 2.6 returns it as ``[Hq, total_q]`` float32 with +inf on rows without a visible key, the
same layout and convention as our Triton kernels). Backward: our Triton backward kernels on that saved
``lse`` (flash-attn's own backward is only reachable through private functions whose signatures change
between releases; the math is identical).
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor

from . import reference


def forward(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, causal: bool, softmax_scale: float, dropout_p: float = 0.0,
    dropout_seed: int = 0, dropout_offset: int = 0,
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
    """Same contract as :func:`alarm_kernels.attention.triton.backward` (which it calls)."""
    from . import triton as triton_backend

    return triton_backend.backward(
        grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
        softmax_scale, deterministic, dropout_p, dropout_seed, dropout_offset,
    )

"""Fused ops used by the model, resolved from ``alarm_kernels`` (DESIGN.md contracts).

Each name below is the ``alarm_kernels`` op when that package exports it, otherwise a plain-PyTorch
implementation of the same contract (autograd, padded compute) so the model runs while a kernel is
missing. ``kernel_status()`` says which one is in use. All ops take packed ``[total, ...]`` tensors and
int32 ``cu_seqlens`` ``[N+1]``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import alarm_kernels as ak
from alarm_kernels.varlen import cu_seqlens_to_seqlens, pad_packed, seqlens_to_cu_seqlens

__all__ = ["weighted_layer_sum", "multi_encoder_concat", "varlen_conv1d", "packed_attention", "kernel_status"]


def _padded_mask(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _torch_weighted_layer_sum(layers, logits: Tensor, backend: str = "auto") -> Tensor:
    """sum_j softmax(logits)_j * layers[j]; layers: k same-shape tensors or one [k, ...] tensor."""
    w = torch.softmax(logits.float(), 0)
    out = None
    for j in range(w.shape[0]):
        term = layers[j].float() * w[j]
        out = term if out is None else out + term
    return out.to(layers[0].dtype)


def _torch_multi_encoder_concat(streams: Sequence[Tensor], cu_seqlens: Sequence[Tensor], weight=None, bias=None,
                                backend: str = "auto") -> Tuple[Tensor, Tensor]:
    """Pad-at-end alignment of N sequences across streams, concatenated along features (+ optional linear)."""
    lens = torch.stack([cu_seqlens_to_seqlens(c) for c in cu_seqlens])  # [E, N]
    out_len = lens.max(0).values
    cu_out = seqlens_to_cu_seqlens(out_len, device=streams[0].device)
    total = int(cu_out[-1])
    parts = []
    for x, cu, ln in zip(streams, cu_seqlens, lens):
        buf = x.new_zeros(total, x.shape[1])
        ex = torch.repeat_interleave(torch.arange(ln.numel(), device=x.device), ln, output_size=x.shape[0])
        pos = torch.arange(x.shape[0], device=x.device) - cu[:-1].long()[ex]
        parts.append(buf.index_copy(0, cu_out[:-1].long()[ex] + pos, x))
    y = torch.cat(parts, 1)
    if weight is not None:
        y = F.linear(y, weight, bias)
    return y, cu_out


def _torch_varlen_conv1d(x: Tensor, cu_seqlens: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int = 1,
                         padding: int = 1, activation: Optional[str] = None, backend: str = "auto"):
    """Per-sequence Conv1d with zero padding at each edge, channels-last packed in and out."""
    lens = cu_seqlens_to_seqlens(cu_seqlens)
    k = weight.shape[2]
    out_len = torch.where(lens > 0, ((lens + 2 * padding - k) // stride + 1).clamp(min=0), torch.zeros_like(lens))
    padded, _ = pad_packed(x, cu_seqlens)
    y = F.conv1d(padded.transpose(1, 2), weight, bias, stride=stride, padding=padding).transpose(1, 2)
    if activation == "gelu":
        y = F.gelu(y)
    y = y[:, : int(out_len.max()) if out_len.numel() else 0]
    return y[_padded_mask(out_len, y.shape[1])], seqlens_to_cu_seqlens(out_len, device=x.device)


def _torch_packed_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                            max_seqlen_q: int, max_seqlen_k: int, causal: bool = False, softmax_scale=None,
                            backend: str = "auto") -> Tensor:
    """Varlen attention (q [tq, Hq, D], k/v [tk, Hkv, D]) via padded SDPA; rows without keys output 0."""
    lq, lk = cu_seqlens_to_seqlens(cu_seqlens_q), cu_seqlens_to_seqlens(cu_seqlens_k)
    qp, qm = pad_packed(q, cu_seqlens_q, max_seqlen_q)
    kp, km = pad_packed(k, cu_seqlens_k, max_seqlen_k)
    vp, _ = pad_packed(v, cu_seqlens_k, max_seqlen_k)
    rep = q.shape[1] // k.shape[1]
    kp, vp = kp.repeat_interleave(rep, 2), vp.repeat_interleave(rep, 2)
    mask = km[:, None, None, :].expand(-1, 1, max_seqlen_q, -1)
    if causal:
        iq = torch.arange(max_seqlen_q, device=q.device)[None, :, None] + (lk - lq)[:, None, None]
        mask = mask & (torch.arange(max_seqlen_k, device=q.device)[None, None, :] <= iq)[:, None]
    o = F.scaled_dot_product_attention(qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2), attn_mask=mask,
                                       scale=softmax_scale)
    o = o.transpose(1, 2) * mask.any(-1).transpose(1, 2)[..., None]
    return o[qm]


def _resolve(name: str, fallback):
    return getattr(ak, name, None) or fallback


weighted_layer_sum = _resolve("weighted_layer_sum", _torch_weighted_layer_sum)
multi_encoder_concat = _resolve("multi_encoder_concat", _torch_multi_encoder_concat)
varlen_conv1d = _resolve("varlen_conv1d", _torch_varlen_conv1d)
packed_attention = _resolve("packed_attention", _torch_packed_attention)


def kernel_status() -> dict:
    """{op name: "alarm_kernels" or "torch fallback"} for the ops above."""
    return {n: ("alarm_kernels" if hasattr(ak, n) else "torch fallback")
            for n in ("weighted_layer_sum", "multi_encoder_concat", "varlen_conv1d", "packed_attention")}


def split_lengths(cu_seqlens: Tensor) -> List[int]:
    """int32 offsets -> Python list of lengths (one host sync)."""
    return cu_seqlens_to_seqlens(cu_seqlens).tolist()

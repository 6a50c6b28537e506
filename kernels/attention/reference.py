"""Plain-PyTorch packed attention: the numerics oracle (run it in float64) and the CPU default.

Each sequence is computed separately (a Python loop over ``cu_seqlens``, one host read of the offsets)
with ordinary matrix products in the input dtype, and the backward uses the explicit formulas
(no autograd: backends run inside ``torch.library`` custom ops, below the autograd layer):

    P = softmax(scale * Q K^T + mask)          dV = P^T dO          dP = dO V^T
    delta = rowsum(dO * O)                     dS = P * (dP - delta)
    dQ = scale * dS K                          dK = scale * dS^T Q

GQA: query head ``h`` reads key/value head ``h // (Hq // Hkv)``; dK/dV sum over the heads of a group.
Causal masks are aligned bottom-right: query ``i`` of a sequence with ``Lq`` queries and ``Lk`` keys sees
key ``j`` iff ``j <= i + Lk - Lq``. A query row with no visible key outputs 0, has ``lse = +inf``
(flash-attn's convention) and receives zero gradients.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import empty_output


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the saved log-sum-exp: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def visible_mask(lq: int, lk: int, causal: bool, device: torch.device) -> Optional[Tensor]:
    """bool ``[lq, lk]`` (True = query may attend key) for a causal, bottom-right aligned sequence; None
    when every key is visible (non-causal)."""
    if not causal:
        return None
    rows = torch.arange(lq, device=device)[:, None]
    cols = torch.arange(lk, device=device)[None, :]
    return cols <= rows + (lk - lq)


def _probs(qi: Tensor, ki: Tensor, causal: bool, scale: float) -> Tuple[Tensor, Tensor]:
    """Softmax probabilities ``[Hkv, G, lq, lk]`` and natural-log LSE ``[Hkv, G, lq]`` (+inf on rows
    without a visible key), for ``qi [lq, Hkv, G, D]`` and ``ki [lk, Hkv, D]``, in the input dtype."""
    lq, lk = qi.shape[0], ki.shape[0]
    s = torch.einsum("qhgd,khd->hgqk", qi, ki) * scale
    mask = visible_mask(lq, lk, causal, qi.device)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    row_max = s.amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(s - row_max)
    denom = e.sum(-1, keepdim=True)
    p = e / torch.where(denom > 0, denom, torch.ones_like(denom))
    lse = torch.where(denom > 0, row_max + torch.log(denom), torch.full_like(denom, math.inf))
    return p, lse.squeeze(-1)


def forward(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, causal: bool, softmax_scale: float,
) -> Tuple[Tensor, Tensor]:
    """Packed attention forward.

    Args:
        q: ``[total_q, Hq, D]``; k, v: ``[total_k, Hkv, D]`` (same float dtype, float64 allowed).
        cu_seqlens_q, cu_seqlens_k: int32 ``[N+1]`` offsets. max_seqlen_*: unused here (kept for the
            common backend signature).
        causal: bottom-right aligned causal mask. softmax_scale: multiplies ``Q K^T``.
    Returns:
        ``(out [total_q, Hq, D] in q's dtype, lse [Hq, total_q] float32 (float64 for float64 inputs))``.
    """
    total_q, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    out = empty_output(q.shape, q.dtype, q.device)
    lse = empty_output((hq, total_q), lse_dtype(q.dtype), q.device)
    bq, bk = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(bq) - 1):
        q0, q1, k0, k1 = bq[i], bq[i + 1], bk[i], bk[i + 1]
        lq = q1 - q0
        if lq == 0:
            continue
        if k1 == k0:
            out[q0:q1] = 0
            lse[:, q0:q1] = math.inf
            continue
        p, lse_i = _probs(q[q0:q1].view(lq, hkv, g, d), k[k0:k1], causal, softmax_scale)
        out[q0:q1] = torch.einsum("hgqk,khd->qhgd", p, v[k0:k1]).reshape(lq, hq, d)
        lse[:, q0:q1] = lse_i.reshape(hq, lq).to(lse.dtype)
    return out, lse


def backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
    causal: bool, softmax_scale: float, deterministic: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Packed attention backward (explicit formulas; always deterministic).

    Args:
        grad_out: ``[total_q, Hq, D]``; q, k, v, out, lse as given to / returned by :func:`forward`
            (``lse`` is not needed here: probabilities are recomputed in the input dtype).
    Returns:
        ``(dq [total_q, Hq, D], dk [total_k, Hkv, D], dv [total_k, Hkv, D])`` in the input dtype.
    """
    total_q, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    dq = empty_output(q.shape, q.dtype, q.device)
    dk = empty_output(k.shape, k.dtype, k.device)
    dv = empty_output(v.shape, v.dtype, v.device)
    bq, bk = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(bq) - 1):
        q0, q1, k0, k1 = bq[i], bq[i + 1], bk[i], bk[i + 1]
        lq = q1 - q0
        if lq == 0 or k1 == k0:
            dq[q0:q1] = 0
            dk[k0:k1] = 0
            dv[k0:k1] = 0
            continue
        qi = q[q0:q1].view(lq, hkv, g, d)
        doi = grad_out[q0:q1].view(lq, hkv, g, d)
        oi = out[q0:q1].view(lq, hkv, g, d)
        ki, vi = k[k0:k1], v[k0:k1]
        p, _ = _probs(qi, ki, causal, softmax_scale)
        dv[k0:k1] = torch.einsum("hgqk,qhgd->khd", p, doi)
        dp = torch.einsum("qhgd,khd->hgqk", doi, vi)
        delta = (doi * oi).sum(-1).permute(1, 2, 0).unsqueeze(-1)
        ds = p * (dp - delta)
        dq[q0:q1] = (torch.einsum("hgqk,khd->qhgd", ds, ki) * softmax_scale).reshape(lq, hq, d)
        dk[k0:k1] = torch.einsum("hgqk,qhgd->khd", ds, qi) * softmax_scale
    return dq, dk, dv

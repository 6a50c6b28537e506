"""Plain-PyTorch packed attention: the numerics oracle (float64) and the CPU default.

Two routes compute the same function:

* **Plain formula** (float64 inputs, non-CPU tensors): each sequence separately (a Python loop over
  ``cu_seqlens``, one host read of the offsets) with ordinary matrix products in the input dtype; the
  backward uses the explicit formulas (no autograd: backends run inside ``torch.library`` custom ops,
  below the autograd layer). This is the oracle the tests compare every backend with:

      P = softmax(scale * Q K^T + mask)          dV = P^T dO          dP = dO V^T
      delta = rowsum(dO * O)                     dS = P * (dP - delta)
      dQ = scale * dS K                          dK = scale * dS^T Q

* **Fused CPU route** (fp32 / fp16 / bf16 CPU tensors, no dropout): PyTorch's fused CPU attention kernels
  (``aten::_scaled_dot_product_flash_attention_for_cpu`` and its backward, which take the same saved
  ``out`` / ``lse``), either once per run of consecutive sequences with equal lengths (such a run is a
  strided ``[n, H, L, D]`` view of the packed tensor: no copies), or, when that would mean many small
  calls, once for all sequences padded to the longest with an additive key mask (whichever a simple
  cost model, :func:`_use_padded`, finds cheaper). Sequences it does not take (causal with
  ``Lq != Lk``: bottom-right alignment and rows without keys) use the plain formula.

Dropout on the attention probabilities (``dropout_p > 0``; always the plain formula here): the kept
entries are scaled by ``1 / (1 - p)`` (inverted dropout, as flash-attn), so with ``Z = keep / (1 - p)``:
``O = (P * Z) V``, ``dV = (P * Z)^T dO``, ``dP = Z * (dO V^T)``, and ``delta = rowsum(dO * O)`` still holds.
The mask is a pure function of ``(seed, offset, query head, global query row, global key row)``:
:func:`dropout_keep_mask` is a bit-exact twin of the Triton kernels' Philox draw.

GQA: query head ``h`` reads key/value head ``h // (Hq // Hkv)``; dK/dV sum over the heads of a group.
Causal masks are aligned bottom-right: query ``i`` of a sequence with ``Lq`` queries and ``Lk`` keys sees
key ``j`` iff ``j <= i + Lk - Lq``. A query row with no visible key outputs 0, has ``lse = +inf``
(flash-attn's convention) and receives zero gradients.
"""
from __future__ import annotations

import functools
import math
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._utils import as_dtype, empty_output
from ..varlen import PaddedLayout

_FUSED_CPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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


# Philox-4x32-10 constants (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), as in triton.language
_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_KEY_STEP = (0x9E3779B9, 0xBB67AE85)
_WORD = 0xFFFFFFFF
SEED_BITS = 62  # seeds are split into two 31-bit key words (they travel to the kernels as int32 scalars)
OFFSET_LIMIT = 2**31


def _mul_words(a: Tensor, b: int) -> Tuple[Tensor, Tensor]:
    """High and low 32-bit words of ``a * b`` (``a`` int64 in [0, 2^32), ``b`` < 2^32) without int64 overflow."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    t_hi, t_lo = a_hi * b, a_lo * b
    return (t_hi + (t_lo >> 16)) >> 16, (((t_hi & 0xFFFF) << 16) + t_lo) & _WORD


def philox_word(c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, k0: int, k1: int) -> Tensor:
    """First output word of Philox-4x32-10 for counters ``(c0, c1, c2, c3)`` (int64 tensors holding uint32
    values, broadcastable) and key ``(k0, k1)``; bit-identical to ``tl.philox(...)[0]`` with uint32 counters."""
    for _ in range(10):
        hi_b, lo_b = _mul_words(c2, _PHILOX_MUL[1])
        hi_a, lo_a = _mul_words(c0, _PHILOX_MUL[0])
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_STEP[0]) & _WORD
        k1 = (k1 + _PHILOX_KEY_STEP[1]) & _WORD
    return c0


def seed_words(seed: int) -> Tuple[int, int]:
    """The two 31-bit Philox key words of a dropout seed in ``[0, 2^62)``."""
    return seed & (2**31 - 1), seed >> 31


def dropout_threshold(dropout_p: float) -> int:
    """An entry is dropped iff the top 24 bits of its Philox word are below this (drop rate = threshold / 2^24)."""
    return round(dropout_p * 2**24)


def dropout_keep_mask(seed: int, offset: int, dropout_p: float, heads: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """bool ``[len(heads), len(rows), len(cols)]``: True where dropout keeps the probability of query head
    ``heads[a]``, packed query row ``rows[b]`` and packed key row ``cols[c]`` (global indices in q and k).

    Philox counters ``(key row, query row, head, offset)``, key = :func:`seed_words`; the Triton kernels draw
    the same words, so both backends drop exactly the same entries for the same ``(seed, offset)``.
    """
    k0, k1 = seed_words(seed)
    as_word = dict(dtype=torch.int64, device=rows.device)
    word = philox_word(cols.to(**as_word)[None, None, :], rows.to(**as_word)[None, :, None],
                       heads.to(**as_word)[:, None, None], torch.tensor(offset, **as_word), k0, k1)
    return (word >> 8) >= dropout_threshold(dropout_p)


def uses_fused_cpu_route(q: Tensor) -> bool:
    """True when :func:`forward` / :func:`backward` run PyTorch's fused CPU attention for ``q``'s runs of
    sequences (CPU tensors in fp32 / fp16 / bf16); False for the plain formula (float64: the oracle)."""
    return q.device.type == "cpu" and q.dtype in _FUSED_CPU_DTYPES


def _runs(bq: Sequence[int], bk: Sequence[int]) -> Iterator[Tuple[int, int, int, int, int]]:
    """Maximal runs of consecutive sequences with equal (query, key) lengths: ``(q0, k0, n, lq, lk)``."""
    i, count = 0, len(bq) - 1
    while i < count:
        lq, lk = bq[i + 1] - bq[i], bk[i + 1] - bk[i]
        j = i + 1
        while j < count and bq[j + 1] - bq[j] == lq and bk[j + 1] - bk[j] == lk:
            j += 1
        yield bq[i], bk[i], j - i, lq, lk
        i = j


def _heads_first(x: Tensor, start: int, n: int, length: int) -> Tensor:
    """``x[start : start + n * length]`` (``[T, H, D]``) as the strided view ``[n, H, length, D]``."""
    return x[start:start + n * length].view(n, length, x.shape[1], x.shape[2]).transpose(1, 2)


# cost of one fused call in multiply-adds of useful work (about 50-100 us on one CPU core): the padded
# route is taken when it saves more than this per avoided call
_CALL_COST = 2**18


def _use_padded(seqs: List[Tuple[int, int, int, int]], runs: int, width: int) -> bool:
    """Whether one padded call over ``seqs`` (``(q0, k0, lq, lk)``, ``runs`` runs of equal lengths) costs
    less than one call per run; ``width`` = heads x head dim."""
    if runs < 2:
        return False
    longest_q, longest_k = max(s[2] for s in seqs), max(s[3] for s in seqs)
    useful = sum(s[2] * s[3] for s in seqs) * width
    padded = len(seqs) * (longest_q * longest_k + longest_q + longest_k) * width
    return padded + _CALL_COST < useful + runs * _CALL_COST


class _Padded:
    """All sequences of one padded fused call: where their query and key rows sit in the padded batch (``q``, ``k``:
    :class:`alarm_kernels.varlen.PaddedLayout`, zeros past each sequence's end) and the additive key mask ``mask``
    ``[n, 1, Lq, Lk]``. Padded keys are masked out (``-inf``); padded query rows see the valid keys, so nothing
    produces NaN, and their zero ``dO`` adds no gradient. Tensors are padded heads-first: ``[n, H, L, D]``."""

    def __init__(self, seqs: List[Tuple[int, int, int, int]], causal: bool, dtype: torch.dtype, device: torch.device,
                 total_q: int, total_k: int):
        q0, k0, lq, lk = (list(col) for col in zip(*seqs, strict=True))
        self.q = PaddedLayout.from_lengths(lq, device, starts=q0, total=total_q)
        self.k = PaddedLayout.from_lengths(lk, device, starts=k0, total=total_k)
        # the call covers every packed query (key) row in order: no other run, no row index to apply
        self.q_all, self.k_all = self.q.rows is None, self.k.rows is None
        rows = torch.arange(self.q.max_len, device=device)[None, :, None]
        cols = torch.arange(self.k.max_len, device=device)[None, None, :]
        lq_t, lk_t = (torch.tensor(lengths, device=device)[:, None, None] for lengths in (lq, lk))
        visible = cols < lk_t
        if causal:
            visible = visible & (cols <= rows + (lk_t - lq_t))
        zero = torch.zeros((), dtype=dtype, device=device)
        self.mask = torch.where(visible, zero, -math.inf)[:, None]

    def pad(self, x: Tensor, keys: bool) -> Tensor:
        """Rows of packed ``x [T, H, D]`` as ``[n, H, L, D]`` (L = longest query or key sequence)."""
        return (self.k if keys else self.q).pad(x).transpose(1, 2)

    def unpad(self, padded: Tensor, keys: bool) -> Tensor:
        """The valid rows of ``padded [n, H, L, D]`` as a fresh packed tensor (in packed order when the call covers
        every row: ``q_all`` / ``k_all``)."""
        return (self.k if keys else self.q).unpad(padded.transpose(1, 2))

    def unpad_into(self, full: Tensor, padded: Tensor, keys: bool) -> None:
        """Write the valid rows of ``padded [n, H, L, D]`` into packed ``full [T, H, D]``."""
        (self.k if keys else self.q).unpad_into(full, padded.transpose(1, 2))

    def pad_lse(self, lse: Tensor) -> Tensor:
        """The query rows of ``lse [H, T]`` as ``[n, H, Lq]``."""
        return self.q.pad(lse.t()).transpose(1, 2)

    def unpad_lse(self, padded: Tensor) -> Tensor:
        """The valid rows of ``padded [n, H, L]`` as a fresh contiguous ``[H, T]`` (the call covers every row)."""
        return self.q.unpad(padded.transpose(1, 2)).t().contiguous()

    def unpad_lse_into(self, lse: Tensor, padded: Tensor) -> None:
        """Write the valid rows of ``padded [n, H, L]`` into ``lse [H, T]``."""
        self.q.unpad_into(lse.t(), padded.transpose(1, 2))


@functools.lru_cache(maxsize=16)
def _plan(bq: Tuple[int, ...], bk: Tuple[int, ...], causal: bool, fused: bool, width: int, dtype: torch.dtype,
          device: torch.device):
    """Split the sequences into ``(runs, padded)``: ``runs`` = ``(q0, k0, n, lq, lk, how)`` with ``how`` one
    of "empty_q", "empty_k", "fused" (one fused call over the run's view), "plain"; ``padded`` = a
    :class:`_Padded` for the sequences of one padded fused call (their runs are left out), or None.
    Cached: a model calls the op once per layer, forward and backward, with the same offsets."""
    runs = []
    for q0, k0, n, lq, lk in _runs(bq, bk):
        if lq == 0 or lk == 0:
            how = "empty_q" if lq == 0 else "empty_k"
        else:
            how = "fused" if fused and not (causal and lq != lk) else "plain"
        runs.append((q0, k0, n, lq, lk, how))
    fused_runs = [r for r in runs if r[5] == "fused"]
    seqs = [(q0 + i * lq, k0 + i * lk, lq, lk) for q0, k0, n, lq, lk, _ in fused_runs for i in range(n)]
    if not _use_padded(seqs, len(fused_runs), width):
        return runs, None
    return [r for r in runs if r[5] != "fused"], _Padded(seqs, causal, dtype, device, bq[-1], bk[-1])


def _plan_for(q: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, causal: bool, plain: bool):
    """:func:`_plan` for these inputs (one host read of each offsets tensor)."""
    fused = uses_fused_cpu_route(q) and not plain
    return _plan(tuple(cu_seqlens_q.tolist()), tuple(cu_seqlens_k.tolist()), causal, fused, q.shape[1] * q.shape[2],
                 q.dtype, q.device)


def _lse_view(lse: Tensor, start: int, n: int, length: int) -> Tensor:
    """``lse[:, start : start + n * length]`` (``[Hq, T]``) as the strided view ``[n, Hq, length]``."""
    return lse[:, start:start + n * length].view(lse.shape[0], n, length).transpose(0, 1)


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


def _dropout_factor(dropout, hkv: int, g: int, q0: int, q1: int, k0: int, k1: int, like: Tensor) -> Optional[Tensor]:
    """``Z = keep / (1 - p)`` as ``[Hkv, G, lq, lk]`` in ``like``'s dtype, or None without dropout."""
    if dropout is None:
        return None
    p, seed, offset = dropout
    arange = functools.partial(torch.arange, device=like.device)
    keep = dropout_keep_mask(seed, offset, p, arange(hkv * g), arange(q0, q1), arange(k0, k1))
    return (keep.to(like.dtype) / (1.0 - p)).view(hkv, g, q1 - q0, k1 - k0)


def _plain_forward(q, k, v, out, lse, q0, q1, k0, k1, causal, scale, dropout) -> None:
    """Plain formula for one sequence with at least one query and one key, written into out / lse;
    ``dropout`` = None or ``(p, seed, offset)``."""
    lq, (hq, d), hkv = q1 - q0, q.shape[1:], k.shape[1]
    p, lse_i = _probs(q[q0:q1].view(lq, hkv, hq // hkv, d), k[k0:k1], causal, scale)
    z = _dropout_factor(dropout, hkv, hq // hkv, q0, q1, k0, k1, q)
    if z is not None:
        p = p * z
    out[q0:q1] = torch.einsum("hgqk,khd->qhgd", p, v[k0:k1]).reshape(lq, hq, d)
    lse[:, q0:q1] = lse_i.reshape(hq, lq).to(lse.dtype)


def _plain_backward(grad_out, q, k, v, out, dq, dk, dv, q0, q1, k0, k1, causal, scale, dropout) -> None:
    """Explicit backward formulas for one sequence with at least one query and one key."""
    lq, (hq, d), hkv = q1 - q0, q.shape[1:], k.shape[1]
    g = hq // hkv
    qi = q[q0:q1].view(lq, hkv, g, d)
    doi = grad_out[q0:q1].view(lq, hkv, g, d)
    oi = out[q0:q1].view(lq, hkv, g, d)
    ki, vi = k[k0:k1], v[k0:k1]
    p, _ = _probs(qi, ki, causal, scale)
    z = _dropout_factor(dropout, hkv, g, q0, q1, k0, k1, q)
    dv[k0:k1] = torch.einsum("hgqk,qhgd->khd", p if z is None else p * z, doi)
    dp = torch.einsum("qhgd,khd->hgqk", doi, vi)
    if z is not None:
        dp = dp * z
    delta = (doi * oi).sum(-1).permute(1, 2, 0).unsqueeze(-1)
    ds = p * (dp - delta)
    dq[q0:q1] = (torch.einsum("hgqk,khd->qhgd", ds, ki) * scale).reshape(lq, hq, d)
    dk[k0:k1] = torch.einsum("hgqk,qhgd->khd", ds, qi) * scale


# The padded call's inputs and outputs are kept for the backward while their bytes stay under this: at such sizes
# padding them again costs more host time than the op's whole plain-PyTorch equivalent; above it the copies would
# double the activation memory the op keeps, and padding again is small beside the attention itself.
KEEP_PADDED_BYTES = 2**20


def forward_saving(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, causal: bool, softmax_scale: float, deterministic: bool = False,
    dropout_p: float = 0.0, dropout_seed: int = 0, dropout_offset: int = 0, *, plain: bool = False,
) -> Tuple[Tuple[Tensor, Tensor], Tuple[Tuple[Tensor, ...], None]]:
    """:func:`forward`'s outputs and what :func:`backward` takes as ``saved``: ``((qp, kp, vp, o, lse_pad), None)``,
    the padded call's inputs and outputs, when one ran and they hold at most ``KEEP_PADDED_BYTES``; else
    ``((), None)`` (the backward pads them again)."""
    dropout = (dropout_p, dropout_seed, dropout_offset) if dropout_p > 0 else None
    runs, padded = _plan_for(q, cu_seqlens_q, cu_seqlens_k, causal, plain or dropout is not None)
    fused_fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    kept = ()
    if padded is not None:
        qp, kp, vp = padded.pad(q, False), padded.pad(k, True), padded.pad(v, True)
        o, lse_pad = fused_fwd(qp, kp, vp, 0.0, False, attn_mask=padded.mask, scale=softmax_scale)
        if sum(t.nbytes for t in (qp, kp, vp, o, lse_pad)) <= KEEP_PADDED_BYTES:
            kept = (qp, kp, vp, o, lse_pad)
    if padded is not None and padded.q_all:  # one padded call made every output row: gather them, nothing else
        out = as_dtype(padded.unpad(o, False), q.dtype)  # a cast only when an autocast changed the fused call's dtype
        lse = as_dtype(padded.unpad_lse(lse_pad), lse_dtype(q.dtype))
    else:
        out = empty_output(q.shape, q.dtype, q.device)
        lse = empty_output((q.shape[1], q.shape[0]), lse_dtype(q.dtype), q.device)
        if padded is not None:
            padded.unpad_into(out, o, False)
            padded.unpad_lse_into(lse, lse_pad)
    for q0, k0, n, lq, lk, how in runs:
        q1 = q0 + n * lq
        if how == "empty_k":
            out[q0:q1] = 0
            lse[:, q0:q1] = math.inf
        elif how == "fused":
            o, lse_run = fused_fwd(_heads_first(q, q0, n, lq), _heads_first(k, k0, n, lk),
                                   _heads_first(v, k0, n, lk), 0.0, causal, scale=softmax_scale)
            _heads_first(out, q0, n, lq).copy_(o)
            _lse_view(lse, q0, n, lq).copy_(lse_run)
        elif how == "plain":
            for s in range(n):
                _plain_forward(q, k, v, out, lse, q0 + s * lq, q0 + (s + 1) * lq, k0 + s * lk, k0 + (s + 1) * lk,
                               causal, softmax_scale, dropout)
    return (out, lse), (kept, None)


def forward(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, causal: bool, softmax_scale: float, deterministic: bool = False,
    dropout_p: float = 0.0, dropout_seed: int = 0, dropout_offset: int = 0, *, plain: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Packed attention forward.

    Args:
        q: ``[total_q, Hq, D]``; k, v: ``[total_k, Hkv, D]`` (same float dtype, float64 allowed).
        cu_seqlens_q, cu_seqlens_k: int32 ``[N+1]`` offsets. max_seqlen_*: unused here (kept for the
            common backend signature).
        causal: bottom-right aligned causal mask. softmax_scale: multiplies ``Q K^T``. deterministic: unused
            here (the op's schema carries it for the backward).
        dropout_p, dropout_seed, dropout_offset: attention dropout rate in [0, 1) and its mask's Philox seed
            (``[0, 2^62)``) and offset (``[0, 2^31)``); see :func:`dropout_keep_mask`.
        plain: force the plain formula (tests use it in low precision to size error budgets).
    Returns:
        ``(out [total_q, Hq, D] in q's dtype, lse [Hq, total_q] float32 (float64 for float64 inputs))``.
    """
    return forward_saving(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale,
                          deterministic, dropout_p, dropout_seed, dropout_offset, plain=plain)[0]


def backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
    causal: bool, softmax_scale: float, deterministic: bool, dropout_p: float = 0.0, dropout_seed: int = 0,
    dropout_offset: int = 0, *, plain: bool = False, saved: Optional[Tuple[Tuple[Tensor, ...], None]] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Packed attention backward (always deterministic).

    Args:
        grad_out: ``[total_q, Hq, D]``; q, k, v, out, lse as given to / returned by :func:`forward`
            (the plain formula recomputes the probabilities instead of reading ``lse``).
        dropout_p, dropout_seed, dropout_offset, plain: as for :func:`forward` (the same mask is regenerated).
        saved: from :func:`forward_saving` (the padded call's tensors are padded again when it kept none).
    Returns:
        ``(dq [total_q, Hq, D], dk [total_k, Hkv, D], dv [total_k, Hkv, D])`` in the input dtype.
    """
    dropout = (dropout_p, dropout_seed, dropout_offset) if dropout_p > 0 else None
    runs, padded = _plan_for(q, cu_seqlens_q, cu_seqlens_k, causal, plain or dropout is not None)
    fused_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    grads = None
    if padded is not None:
        kept = saved[0] if saved is not None else ()
        if not kept:  # the forward kept no padded copies (too large, or no eager forward): pad them again
            kept = (padded.pad(q, False), padded.pad(k, True), padded.pad(v, True), padded.pad(out, False),
                    padded.pad_lse(lse))
        grads = fused_bwd(padded.pad(grad_out, False), *kept, 0.0, False, attn_mask=padded.mask, scale=softmax_scale)
    if grads is not None and padded.q_all and padded.k_all:  # the padded call covered every row: gather them
        dq, dk, dv = (as_dtype(padded.unpad(g, keys), x.dtype)
                      for g, keys, x in zip(grads, (False, True, True), (q, k, v), strict=True))
    else:
        dq = empty_output(q.shape, q.dtype, q.device)
        dk = empty_output(k.shape, k.dtype, k.device)
        dv = empty_output(v.shape, v.dtype, v.device)
        if grads is not None:
            for grad, full, keys in zip(grads, (dq, dk, dv), (False, True, True), strict=True):
                padded.unpad_into(full, grad, keys)
    for q0, k0, n, lq, lk, how in runs:
        q1, k1 = q0 + n * lq, k0 + n * lk
        if how in ("empty_q", "empty_k"):
            dq[q0:q1] = 0
            dk[k0:k1] = 0
            dv[k0:k1] = 0
        elif how == "fused":
            grads = fused_bwd(
                _heads_first(grad_out, q0, n, lq), _heads_first(q, q0, n, lq), _heads_first(k, k0, n, lk),
                _heads_first(v, k0, n, lk), _heads_first(out, q0, n, lq), _lse_view(lse, q0, n, lq),
                0.0, causal, scale=softmax_scale,
            )
            for grad, full, start, length in zip(grads, (dq, dk, dv), (q0, k0, k0), (lq, lk, lk), strict=True):
                _heads_first(full, start, n, length).copy_(grad)
        else:
            for s in range(n):
                _plain_backward(grad_out, q, k, v, out, dq, dk, dv, q0 + s * lq, q0 + (s + 1) * lq, k0 + s * lk,
                                k0 + (s + 1) * lk, causal, softmax_scale, dropout)
    return dq, dk, dv

"""Triton flash attention over packed sequences (forward and backward).

Layout: q / out / grads ``[total_q, Hq, D]``, k / v ``[total_k, Hkv, D]`` (contiguous: the head stride is the
constexpr head dim, so head dims that are not multiples of 16, e.g. 40 or 72, keep 16-byte vector loads and
cp.async; a runtime stride of 72 would lose Triton's divisibility specialization), offsets int32
``[N+1]``, log-sum-exp ``lse [Hq, total_q]`` float32 in natural-log units (+inf on a query row that sees
no key, flash-attn's convention, so ``exp(s - lse) = 0`` there and its gradients vanish).

Kernels (one program = one tile of one sequence and one head; programs past a sequence's end exit):

* ``_fwd_kernel`` grid ``(cdiv(max_seqlen_q, BLOCK_M), N, Hq)``: online softmax in base 2 (the softmax
  scale is folded with log2(e) into one multiplier), key blocks split into an unmasked loop (keys every
  row of the tile sees) and a masked loop (the causal diagonal and the ragged last block); key blocks that
  are fully masked for the tile are never visited.
* ``_bwd_preprocess_kernel``: ``delta = rowsum(dO * O)`` (fp32, ``[Hq, total_q]``).
* ``_bwd_dkdv_kernel`` grid ``(cdiv(max_seqlen_k, BLOCK_N), N, Hkv)``: one key block of one kv head keeps
  dK and dV in registers while looping over the query heads of its GQA group and over the query blocks
  that see it (no atomics for dK/dV). With ``ATOMIC_DQ`` it also adds ``dS K`` into an fp32 dQ buffer
  with atomics (fast, not bitwise reproducible).
* ``_bwd_dq_kernel`` grid ``(cdiv(max_seqlen_q, BLOCK_M), N, Hq)``: the deterministic dQ (a second pass
  over the key blocks, no atomics).

Head dims: a power of two is one column block (``BLOCK_D``). A head dim that is the sum of two powers of two
of at least 16 runs as two column blocks with no padding (``BLOCK_D`` + ``BLOCK_DHI``: the perceiver's 192 =
128 + 64, 96 = 64 + 32): every product over the head dim is two ``tl.dot`` calls and every tile of q / k / v /
dO / dQ / dK / dV has a second, narrower part, instead of padding 192 to 256 (a third more registers,
shared memory and tensor-core work). Other head dims are padded to the next power of two with load/store masks.
Numerics: q/k/v tiles feed ``tl.dot`` in their storage dtype (fp16/bf16 tensor cores; fp32 inputs use
``input_precision="ieee"`` so fp32 stays fp32-accurate), accumulation and all softmax math are fp32, and
probabilities / dS are rounded to the storage dtype only as ``tl.dot`` operands (as flash-attn does).
bf16 cannot be tested under ``TRITON_INTERPRET=1`` (its bf16 arithmetic is broken upstream).

Configs (GPU): by default one fixed config per kernel, head-dim block, dtype and compute capability
(:func:`default_config`); ``ALARM_KERNELS_AUTOTUNE=1`` autotunes instead (keyed on head-dim block, causal, GQA
group, dropout and dtypes; candidates pruned by head dim). fp32 inputs always run the first config.
The dQ atomics are ``relaxed`` (plain fp32 adds; nothing reads dQ before the kernel ends).
"""
from __future__ import annotations

import functools
import os
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._utils import empty_output, triton_autotune
from .reference import dropout_threshold, seed_words

LOG2E = 1.4426950408889634


# ALARM_KERNELS_AUTOTUNE=1 at import: autotune on GPU. Otherwise (the default; tests, the GPU check, CUDA-graph
# capture, multi-rank runs) every kernel runs the fixed config of _DEFAULT_CONFIGS for its head dim, dtype and GPU.
AUTOTUNE = os.environ.get("ALARM_KERNELS_AUTOTUNE", "0") == "1"

# Fixed configs (BLOCK_M, BLOCK_N, num_warps, num_stages) for fp16/bf16 inputs, per kernel, head-dim block and
# minimum compute capability (major * 10 + minor; the highest entry not above the device's applies). Chosen
# without register spills and within shared memory (sm_90: tests/sm90_compile.py prints registers, spills and
# shared memory of each). fp32 ("ieee" dots, a correctness path) always runs the first autotune config.
_DEFAULT_CONFIGS = {
    "fwd": {64: {80: (128, 64, 8, 3)}, 128: {80: (128, 64, 8, 3)}, 256: {80: (64, 64, 8, 2)}},
    "dkdv_atomic": {64: {80: (64, 128, 8, 2)}, 128: {80: (16, 64, 8, 2)}, 256: {80: (16, 64, 8, 2)}},
    "dkdv": {64: {80: (64, 128, 8, 2)}, 128: {80: (32, 64, 8, 2)}, 256: {80: (16, 64, 8, 2)}},
    "dq": {64: {80: (128, 64, 8, 2)}, 128: {80: (128, 64, 8, 2)}, 256: {80: (64, 32, 8, 2)}},
}
# The forward for query sequences that fit one short tile (max_seqlen_q <= SHORT_Q: the perceiver's 20 latents
# cross-attending an audio stream). Its grid has one program per (sequence, head), each streaming its sequence's
# keys; with so few programs (160 for 40 sequences x 4 heads on 132 SMs) the loop is bound by load latency, not by
# the dots. A 64-row tile would be two thirds padding rows. A 32-row tile holds the latents with 12 padding rows;
# 8 warps spread its accumulator and scores over 256 threads (186 registers at D=192, no spills on sm_90; 4 warps
# need 255 and spill), which leaves room for 128-key blocks: two stages of 128 keys in flight (119 KB of shared
# memory at D=192) and half the loop iterations of 64-key blocks. 256 keeps 64-key blocks (shared memory).
SHORT_Q = 32
_SHORT_Q_CONFIGS = {64: {80: (32, 128, 8, 2)}, 128: {80: (32, 128, 8, 2)}, 192: {80: (32, 128, 8, 2)},
                    256: {80: (32, 64, 8, 2)}}
# shared memory one block may use, by compute capability (bytes)
_SHARED_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}


def _capability() -> int:
    """Compute capability of the active device as ``major * 10 + minor`` (Triton's target arch)."""
    arch = triton.runtime.driver.active.get_current_target().arch
    return arch if isinstance(arch, int) else 80


def _at_capability(table: dict, capability: int):
    """The entry of the highest capability key not above ``capability`` (the lowest key if none is)."""
    return table[max((c for c in table if c <= capability), default=min(table))]


def default_config(kernel: str, block_d: int, capability: int, short_q: bool = False) -> triton.Config:
    """The fixed fp16/bf16 config of ``kernel`` ("fwd", "dkdv_atomic", "dkdv", "dq") for a head-dim block
    (``short_q``: the forward of query sequences no longer than :data:`SHORT_Q`)."""
    by_dim = _SHORT_Q_CONFIGS if kernel == "fwd" and short_q else _DEFAULT_CONFIGS[kernel]
    m, n, warps, stages = _at_capability(by_dim[min(d for d in by_dim if d >= block_d)], capability)
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=warps, num_stages=stages)


def shared_memory_estimate(kernel: str, config: triton.Config, block_d: int) -> int:
    """Shared memory (bytes, 16-bit inputs) of ``kernel`` with ``config``: its pipelined tiles (``num_stages``
    copies) plus the resident ones; exact for fwd and dq on sm_90, within a few KB for dkdv (which adds a
    margin; the atomic variant also stages its fp32 dQ tile). tests/sm90_compile.py checks it."""
    m, n, stages = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_stages
    if kernel == "fwd":
        return 2 * block_d * (m + 2 * n * stages)
    if kernel == "dq":
        return 2 * block_d * (2 * m + 2 * n * stages)
    staged = 2 * block_d * (2 * m * stages + 2 * n) * 5 // 4
    return staged + (4 * m * block_d if kernel == "dkdv_atomic" else 0)


def _prune(configs, named_args, kernel: str, **kwargs):
    """Configs for one call: fp32 inputs (``ieee`` dots: slow to compile, not a performance target) the first;
    without :data:`AUTOTUNE` the fixed :func:`default_config`; otherwise the candidates whose tile suits the head
    dim and whose shared memory (:func:`shared_memory_estimate`) fits the device."""
    if kwargs.get("PREC") == "ieee":
        return configs[:1]
    if kernel == "dkdv" and kwargs.get("ATOMIC_DQ"):
        kernel = "dkdv_atomic"
    capability, block_d = _capability(), kwargs["BLOCK_D"] + kwargs.get("BLOCK_DHI", 0)  # columns in registers
    short_q = bool(kwargs.get("SHORT_Q"))
    if not AUTOTUNE:
        return [default_config(kernel, block_d, capability, short_q)]
    limit = 2**21 if block_d <= 128 else 2**20
    shared = _at_capability(_SHARED_LIMIT, capability)
    kept = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] * block_d <= limit
            and shared_memory_estimate(kernel, c, block_d) <= shared
            and (kernel != "fwd" or (c.kwargs["BLOCK_M"] <= SHORT_Q) == short_q)]
    return kept or [default_config(kernel, block_d, capability, short_q)]


def _prune_for(kernel: str) -> dict:
    return {"early_config_prune": functools.partial(_prune, kernel=kernel)}


def _configs(pairs, interpret_pair):
    """Autotune configs ``(BLOCK_M, BLOCK_N, num_warps, num_stages)``; ``interpret_pair`` is prepended
    so it is the fixed config under the interpreter (index 0)."""
    rows = [interpret_pair] + [p for p in pairs if p != interpret_pair]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in rows]


_FWD_CONFIGS = _configs(
    [(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 2),
     (32, 128, 8, 2), (32, 64, 8, 2), (32, 64, 4, 3), (16, 128, 4, 2)],  # the last four: short query sequences
    (64, 32, 4, 2),
)
_DKDV_CONFIGS = _configs(
    [(64, 64, 8, 3), (32, 64, 8, 2), (32, 128, 8, 3), (64, 128, 8, 3), (16, 64, 4, 2), (16, 32, 4, 2)],
    (32, 64, 4, 2),
)
_DQ_CONFIGS = _configs(
    [(128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2)],
    (64, 32, 4, 2),
)


@triton.jit
def _seq_bounds(CU_Q, CU_K, seq):
    """Start offsets (int64, so base pointers never overflow) and lengths (int32) of sequence ``seq``."""
    q_start = tl.load(CU_Q + seq)
    len_q = tl.load(CU_Q + seq + 1) - q_start
    k_start = tl.load(CU_K + seq)
    len_k = tl.load(CU_K + seq + 1) - k_start
    return q_start.to(tl.int64), len_q, k_start.to(tl.int64), len_k


@triton.jit
def _key_range(m0, len_q, len_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """For the query tile starting at row m0: (full, hi) such that key blocks in [0, full) are visible to
    every row of the tile and blocks in [full, hi) need masking; keys >= hi are invisible to the tile."""
    if CAUSAL:
        diag = len_k - len_q
        hi = tl.minimum(len_k, tl.maximum(m0 + BLOCK_M + diag, 0))
        full = tl.minimum(hi, tl.maximum(m0 + diag + 1, 0))
    else:
        hi = len_k
        full = len_k
    full = (full // BLOCK_N) * BLOCK_N
    return full, hi


@triton.jit
def _keep(drop, head, q_idx, k_idx):
    """Dropout keep mask of one tile: ``q_idx`` / ``k_idx`` are int32 global query / key rows shaped to broadcast
    to the tile (either orientation); ``drop = (seed_lo, seed_hi, offset, threshold)`` int32 scalars. Philox
    counters (key row, query row, head, offset): the reference's ``dropout_keep_mask`` draws the same words."""
    seed_lo, seed_hi, offset, threshold = drop
    zero = q_idx * 0 + k_idx * 0
    seed = (seed_hi.to(tl.uint64) << 32) | seed_lo.to(tl.uint64)
    word, _, _, _ = tl.philox(seed, k_idx + zero, q_idx + zero, zero + head, zero + offset)
    return (word >> 8).to(tl.int32) >= threshold


@triton.jit
def _key_tile(q, q_hi, K, V, cols, len_k, stride_kt, offs_d, d_mask, offs_hi, qk_scale,
              MASKED: tl.constexpr, PREC: tl.constexpr, BLOCK_DHI: tl.constexpr):
    """One key block for a query tile: ``(k, v, k_hi, v_hi, s)`` with the scaled scores ``s = q k^T * qk_scale``
    (base 2). Rows past the sequence's end are masked only in the ragged last block (``MASKED``); the head dim's
    second column block (``BLOCK_DHI`` > 0, exact width: no column mask) adds its product, else ``k_hi``/``v_hi``
    are placeholders."""
    kv_off = cols[:, None] * stride_kt + offs_d[None, :]
    if MASKED:
        kv_mask = (cols < len_k)[:, None] & d_mask[None, :]
    else:
        kv_mask = d_mask[None, :]
    k = tl.load(K + kv_off, mask=kv_mask, other=0.0)
    v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PREC)
    if BLOCK_DHI > 0:
        off_hi = cols[:, None] * stride_kt + offs_hi[None, :]
        if MASKED:
            k_hi = tl.load(K + off_hi, mask=(cols < len_k)[:, None], other=0.0)
            v_hi = tl.load(V + off_hi, mask=(cols < len_k)[:, None], other=0.0)
        else:
            k_hi = tl.load(K + off_hi)
            v_hi = tl.load(V + off_hi)
        s += tl.dot(q_hi, tl.trans(k_hi), input_precision=PREC)
    else:
        k_hi, v_hi = k, v
    return k, v, k_hi, v_hi, s * qk_scale


@triton.jit
def _visible(rows, cols, len_k, diag, CAUSAL: tl.constexpr):
    """[rows, cols] keys each query row sees: inside the sequence and, causal, on or before its diagonal."""
    visible = cols[None, :] < len_k
    if CAUSAL:
        visible = visible & (cols[None, :] <= rows[:, None] + diag)
    return visible


@triton.jit
def _fwd_inner(
    acc, acc_hi, l_i, m_i, q, q_hi, K, V, len_k, diag, rows, start, stop, stride_kt, offs_d, d_mask, offs_hi,
    qk_scale, drop, head, q_glob, k_glob,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DHI: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(start, stop, BLOCK_N):
        cols = start_n + offs_n
        k, v, k_hi, v_hi, s = _key_tile(q, q_hi, K, V, cols, len_k, stride_kt, offs_d, d_mask, offs_hi, qk_scale,
                                        MASKED, PREC, BLOCK_DHI)
        if MASKED:
            s = tl.where(_visible(rows, cols, len_k, diag, CAUSAL), s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_new = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:  # the normalizer sums every probability; only the values see the dropped ones as 0
            p = tl.where(_keep(drop, head, (q_glob + rows)[:, None], (k_glob + cols)[None, :]), p, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        if BLOCK_DHI > 0:
            acc_hi = acc_hi * alpha[:, None] + tl.dot(p.to(v_hi.dtype), v_hi, input_precision=PREC)
        m_i = m_new
    return acc, acc_hi, l_i, m_i


# the dropout seed words / offset / threshold change every call: never specialize on their values
_DROPOUT_ARGS = ["seed_lo", "seed_hi", "drop_offset", "drop_threshold"]


@triton_autotune(
    configs=_FWD_CONFIGS, key=["BLOCK_D", "BLOCK_DHI", "CAUSAL", "GROUP", "DROPOUT", "SHORT_Q"],
    prune_configs_by=_prune_for("fwd"),
)
@triton.jit(do_not_specialize=_DROPOUT_ARGS)
def _fwd_kernel(
    Q, K, V, OUT, LSE, CU_Q, CU_K, qk_scale, keep_scale, seed_lo, seed_hi, drop_offset, drop_threshold,
    stride_qt, stride_kt, stride_lh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DHI: tl.constexpr,
    CAUSAL: tl.constexpr, PREC: tl.constexpr, DROPOUT: tl.constexpr, SHORT_Q: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # SHORT_Q (max_seqlen_q <= SHORT_Q) only selects the config (see _SHORT_Q_CONFIGS)
    pid_m = tl.program_id(0)
    if CAUSAL:  # causal tiles further down the diagonal do more work: launch them first
        pid_m = tl.num_programs(0) - 1 - pid_m
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start, len_q, k_start, len_k = _seq_bounds(CU_Q, CU_K, seq)
    m0 = pid_m * BLOCK_M
    if m0 >= len_q:
        return
    # scalar int64 bases per (sequence, head); tile offsets below are small int32 (sequence-local)
    Q += q_start * stride_qt + head * HEAD_DIM
    OUT += q_start * stride_qt + head * HEAD_DIM
    LSE += head * stride_lh + q_start
    K += k_start * stride_kt + (head // GROUP) * HEAD_DIM
    V += k_start * stride_kt + (head // GROUP) * HEAD_DIM
    rows = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q = tl.load(Q + rows[:, None] * stride_qt + offs_d[None, :], mask=(rows < len_q)[:, None] & d_mask[None, :],
                other=0.0)
    diag = len_k - len_q
    full, hi = _key_range(m0, len_q, len_k, CAUSAL, BLOCK_M, BLOCK_N)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if BLOCK_DHI > 0:
        offs_hi = BLOCK_D + tl.arange(0, BLOCK_DHI)
        q_hi = tl.load(Q + rows[:, None] * stride_qt + offs_hi[None, :], mask=(rows < len_q)[:, None], other=0.0)
        acc_hi = tl.zeros([BLOCK_M, BLOCK_DHI], dtype=tl.float32)
    else:  # placeholders, never read
        offs_hi, q_hi, acc_hi = offs_d, q, acc
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    drop = (seed_lo, seed_hi, drop_offset, drop_threshold)
    q_glob, k_glob = q_start.to(tl.int32), k_start.to(tl.int32)
    acc, acc_hi, l_i, m_i = _fwd_inner(
        acc, acc_hi, l_i, m_i, q, q_hi, K, V, len_k, diag, rows, 0, full, stride_kt, offs_d, d_mask, offs_hi,
        qk_scale, drop, head, q_glob, k_glob, False, CAUSAL, PREC, DROPOUT, BLOCK_N, BLOCK_DHI,
    )
    acc, acc_hi, l_i, m_i = _fwd_inner(
        acc, acc_hi, l_i, m_i, q, q_hi, K, V, len_k, diag, rows, full, hi, stride_kt, offs_d, d_mask, offs_hi,
        qk_scale, drop, head, q_glob, k_glob, True, CAUSAL, PREC, DROPOUT, BLOCK_N, BLOCK_DHI,
    )
    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    out_scale = keep_scale / l_safe
    out = acc * out_scale[:, None]
    lse = tl.where(seen, (m_i + tl.math.log2(l_safe)) * 0.6931471805599453, float("inf"))
    # store offsets rebuilt here (not reused from the q load) so no [BLOCK_M, BLOCK_D] offset tensor stays
    # live in registers across the key loops
    o_rows = m0 + tl.arange(0, BLOCK_M)
    o_cols = tl.arange(0, BLOCK_D)
    o_mask = (o_rows < len_q)[:, None] & (o_cols < HEAD_DIM)[None, :]
    tl.store(OUT + o_rows[:, None] * stride_qt + o_cols[None, :], out.to(OUT.dtype.element_ty), mask=o_mask)
    if BLOCK_DHI > 0:
        o_cols_hi = BLOCK_D + tl.arange(0, BLOCK_DHI)
        tl.store(OUT + o_rows[:, None] * stride_qt + o_cols_hi[None, :],
                 (acc_hi * out_scale[:, None]).to(OUT.dtype.element_ty), mask=(o_rows < len_q)[:, None])
    tl.store(LSE + o_rows, lse, mask=o_rows < len_q)


@triton.jit
def _bwd_preprocess_kernel(
    OUT, DO, DELTA, total_q, stride_qt, stride_lh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    row0 = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    base = row0.to(tl.int64) * stride_qt + head * HEAD_DIM
    mask = (row0 + rows < total_q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    off = rows[:, None] * stride_qt + offs_d[None, :]
    o = tl.load(OUT + base + off, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + base + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + head * stride_lh + row0 + rows, tl.sum(o * do, 1), mask=row0 + rows < total_q)


@triton.jit
def _dkdv_inner(
    dk, dv, dk_hi, dv_hi, k, v, k_hi, v_hi, Q, DO, DQ, LSE, DELTA, len_q, diag, cols, col_ok, start, stop,
    stride_qt, stride_dqt, offs_d, d_mask, offs_hi, qk_scale, sm_scale, keep_scale, drop, head, q_glob, k_glob,
    MASKED: tl.constexpr, ATOMIC_DQ: tl.constexpr, PREC: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_DHI: tl.constexpr,
):
    # computed transposed (keys on the M side of every product: [BLOCK_N, BLOCK_M] score tiles), so the
    # large key block is the tensor-core M dimension
    for m0 in range(start, stop, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < len_q
        qT = tl.load(Q + rows[None, :] * stride_qt + offs_d[:, None], mask=row_ok[None, :] & d_mask[:, None],
                     other=0.0)
        do = tl.load(DO + rows[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None] & d_mask[None, :],
                     other=0.0)
        lse2 = tl.load(LSE + rows, mask=row_ok, other=float("inf")) * 1.4426950408889634
        delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
        sT = tl.dot(k, qT, input_precision=PREC)
        if BLOCK_DHI > 0:  # the head dim's second column block
            qT_hi = tl.load(Q + rows[None, :] * stride_qt + offs_hi[:, None], mask=row_ok[None, :], other=0.0)
            do_hi = tl.load(DO + rows[:, None] * stride_qt + offs_hi[None, :], mask=row_ok[:, None], other=0.0)
            sT += tl.dot(k_hi, qT_hi, input_precision=PREC)
        sT = sT * qk_scale
        pT = tl.math.exp2(sT - lse2[None, :])
        visible = col_ok[:, None]
        if MASKED:
            visible = visible & (cols[:, None] <= rows[None, :] + diag)
        pT = tl.where(visible, pT, 0.0)
        dpT = tl.dot(v, tl.trans(do), input_precision=PREC)
        if BLOCK_DHI > 0:
            dpT += tl.dot(v_hi, tl.trans(do_hi), input_precision=PREC)
        if DROPOUT:  # Z = keep / (1 - p): dV = (P Z)^T dO, dP = Z (dO V^T)
            keepT = _keep(drop, head, (q_glob + rows)[None, :], (k_glob + cols)[:, None])
            pzT = tl.where(keepT, pT * keep_scale, 0.0).to(do.dtype)
            dpT = tl.where(keepT, dpT * keep_scale, 0.0)
        else:
            pzT = pT.to(do.dtype)
        dv += tl.dot(pzT, do, input_precision=PREC)
        if BLOCK_DHI > 0:
            dv_hi += tl.dot(pzT, do_hi, input_precision=PREC)
        dsT = pT * (dpT - delta[None, :])
        dk += tl.dot(dsT.to(qT.dtype), tl.trans(qT), input_precision=PREC)
        if BLOCK_DHI > 0:
            dk_hi += tl.dot(dsT.to(qT_hi.dtype), tl.trans(qT_hi), input_precision=PREC)
        if ATOMIC_DQ:
            dq = tl.dot(tl.trans(dsT.to(k.dtype)), k, input_precision=PREC) * sm_scale
            tl.atomic_add(DQ + rows[:, None] * stride_dqt + offs_d[None, :], dq,
                          mask=row_ok[:, None] & d_mask[None, :], sem="relaxed")
            if BLOCK_DHI > 0:
                dq_hi = tl.dot(tl.trans(dsT.to(k_hi.dtype)), k_hi, input_precision=PREC) * sm_scale
                tl.atomic_add(DQ + rows[:, None] * stride_dqt + offs_hi[None, :], dq_hi, mask=row_ok[:, None],
                              sem="relaxed")
    return dk, dv, dk_hi, dv_hi


@triton_autotune(
    configs=_DKDV_CONFIGS, key=["BLOCK_D", "BLOCK_DHI", "CAUSAL", "GROUP", "ATOMIC_DQ", "DROPOUT"],
    reset_to_zero=["DQ"],
    prune_configs_by=_prune_for("dkdv"),
)
@triton.jit(do_not_specialize=_DROPOUT_ARGS)
def _bwd_dkdv_kernel(
    Q, K, V, DO, DQ, DK, DV, LSE, DELTA, CU_Q, CU_K, qk_scale, sm_scale, keep_scale,
    seed_lo, seed_hi, drop_offset, drop_threshold,
    stride_qt, stride_kt, stride_dqt, stride_lh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DHI: tl.constexpr,
    CAUSAL: tl.constexpr, ATOMIC_DQ: tl.constexpr, PREC: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    seq = tl.program_id(1)
    kv_head = tl.program_id(2)
    q_start, len_q, k_start, len_k = _seq_bounds(CU_Q, CU_K, seq)
    n0 = pid_n * BLOCK_N
    if n0 >= len_k:
        return
    kv_base = k_start * stride_kt + kv_head * HEAD_DIM
    cols = n0 + tl.arange(0, BLOCK_N)
    col_ok = cols < len_k
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    kv_off = cols[:, None] * stride_kt + offs_d[None, :]
    k = tl.load(K + kv_base + kv_off, mask=col_ok[:, None] & d_mask[None, :], other=0.0)
    v = tl.load(V + kv_base + kv_off, mask=col_ok[:, None] & d_mask[None, :], other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if BLOCK_DHI > 0:
        offs_hi = BLOCK_D + tl.arange(0, BLOCK_DHI)
        kv_off_hi = cols[:, None] * stride_kt + offs_hi[None, :]
        k_hi = tl.load(K + kv_base + kv_off_hi, mask=col_ok[:, None], other=0.0)
        v_hi = tl.load(V + kv_base + kv_off_hi, mask=col_ok[:, None], other=0.0)
        dk_hi = tl.zeros([BLOCK_N, BLOCK_DHI], dtype=tl.float32)
        dv_hi = tl.zeros([BLOCK_N, BLOCK_DHI], dtype=tl.float32)
    else:  # placeholders, never read
        offs_hi, k_hi, v_hi, dk_hi, dv_hi = offs_d, k, v, dk, dv
    diag = len_k - len_q
    if CAUSAL:
        # rows before `lo` see no key of this block; rows from `full` on see all of them
        lo = (tl.maximum(n0 - diag, 0) // BLOCK_M) * BLOCK_M
        full = tl.maximum(tl.cdiv(tl.maximum(n0 + BLOCK_N - 1 - diag, 0), BLOCK_M) * BLOCK_M, lo)
        masked_stop = tl.minimum(full, len_q)
    else:
        lo = 0
        full = 0
        masked_stop = 0
    drop = (seed_lo, seed_hi, drop_offset, drop_threshold)
    q_glob, k_glob = q_start.to(tl.int32), k_start.to(tl.int32)
    for g in range(GROUP):
        head = kv_head * GROUP + g
        q_base = q_start * stride_qt + head * HEAD_DIM
        dq_base = q_start * stride_dqt + head * HEAD_DIM
        l_base = head * stride_lh + q_start
        dk, dv, dk_hi, dv_hi = _dkdv_inner(
            dk, dv, dk_hi, dv_hi, k, v, k_hi, v_hi, Q + q_base, DO + q_base, DQ + dq_base, LSE + l_base,
            DELTA + l_base, len_q, diag, cols, col_ok, lo, masked_stop, stride_qt, stride_dqt, offs_d, d_mask,
            offs_hi, qk_scale, sm_scale, keep_scale, drop, head, q_glob, k_glob, True, ATOMIC_DQ, PREC, DROPOUT,
            BLOCK_M, BLOCK_DHI,
        )
        dk, dv, dk_hi, dv_hi = _dkdv_inner(
            dk, dv, dk_hi, dv_hi, k, v, k_hi, v_hi, Q + q_base, DO + q_base, DQ + dq_base, LSE + l_base,
            DELTA + l_base, len_q, diag, cols, col_ok, full, len_q, stride_qt, stride_dqt, offs_d, d_mask,
            offs_hi, qk_scale, sm_scale, keep_scale, drop, head, q_glob, k_glob, False, ATOMIC_DQ, PREC, DROPOUT,
            BLOCK_M, BLOCK_DHI,
        )
    # store offsets rebuilt (see _fwd_kernel)
    s_cols = n0 + tl.arange(0, BLOCK_N)
    s_d = tl.arange(0, BLOCK_D)
    s_off = kv_base + s_cols[:, None] * stride_kt + s_d[None, :]
    s_mask = (s_cols < len_k)[:, None] & (s_d < HEAD_DIM)[None, :]
    tl.store(DK + s_off, (dk * sm_scale).to(DK.dtype.element_ty), mask=s_mask)
    tl.store(DV + s_off, dv.to(DV.dtype.element_ty), mask=s_mask)
    if BLOCK_DHI > 0:
        s_off_hi = kv_base + s_cols[:, None] * stride_kt + (BLOCK_D + tl.arange(0, BLOCK_DHI))[None, :]
        tl.store(DK + s_off_hi, (dk_hi * sm_scale).to(DK.dtype.element_ty), mask=(s_cols < len_k)[:, None])
        tl.store(DV + s_off_hi, dv_hi.to(DV.dtype.element_ty), mask=(s_cols < len_k)[:, None])


@triton.jit
def _dq_inner(
    dq, dq_hi, q, q_hi, do, do_hi, lse2, delta, K, V, len_k, diag, rows, start, stop, stride_kt, offs_d, d_mask,
    offs_hi, qk_scale, keep_scale, drop, head, q_glob, k_glob,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DHI: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(start, stop, BLOCK_N):
        cols = start_n + offs_n
        k, v, k_hi, v_hi, s = _key_tile(q, q_hi, K, V, cols, len_k, stride_kt, offs_d, d_mask, offs_hi, qk_scale,
                                        MASKED, PREC, BLOCK_DHI)
        p = tl.math.exp2(s - lse2[:, None])
        if MASKED:
            p = tl.where(_visible(rows, cols, len_k, diag, CAUSAL), p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        if BLOCK_DHI > 0:
            dp += tl.dot(do_hi, tl.trans(v_hi), input_precision=PREC)
        if DROPOUT:
            keep = _keep(drop, head, (q_glob + rows)[:, None], (k_glob + cols)[None, :])
            dp = tl.where(keep, dp * keep_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
        if BLOCK_DHI > 0:
            dq_hi += tl.dot(ds.to(k_hi.dtype), k_hi, input_precision=PREC)
    return dq, dq_hi


@triton_autotune(
    configs=_DQ_CONFIGS, key=["BLOCK_D", "BLOCK_DHI", "CAUSAL", "GROUP", "DROPOUT"], prune_configs_by=_prune_for("dq")
)
@triton.jit(do_not_specialize=_DROPOUT_ARGS)
def _bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, CU_Q, CU_K, qk_scale, sm_scale, keep_scale,
    seed_lo, seed_hi, drop_offset, drop_threshold,
    stride_qt, stride_kt, stride_lh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DHI: tl.constexpr,
    CAUSAL: tl.constexpr, PREC: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    if CAUSAL:  # causal tiles further down the diagonal do more work: launch them first
        pid_m = tl.num_programs(0) - 1 - pid_m
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start, len_q, k_start, len_k = _seq_bounds(CU_Q, CU_K, seq)
    m0 = pid_m * BLOCK_M
    if m0 >= len_q:
        return
    q_base = q_start * stride_qt + head * HEAD_DIM
    LSE += head * stride_lh + q_start
    DELTA += head * stride_lh + q_start
    K += k_start * stride_kt + (head // GROUP) * HEAD_DIM
    V += k_start * stride_kt + (head // GROUP) * HEAD_DIM
    rows = m0 + tl.arange(0, BLOCK_M)
    row_ok = rows < len_q
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q_off = q_base + rows[:, None] * stride_qt + offs_d[None, :]
    q = tl.load(Q + q_off, mask=row_ok[:, None] & d_mask[None, :], other=0.0)
    do = tl.load(DO + q_off, mask=row_ok[:, None] & d_mask[None, :], other=0.0)
    lse2 = tl.load(LSE + rows, mask=row_ok, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
    diag = len_k - len_q
    full, hi = _key_range(m0, len_q, len_k, CAUSAL, BLOCK_M, BLOCK_N)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if BLOCK_DHI > 0:
        offs_hi = BLOCK_D + tl.arange(0, BLOCK_DHI)
        q_off_hi = q_base + rows[:, None] * stride_qt + offs_hi[None, :]
        q_hi = tl.load(Q + q_off_hi, mask=row_ok[:, None], other=0.0)
        do_hi = tl.load(DO + q_off_hi, mask=row_ok[:, None], other=0.0)
        dq_hi = tl.zeros([BLOCK_M, BLOCK_DHI], dtype=tl.float32)
    else:  # placeholders, never read
        offs_hi, q_hi, do_hi, dq_hi = offs_d, q, do, dq
    drop = (seed_lo, seed_hi, drop_offset, drop_threshold)
    q_glob, k_glob = q_start.to(tl.int32), k_start.to(tl.int32)
    dq, dq_hi = _dq_inner(
        dq, dq_hi, q, q_hi, do, do_hi, lse2, delta, K, V, len_k, diag, rows, 0, full, stride_kt, offs_d, d_mask,
        offs_hi, qk_scale, keep_scale, drop, head, q_glob, k_glob, False, CAUSAL, PREC, DROPOUT, BLOCK_N, BLOCK_DHI,
    )
    dq, dq_hi = _dq_inner(
        dq, dq_hi, q, q_hi, do, do_hi, lse2, delta, K, V, len_k, diag, rows, full, hi, stride_kt, offs_d, d_mask,
        offs_hi, qk_scale, keep_scale, drop, head, q_glob, k_glob, True, CAUSAL, PREC, DROPOUT, BLOCK_N, BLOCK_DHI,
    )
    # store offsets rebuilt (see _fwd_kernel)
    s_rows = m0 + tl.arange(0, BLOCK_M)
    s_d = tl.arange(0, BLOCK_D)
    s_mask = (s_rows < len_q)[:, None] & (s_d < HEAD_DIM)[None, :]
    tl.store(DQ + q_base + s_rows[:, None] * stride_qt + s_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty),
             mask=s_mask)
    if BLOCK_DHI > 0:
        s_hi = BLOCK_D + tl.arange(0, BLOCK_DHI)
        tl.store(DQ + q_base + s_rows[:, None] * stride_qt + s_hi[None, :],
                 (dq_hi * sm_scale).to(DQ.dtype.element_ty), mask=(s_rows < len_q)[:, None])


def head_blocks(d: int) -> Tuple[int, int]:
    """``(BLOCK_D, BLOCK_DHI)`` for head dim ``d``: ``(d, 0)`` for a power of two (>= 16); two power-of-two
    column blocks of at least 16 when ``d`` is their sum (192 -> (128, 64), 96 -> (64, 32)); otherwise the
    next power of two, masked (72 -> (128, 0))."""
    full = max(16, triton.next_power_of_2(d))
    low, rest = full // 2, d - full // 2
    if full != d and low >= 16 and rest >= 16 and rest & (rest - 1) == 0:
        return low, rest
    return full, 0


def _common(q: Tensor, k: Tensor):
    total_q, hq, d = q.shape
    hkv = k.shape[1]
    block_d, block_dhi = head_blocks(d)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    return total_q, hq, hkv, d, block_d, block_dhi, prec


def _dropout_args(dropout_p: float, dropout_seed: int, dropout_offset: int):
    """Kernel arguments ``(keep_scale, seed_lo, seed_hi, offset, threshold)`` and the DROPOUT constexpr."""
    seed_lo, seed_hi = seed_words(dropout_seed)
    return (1.0 / (1.0 - dropout_p), seed_lo, seed_hi, dropout_offset, dropout_threshold(dropout_p)), dropout_p > 0


def forward(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, causal: bool, softmax_scale: float, deterministic: bool = False,
    dropout_p: float = 0.0, dropout_seed: int = 0, dropout_offset: int = 0,
) -> Tuple[Tensor, Tensor]:
    """Packed attention forward on Triton.

    Args:
        q: ``[total_q, Hq, D]``; k, v: ``[total_k, Hkv, D]`` (contiguous, fp32/fp16/bf16).
        cu_seqlens_q, cu_seqlens_k: int32 ``[N+1]``; max_seqlen_q: sizes the grid (``>=`` longest query).
        causal: bottom-right aligned causal mask. softmax_scale: multiplies ``Q K^T``. deterministic: unused
            here (the op's schema carries it for the backward).
        dropout_p, dropout_seed, dropout_offset: attention dropout (the reference's mask, bit for bit).
    Returns:
        ``(out [total_q, Hq, D] in q's dtype, lse [Hq, total_q] float32)``.
    """
    total_q, hq, hkv, d, block_d, block_dhi, prec = _common(q, k)
    n = cu_seqlens_q.numel() - 1
    out = empty_output(q.shape, q.dtype, q.device)
    lse = empty_output((hq, total_q), torch.float32, q.device)
    if total_q == 0 or n == 0 or max_seqlen_q == 0:
        return out, lse
    grid = lambda meta: (triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), n, hq)  # noqa: E731
    drop_args, dropout = _dropout_args(dropout_p, dropout_seed, dropout_offset)
    _fwd_kernel[grid](
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, softmax_scale * LOG2E, *drop_args,
        q.stride(0), k.stride(0), lse.stride(0),
        GROUP=hq // hkv, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_DHI=block_dhi, CAUSAL=causal, PREC=prec,
        DROPOUT=dropout, SHORT_Q=max_seqlen_q <= SHORT_Q,
    )
    return out, lse


def backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
    causal: bool, softmax_scale: float, deterministic: bool, dropout_p: float = 0.0, dropout_seed: int = 0,
    dropout_offset: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Packed attention backward on Triton.

    Args:
        grad_out: ``[total_q, Hq, D]`` contiguous; q, k, v, out, lse as for / from :func:`forward` (``lse``
            may also come from flash-attn: same layout and convention).
        deterministic: dQ by a separate kernel (bitwise reproducible) instead of fp32 atomics.
        dropout_p, dropout_seed, dropout_offset: as given to :func:`forward` (the mask is regenerated).
    Returns:
        ``(dq [total_q, Hq, D], dk [total_k, Hkv, D], dv [total_k, Hkv, D])`` in the input dtype.
    """
    total_q, hq, hkv, d, block_d, block_dhi, prec = _common(q, k)
    n = cu_seqlens_q.numel() - 1
    group = hq // hkv
    lse = lse.contiguous()
    dk = empty_output(k.shape, k.dtype, k.device)
    dv = empty_output(v.shape, v.dtype, v.device)
    if total_q == 0 or n == 0:
        dq = empty_output(q.shape, q.dtype, q.device)
        dk.zero_()
        dv.zero_()
        return dq, dk, dv
    if max_seqlen_k == 0:
        return torch.zeros_like(q), dk, dv
    delta = torch.empty((hq, total_q), dtype=torch.float32, device=q.device)
    _bwd_preprocess_kernel[(triton.cdiv(total_q, 64), hq)](
        out, grad_out, delta, total_q, q.stride(0), delta.stride(0),
        HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_M=64,  # elementwise: one padded block
    )
    atomic = not deterministic
    if atomic:
        dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    else:
        dq_acc = empty_output(q.shape, q.dtype, q.device)
    qk_scale = softmax_scale * LOG2E
    grid_kv = lambda meta: (triton.cdiv(max_seqlen_k, meta["BLOCK_N"]), n, hkv)  # noqa: E731
    drop_args, dropout = _dropout_args(dropout_p, dropout_seed, dropout_offset)
    _bwd_dkdv_kernel[grid_kv](
        q, k, v, grad_out, dq_acc, dk, dv, lse, delta, cu_seqlens_q, cu_seqlens_k, qk_scale, softmax_scale,
        *drop_args,
        q.stride(0), k.stride(0), dq_acc.stride(0), lse.stride(0),
        GROUP=group, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_DHI=block_dhi, CAUSAL=causal, ATOMIC_DQ=atomic, PREC=prec,
        DROPOUT=dropout,
    )
    if atomic:
        dq = dq_acc if q.dtype == torch.float32 else dq_acc.to(q.dtype)
    else:
        grid_q = lambda meta: (triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), n, hq)  # noqa: E731
        _bwd_dq_kernel[grid_q](
            q, k, v, grad_out, dq_acc, lse, delta, cu_seqlens_q, cu_seqlens_k, qk_scale, softmax_scale,
            *drop_args,
            q.stride(0), k.stride(0), lse.stride(0),
            GROUP=group, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_DHI=block_dhi, CAUSAL=causal, PREC=prec,
            DROPOUT=dropout,
        )
        dq = dq_acc
    return dq, dk, dv

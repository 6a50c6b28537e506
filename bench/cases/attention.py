"""Benchmark cases for ``packed_attention`` over ALARM-shaped length mixes.

Shapes (full size on GPU, bf16):
* ``llm``: packed training examples of 100-2300 tokens filling a fixed budget of 16k tokens; causal,
  Qwen3-4B attention (32 query heads, 8 kv heads, head dim 128).
* ``fusion``: short audio streams (2-30 s at 25 Hz: 50-750 tokens), non-causal self-attention of the
  CA fusion (16 heads x 64), same token budget.
* ``perceiver``: 20 latents per example cross-attending an audio stream of 50-750 tokens (4 heads x 192).
``quick`` shrinks the budget (and on CPU the head counts) so the runner is exercised in about a second.

Variants: ``reference`` = padded SDPA with a boolean padding (+causal) mask, what the published
implementation runs; ``per_sequence`` = our reference backend (CPU only: PyTorch's fused CPU attention
once per run of equal-length sequences, no padding); ``flex_attention`` (document mask, compiled; GPU only);
``torch_varlen`` (``torch.nn.attention.varlen`` where present, GPU); ``flash_attn`` (where installed);
``triton`` (GPU). Useful flops: ``sum_i Lq_i * Lk_i * 4 * D * Hq``,
halved for causal, x2.5 for the backward, x3.5 for forward+backward. Notes record the time to build each
variant's mask / metadata (not included in the timings).
"""
from __future__ import annotations

import inspect
import time
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F

import alarm_kernels as ak
from bench.harness import BenchCase

DIRECTIONS = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


def _lengths(gen: torch.Generator, budget: int, lo: int, hi: int) -> List[int]:
    """Random lengths in [lo, hi] filling ``budget`` tokens (the last one truncated, kept if >= lo)."""
    out: List[int] = []
    while sum(out) + lo <= budget:
        n = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        out.append(min(n, budget - sum(out)))
    return out


def _timed(device: torch.device, fn: Callable[[], object]):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return value, (time.perf_counter() - start) * 1e3


def _directions(run: Callable, leaves: Sequence[torch.Tensor], dout: torch.Tensor) -> Dict[str, Callable]:
    """fwd / bwd / fwd+bwd callables for ``run(*leaves) -> out`` (bwd reuses one recorded forward)."""
    grads = [t.detach().requires_grad_() for t in leaves]
    recorded = {}

    def fwd():
        with torch.no_grad():
            return run(*leaves)

    def bwd():
        if "out" not in recorded:
            recorded["out"] = run(*grads)
        return torch.autograd.grad(recorded["out"], grads, dout, retain_graph=True)

    def fwd_bwd():
        return torch.autograd.grad(run(*grads), grads, dout)

    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd_bwd}


def _padded_sdpa(q, k, v, dout, cu_q, cu_k, causal, device):
    """The published path: [N, H, L, D] padded tensors, SDPA with a bool mask [N, 1, Lq, Lk]."""
    def pad(x, cu):
        padded, valid = ak.pad_packed(x, cu)
        return padded.transpose(1, 2).contiguous(), valid

    (qp, q_valid), (kp, k_valid), (vp, _), (dp, _) = pad(q, cu_q), pad(k, cu_k), pad(v, cu_k), pad(dout, cu_q)

    def build():
        mask = k_valid[:, None, None, :].expand(-1, 1, qp.shape[2], -1)
        if causal:  # bottom-right aligned per sequence, on the padded grid
            lq, lk = q_valid.sum(1), k_valid.sum(1)
            rows = torch.arange(qp.shape[2], device=device)[None, :, None]
            cols = torch.arange(kp.shape[2], device=device)[None, None, :]
            mask = mask & (cols <= rows + (lk - lq)[:, None, None])[:, None]
        return mask.contiguous()

    mask, build_ms = _timed(device, build)

    def run(a, b, c):
        return F.scaled_dot_product_attention(a, b, c, attn_mask=mask, enable_gqa=True)

    return _directions(run, (qp, kp, vp), dp), build_ms


def _flex(q, k, v, dout, cu_q, cu_k, causal, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def doc_ids(cu):
        return torch.repeat_interleave(torch.arange(cu.numel() - 1, device=device), (cu[1:] - cu[:-1]).long())

    doc_q, doc_k = doc_ids(cu_q), doc_ids(cu_k)

    def mask_mod(b, h, q_idx, kv_idx):
        same = doc_q[q_idx] == doc_k[kv_idx]
        return same & (q_idx >= kv_idx) if causal else same

    block_mask, build_ms = _timed(
        device, lambda: create_block_mask(mask_mod, None, None, q.shape[0], k.shape[0], device=device)
    )
    compiled = torch.compile(flex_attention)

    def run(a, b, c):
        out = compiled(a.transpose(0, 1)[None], b.transpose(0, 1)[None], c.transpose(0, 1)[None],
                       block_mask=block_mask, enable_gqa=True)
        return out[0].transpose(0, 1)

    return _directions(run, (q, k, v), dout), build_ms


def _torch_varlen(q, k, v, dout, cu_q, cu_k, max_q, max_k, causal):
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kwargs = {}
    if "is_causal" in params:
        kwargs["is_causal"] = causal
    elif causal:
        kwargs["window_size"] = (-1, 0)
    group = q.shape[1] // k.shape[1]
    if "enable_gqa" in params:
        kwargs["enable_gqa"] = True

    def run(a, b, c):
        if "enable_gqa" not in params and group > 1:
            b, c = b.repeat_interleave(group, 1), c.repeat_interleave(group, 1)
        return varlen_attn(a, b, c, cu_q, cu_k, max_q, max_k, **kwargs)

    return _directions(run, (q, k, v), dout)


def _flash_attn(q, k, v, dout, cu_q, cu_k, max_q, max_k, causal):
    from flash_attn import flash_attn_varlen_func

    def run(a, b, c):
        return flash_attn_varlen_func(a, b, c, cu_q, cu_k, max_q, max_k, causal=causal)

    return _directions(run, (q, k, v), dout)


def _ours(q, k, v, dout, cu_q, cu_k, max_q, max_k, causal, backend):
    def run(a, b, c):  # as the model calls it: offsets built from host lengths, checked once per batch
        return ak.packed_attention(a, b, c, cu_q, cu_k, max_q, max_k, causal=causal, backend=backend, validate=False)

    return _directions(run, (q, k, v), dout)


def _shape_cases(label, device, dtype, lens_q, lens_k, hq, hkv, d, causal, seed) -> List[BenchCase]:
    gen = torch.Generator().manual_seed(seed)
    tq, tk = sum(lens_q), sum(lens_k)
    q, dout = (torch.randn(tq, hq, d, generator=gen).to(device, dtype) for _ in range(2))
    k, v = (torch.randn(tk, hkv, d, generator=gen).to(device, dtype) for _ in range(2))
    cu_q, cu_ms = _timed(device, lambda: ak.seqlens_to_cu_seqlens(lens_q, device=device))
    cu_k = ak.seqlens_to_cu_seqlens(lens_k, device=device)
    max_q, max_k = max(lens_q), max(lens_k)

    variants: Dict[str, Dict[str, Callable]] = {}
    pairs = sum(a * b for a, b in zip(lens_q, lens_k, strict=True))
    notes = {"tokens_q": str(tq), "tokens_k": str(tk), "sequences": str(len(lens_q)),
             "cu_seqlens_build_ms": f"{cu_ms:.3f}", "padded_waste": f"{1 - pairs / (len(lens_q) * max_q * max_k):.2f}"}
    variants["reference"], mask_ms = _padded_sdpa(q, k, v, dout, cu_q, cu_k, causal, device)
    notes["padded_mask_build_ms"] = f"{mask_ms:.3f}"
    if device.type != "cuda":  # the CPU route; on GPU the reference is a plain per-sequence loop (the oracle)
        variants["per_sequence"] = _ours(q, k, v, dout, cu_q, cu_k, max_q, max_k, causal, "reference")
    else:
        variants["flex_attention"], flex_ms = _flex(q, k, v, dout, cu_q, cu_k, causal, device)
        notes["flex_block_mask_build_ms"] = f"{flex_ms:.3f}"
        try:
            variants["torch_varlen"] = _torch_varlen(q, k, v, dout, cu_q, cu_k, max_q, max_k, causal)
        except ImportError:
            notes["torch_varlen"] = "torch.nn.attention.varlen not present"
        try:
            variants["flash_attn"] = _flash_attn(q, k, v, dout, cu_q, cu_k, max_q, max_k, causal)
        except ImportError:
            notes["flash_attn"] = "not installed"
        variants["triton"] = _ours(q, k, v, dout, cu_q, cu_k, max_q, max_k, causal, "triton")

    useful = pairs * 4 * d * hq * (0.5 if causal else 1.0)
    dt = str(dtype).replace("torch.", "")
    name = f"{label} N={len(lens_q)} Tq={tq} Tk={tk} H={hq}/{hkv} D={d} {'causal' if causal else 'full'} {dt}"
    return [
        BenchCase(op="packed_attention", name=name, direction=direction, flops=useful * factor, notes=dict(notes),
                  variants={label_: fns[direction] for label_, fns in variants.items()})
        for direction, factor in DIRECTIONS.items()
    ]


def cases(device, quick: bool) -> List[BenchCase]:
    """Benchmark cases for ``packed_attention`` on ``device`` (small and fp32 on CPU)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        dtype, budget = torch.bfloat16, (4096 if quick else 16384)
        llm_heads, fusion_heads, perceiver_heads = (32, 8, 128), (16, 16, 64), (4, 4, 192)
        llm_range, audio_range, latents = (100, 2300), (50, 750), 20
    else:
        dtype, budget = torch.float32, (256 if quick else 2048)
        llm_heads, fusion_heads, perceiver_heads = (4, 2, 32), (4, 4, 32), (2, 2, 48)
        llm_range, audio_range, latents = (16, 96), (8, 48), 4
    llm = _lengths(gen, budget, *llm_range)
    audio = _lengths(gen, budget, *audio_range)
    return (
        _shape_cases("llm", device, dtype, llm, llm, *llm_heads, causal=True, seed=1)
        + _shape_cases("fusion", device, dtype, audio, audio, *fusion_heads, causal=False, seed=2)
        + _shape_cases("perceiver", device, dtype, [latents] * len(audio), audio, *perceiver_heads, causal=False,
                       seed=3)
    )

"""Triton softmax-weighted layer sum.

The k layers travel as a tuple of k pointers (one kernel argument each; never stacked). The kernels are
bandwidth kernels over the flattened elements: each program owns one contiguous block of BLOCK
elements, reads it from every layer once and writes it once. The softmax of the k logits is recomputed
in every program (k scalars; cheaper than a separate launch). Backward: one pass reads grad_y and the k
layers, writes per-program partial dot products ``<grad_y, layers[j]>`` (and ``w_j * grad_y`` into the
layer gradients when they are needed); a one-program kernel reduces the partials in a fixed order
(deterministic) and applies the softmax Jacobian. Autotuning keys on k only (never on the packed
length, which changes every batch).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._utils import DefaultConfig, empty_output, triton_autotune

_CONFIGS = [
    triton.Config({"BLOCK": 4096}, num_warps=8),
    triton.Config({"BLOCK": 2048}, num_warps=4),
    triton.Config({"BLOCK": 8192}, num_warps=8),
    triton.Config({"BLOCK": 1024}, num_warps=4),
]
# fixed config (ALARM_KERNELS_AUTOTUNE=0): 4096 elements per program, 8 warps, on every device
_DEFAULTS = (DefaultConfig(0),)


@triton.jit
def _softmax_weights(logits_ptr, K: tl.constexpr, KP: tl.constexpr):
    """(indices ``[KP]``, softmax weights ``[KP]`` in fp32, 0 past K)."""
    kk = tl.arange(0, KP)
    z = tl.load(logits_ptr + kk, mask=kk < K, other=float("-inf")).to(tl.float32)
    e = tl.where(kk < K, tl.exp(z - tl.max(z, 0)), 0.0)
    return kk, e / tl.sum(e, 0)


@triton_autotune(configs=_CONFIGS, key=["KP"], defaults=_DEFAULTS)
@triton.jit
def _wls_fwd_kernel(layers, logits_ptr, out_ptr, n, KP: tl.constexpr, BLOCK: tl.constexpr):
    K: tl.constexpr = len(layers)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    kk, w = _softmax_weights(logits_ptr, K, KP)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for j in tl.static_range(K):
        w_j = tl.sum(tl.where(kk == j, w, 0.0), 0)
        acc += w_j * tl.load(layers[j] + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton_autotune(configs=_CONFIGS, key=["KP", "NEED_LAYER_GRADS"], defaults=_DEFAULTS)
@triton.jit
def _wls_bwd_kernel(
    layers, grad_layers, logits_ptr, grad_y_ptr, partial_ptr, n,
    KP: tl.constexpr, NEED_LAYER_GRADS: tl.constexpr, BLOCK: tl.constexpr,
):
    K: tl.constexpr = len(layers)
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gy = tl.load(grad_y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    kk, w = _softmax_weights(logits_ptr, K, KP)
    dots = tl.zeros([KP], dtype=tl.float32)
    for j in tl.static_range(K):
        x = tl.load(layers[j] + offs, mask=mask, other=0.0).to(tl.float32)
        dots = tl.where(kk == j, tl.sum(gy * x, 0), dots)
        if NEED_LAYER_GRADS:
            w_j = tl.sum(tl.where(kk == j, w, 0.0), 0)
            tl.store(grad_layers[j] + offs, (w_j * gy).to(grad_layers[j].dtype.element_ty), mask=mask)
    tl.store(partial_ptr + pid * KP + kk, dots)


@triton.jit
def _wls_grad_logits_kernel(
    partial_ptr, logits_ptr, grad_logits_ptr, num_partials,
    K: tl.constexpr, KP: tl.constexpr, BLOCK_P: tl.constexpr,
):
    kk, w = _softmax_weights(logits_ptr, K, KP)
    rows = tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_P, KP], dtype=tl.float32)
    for start in range(0, num_partials, BLOCK_P):
        r = start + rows
        acc += tl.load(partial_ptr + r[:, None] * KP + kk[None, :], mask=r[:, None] < num_partials, other=0.0)
    g = tl.sum(acc, 0)
    grad = w * (g - tl.sum(w * g, 0))
    tl.store(grad_logits_ptr + kk, grad.to(grad_logits_ptr.dtype.element_ty), mask=kk < K)


def forward(layers: Sequence[Tensor], logits: Tensor) -> Tensor:
    """k contiguous same-shape layers (fp32/fp16/bf16) + logits ``[k]`` -> weighted sum in the layers' dtype."""
    out = empty_output(layers[0].shape, layers[0].dtype, layers[0].device)
    n = out.numel()
    if n == 0:
        return out
    kp = triton.next_power_of_2(len(layers))
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK"]),)  # noqa: E731
    _wls_fwd_kernel[grid](tuple(layers), logits, out, n, KP=kp)
    return out


def backward(
    grad_y: Tensor, layers: Sequence[Tensor], logits: Tensor, need_layer_grads: bool
) -> Tuple[Tensor, List[Tensor]]:
    """-> (grad_logits ``[k]`` in logits' dtype, k layer grads or [] when not ``need_layer_grads``)."""
    k = len(layers)
    device = grad_y.device
    grad_layers = [empty_output(x.shape, x.dtype, device) for x in layers] if need_layer_grads else []
    grad_logits = empty_output((k,), logits.dtype, device)
    n = grad_y.numel()
    if n == 0:
        grad_logits.zero_()
        for g in grad_layers:
            g.zero_()
        return grad_logits, grad_layers
    kp = triton.next_power_of_2(k)
    # sized for the smallest block of the configs; programs of a larger block fill a prefix
    max_programs = triton.cdiv(n, min(c.kwargs["BLOCK"] for c in _CONFIGS))
    partials = torch.empty(max_programs, kp, dtype=torch.float32, device=device)
    used = {}

    def grid(meta):
        used["programs"] = triton.cdiv(n, meta["BLOCK"])
        return (used["programs"],)

    _wls_bwd_kernel[grid](
        tuple(layers), tuple(grad_layers) if need_layer_grads else tuple(layers), logits, grad_y, partials, n,
        KP=kp, NEED_LAYER_GRADS=need_layer_grads,
    )
    _wls_grad_logits_kernel[(1,)](partials, logits, grad_logits, used["programs"], K=k, KP=kp, BLOCK_P=64)
    return grad_logits, grad_layers

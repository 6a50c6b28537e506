"""Plain-PyTorch softmax-weighted layer sum: the numerics oracle (run it in float64) and the CPU default.

Never stacks the k layers: the sum is accumulated one layer at a time in fp32 (fp64 when the inputs are
fp64). The backward formulas are explicit (backends run below autograd inside ``torch.library`` ops); the eager
autograd path keeps the softmax weights for the backward (:func:`forward_saving`). Small layers (all k products
within :data:`FOREACH_ELEMENTS`) are multiplied by one ``torch._foreach_mul`` call instead of k calls: the same
products, fewer dispatches; larger ones one at a time, so at most one product is alive besides the sum.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# most elements (k x layer size) multiplied by one _foreach_mul call (its k products are alive at once)
FOREACH_ELEMENTS = 2**20


def _as(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def _products(layers: Sequence[Tensor], factors: Sequence[Tensor], dtype: torch.dtype):
    """``layers[j].to(dtype) * factors[j]`` for each j: a list when the layers are small, else a generator (one
    product alive at a time)."""
    if len(layers) * layers[0].numel() <= FOREACH_ELEMENTS:
        return torch._foreach_mul([_as(x, dtype) for x in layers], list(factors))
    return (_as(x, dtype) * f for x, f in zip(layers, factors, strict=True))


def accumulate_dtype(layers: Sequence[Tensor], logits: Tensor) -> torch.dtype:
    """fp64 when the layers or the logits are fp64, else fp32."""
    return torch.float64 if torch.float64 in (layers[0].dtype, logits.dtype) else torch.float32


def layer_weights(logits: Tensor, dtype: torch.dtype) -> Tensor:
    """softmax(logits) ``[k]`` computed in ``dtype``."""
    return torch.softmax(_as(logits, dtype), 0)


def forward_saving(layers: Sequence[Tensor], logits: Tensor) -> Tuple[Tensor, Tensor]:
    """:func:`forward`'s output and the softmax weights (what :func:`backward` takes as ``saved``)."""
    acc_dtype = accumulate_dtype(layers, logits)
    w = layer_weights(logits, acc_dtype)
    terms = iter(_products(layers, w.unbind(0), acc_dtype))
    acc = next(terms)
    for term in terms:
        acc.add_(term)
    return _as(acc, layers[0].dtype), w


def forward(layers: Sequence[Tensor], logits: Tensor) -> Tensor:
    """k same-shape layers ``[...]`` + logits ``[k]`` -> ``sum_j softmax(logits)_j * layers[j]`` in the
    layers' dtype (accumulated in fp32, fp64 for fp64 inputs)."""
    return forward_saving(layers, logits)[0]


def backward(
    grad_y: Tensor, layers: Sequence[Tensor], logits: Tensor, need_layer_grads: bool, *, saved: Optional[Tensor] = None
) -> Tuple[Tensor, List[Tensor]]:
    """Gradients of the weighted layer sum.

    With ``w = softmax(logits)`` (``saved``, or recomputed when None) and ``g_j = <grad_y, layers[j]>`` (summed over
    every element): ``grad_logits_j = w_j * (g_j - sum_i w_i g_i)`` (logits' dtype) and
    ``grad_layers[j] = w_j * grad_y`` (layers' dtype), the latter only when ``need_layer_grads`` (else an empty list).
    """
    acc_dtype = accumulate_dtype(layers, logits)
    w = layer_weights(logits, acc_dtype) if saved is None else saved
    gy = _as(grad_y, acc_dtype)
    g = torch.stack([p.sum() for p in _products(layers, [gy] * len(layers), acc_dtype)])
    grad_logits = _as(w * (g - (w * g).sum()), logits.dtype)
    grad_layers = [_as(gy * wj, x.dtype) for wj, x in zip(w.unbind(0), layers, strict=True)] if need_layer_grads else []
    return grad_logits, grad_layers

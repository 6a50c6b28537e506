"""Plain-PyTorch softmax-weighted layer sum: the numerics oracle (run it in float64) and the CPU default.

Never stacks the k layers: the sum is accumulated one layer at a time in fp32 (fp64 when the inputs are
fp64). The backward formulas are explicit (backends run below autograd inside ``torch.library`` ops).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor


def accumulate_dtype(layers: Sequence[Tensor], logits: Tensor) -> torch.dtype:
    """fp64 when the layers or the logits are fp64, else fp32."""
    return torch.float64 if torch.float64 in (layers[0].dtype, logits.dtype) else torch.float32


def layer_weights(logits: Tensor, dtype: torch.dtype) -> Tensor:
    """softmax(logits) ``[k]`` computed in ``dtype``."""
    return torch.softmax(logits.to(dtype), 0)


def forward(layers: Sequence[Tensor], logits: Tensor) -> Tensor:
    """k same-shape layers ``[...]`` + logits ``[k]`` -> ``sum_j softmax(logits)_j * layers[j]`` in the
    layers' dtype (accumulated in fp32, fp64 for fp64 inputs)."""
    acc_dtype = accumulate_dtype(layers, logits)
    w = layer_weights(logits, acc_dtype)
    acc = layers[0].to(acc_dtype) * w[0]
    for j in range(1, len(layers)):
        acc.add_(layers[j].to(acc_dtype) * w[j])
    return acc.to(layers[0].dtype)


def backward(
    grad_y: Tensor, layers: Sequence[Tensor], logits: Tensor, need_layer_grads: bool
) -> Tuple[Tensor, List[Tensor]]:
    """Gradients of the weighted layer sum.

    With ``w = softmax(logits)`` and ``g_j = <grad_y, layers[j]>`` (summed over every element):
    ``grad_logits_j = w_j * (g_j - sum_i w_i g_i)`` (logits' dtype) and ``grad_layers[j] = w_j * grad_y``
    (layers' dtype), the latter only when ``need_layer_grads`` (else an empty list).
    """
    acc_dtype = accumulate_dtype(layers, logits)
    w = layer_weights(logits, acc_dtype)
    gy = grad_y.to(acc_dtype)
    g = torch.stack([(gy * x.to(acc_dtype)).sum() for x in layers])
    grad_logits = (w * (g - (w * g).sum())).to(logits.dtype)
    grad_layers = [(gy * w[j]).to(x.dtype) for j, x in enumerate(layers)] if need_layer_grads else []
    return grad_logits, grad_layers

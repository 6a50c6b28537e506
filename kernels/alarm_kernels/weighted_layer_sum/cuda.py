"""CUDA-extension softmax-weighted layer sum (csrc/weighted_layer_sum.cu via csrc/bind_weighted_layer_sum.h).

Outputs are allocated here (so ``_utils.nan_prefill`` reaches them) and filled by the extension.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from torch import Tensor

from .._ext import extension
from .._utils import empty_output


def forward(layers: Sequence[Tensor], logits: Tensor) -> Tensor:
    """k contiguous same-shape CUDA layers (fp32/fp16/bf16, k <= 64) + logits ``[k]`` -> weighted sum."""
    out = empty_output(layers[0].shape, layers[0].dtype, layers[0].device)
    if out.numel():
        extension().weighted_layer_sum_fwd(list(layers), logits, out)
    return out


def backward(
    grad_y: Tensor, layers: Sequence[Tensor], logits: Tensor, need_layer_grads: bool
) -> Tuple[Tensor, List[Tensor]]:
    """-> (grad_logits ``[k]`` in logits' dtype, k layer grads or [] when not ``need_layer_grads``)."""
    device = grad_y.device
    grad_layers = [empty_output(x.shape, x.dtype, device) for x in layers] if need_layer_grads else []
    grad_logits = empty_output((len(layers),), logits.dtype, device)
    if grad_y.numel() == 0:
        grad_logits.zero_()
        for g in grad_layers:
            g.zero_()
        return grad_logits, grad_layers
    extension().weighted_layer_sum_bwd(grad_y, list(layers), logits, grad_layers, grad_logits)
    return grad_logits, grad_layers

"""Plain-PyTorch softmax-weighted layer sum: the numerics oracle (run it in float64) and the CPU default.

Products and sums are in fp32 (fp64 when the layers or the logits are fp64). Two routes by size, the same math:

* **stacked** (``k x layer size <=`` :data:`STACKED_ELEMENTS`): the k layers are stacked into one ``[k, ...]`` tensor
  and each direction is one multiply and one reduction over it (what a padded model runs), a handful of dispatches
  whatever k. The eager autograd path keeps the stack for the backward (at most :data:`STACKED_ELEMENTS` elements).
* **streaming** (larger): never stacked; the sum is accumulated one layer at a time, so at most one product is
  alive besides the sum (2k - 1 ops forward, k reductions backward: negligible next to the arithmetic at such sizes,
  where it is also the faster route, see :data:`STACKED_ELEMENTS`).

The routes can differ in the last bit of fp32 sums of 5 or more layers (ATen's reduction over the layer dim groups
the terms differently from a running sum); both are checked against the float64 oracle
(tests/kernels/test_weighted_layer_sum.py runs its checks on both routes). The backward formulas are explicit
(backends run below autograd inside ``torch.library`` ops); the eager autograd path keeps the softmax weights (and
the stack) for the backward (:func:`forward_saving`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._utils import as_dtype

# most elements (k x layer size) stacked into one [k, ...] tensor (256 KiB in fp32); larger layers stream. Where the
# stacked route stops paying: on the 2-core dev CPU (OMP_NUM_THREADS=1) both routes cost the same near 2**16 elements
# (forward + backward); past that streaming is faster
STACKED_ELEMENTS = 2**16

# what forward_saving keeps for the backward: ((softmax weights [k], the stacked layers [k, ...] or None), no
# non-tensor values)
Saved = Tuple[Tuple[Tensor, Optional[Tensor]], None]



def accumulate_dtype(layers: Sequence[Tensor], logits: Tensor) -> torch.dtype:
    """fp64 when the layers or the logits are fp64, else fp32."""
    return torch.float64 if torch.float64 in (layers[0].dtype, logits.dtype) else torch.float32


def stacked_route(layers: Sequence[Tensor]) -> bool:
    """Whether these layers take the stacked route (``k x layer size <=`` :data:`STACKED_ELEMENTS`)."""
    return len(layers) * layers[0].numel() <= STACKED_ELEMENTS


def forward_saving(layers: Sequence[Tensor], logits: Tensor) -> Tuple[Tensor, Saved]:
    """:func:`forward`'s output and what :func:`backward` takes as ``saved``."""
    acc_dtype = accumulate_dtype(layers, logits)
    w = torch.softmax(as_dtype(logits, acc_dtype), 0)
    if stacked_route(layers):
        stack = torch.stack(list(layers))
        # w [k, 1, ...] in acc_dtype times the stack: the products are in acc_dtype (type promotion)
        y = w.view((-1,) + (1,) * layers[0].dim()).mul(stack).sum(0)
        return as_dtype(y, layers[0].dtype), ((w, stack), None)
    acc = as_dtype(layers[0], acc_dtype) * w[0]
    for j in range(1, len(layers)):
        acc.add_(as_dtype(layers[j], acc_dtype) * w[j])
    return as_dtype(acc, layers[0].dtype), ((w, None), None)


def forward(layers: Sequence[Tensor], logits: Tensor) -> Tensor:
    """k same-shape layers ``[...]`` + logits ``[k]`` -> ``sum_j softmax(logits)_j * layers[j]`` in the
    layers' dtype (accumulated in fp32, fp64 for fp64 inputs)."""
    return forward_saving(layers, logits)[0]


def backward(
    grad_y: Tensor, layers: Sequence[Tensor], logits: Tensor, need_layer_grads: bool, *, saved: Optional[Saved] = None
) -> Tuple[Tensor, List[Tensor]]:
    """Gradients of the weighted layer sum.

    With ``w = softmax(logits)`` and ``g_j = <grad_y, layers[j]>`` (summed over every element):
    ``grad_logits_j = w_j * (g_j - sum_i w_i g_i)`` (the softmax Jacobian, logits' dtype) and
    ``grad_layers[j] = w_j * grad_y`` (layers' dtype), the latter only when ``need_layer_grads`` (else an empty list).
    ``saved``: from :func:`forward_saving` (recomputed when None: the weights, and the stack on the stacked route).
    """
    acc_dtype = accumulate_dtype(layers, logits)
    if saved is None:
        w = torch.softmax(as_dtype(logits, acc_dtype), 0)
        stack = torch.stack(list(layers)) if stacked_route(layers) else None
    else:
        w, stack = saved[0]
    gy = as_dtype(grad_y, acc_dtype)
    if stack is not None:  # [k, ...] * [...]: the products in acc_dtype (type promotion), summed over all but dim 0
        products = stack.mul(gy)
        g = products.sum(tuple(range(1, stack.dim()))) if stack.dim() > 1 else products
    else:
        g = torch.stack([(as_dtype(x, acc_dtype) * gy).sum() for x in layers])
    # w * (g - <w, g>): the softmax's own backward kernel, one op
    grad_logits = as_dtype(torch._softmax_backward_data(g, w, 0, acc_dtype), logits.dtype)
    grad_layers = ([as_dtype(gy * wj, x.dtype) for wj, x in zip(w.unbind(0), layers, strict=True)]
                   if need_layer_grads else [])
    return grad_logits, grad_layers

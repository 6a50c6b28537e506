"""``weighted_layer_sum``: ``sum_j softmax(logits)_j * layers[j]`` over k same-shape hidden states.

The k layers are passed to the kernels as k separate tensors (the Triton and CUDA kernels never stack them into a
``[k, ...]`` copy; the reference stacks layers of at most ``reference.STACKED_ELEMENTS`` elements in all).
``reference.py`` / ``triton.py`` / ``cuda.py`` implement ``forward`` and ``backward``; this file
validates inputs, resolves the backend and calls the ``torch.library`` custom op
``alarm_kernels::weighted_layer_sum`` (registered by :func:`alarm_kernels._opdef.define_op` with fake shapes and
autograd, so ``torch.compile`` traces it).
The backward computes the k layer gradients only when some layer requires grad (in ALARM the layers are
frozen encoder states and only the logits train).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from .._opdef import OpSpec, define_op
from .._utils import check_tensor
from ..backend import select_backend

__all__ = ["weighted_layer_sum"]

IMPLEMENTED = ("cuda", "triton", "reference")  # CUDA first where built: faster on an H200 (bench/results/)
# most layers the CUDA launcher takes in one call (pointers travel by value in the kernel arguments)
CUDA_MAX_LAYERS = 64
# why a fast backend cannot run the inputs (select_backend's input_reasons), by case
_NONE: dict = {}
_FP64 = {"triton": "float64 is reference-only", "cuda": "float64 is reference-only"}
_MANY = {"cuda": f"more than {CUDA_MAX_LAYERS} layers"}


def _save(ctx, inputs, output):
    layers, logits = inputs
    ctx.layer_grads = [bool(x.requires_grad) for x in layers]
    return (logits, *layers)


def _gradients(ctx, saved, backward, grad_y):
    logits, *layers = saved
    need_layer_grads = any(ctx.layer_grads)
    grad_logits, grad_layers = backward(grad_y.contiguous(), layers, logits, need_layer_grads)
    if need_layer_grads:
        layer_grads = [g if needed else None for g, needed in zip(grad_layers, ctx.layer_grads, strict=True)]
    else:
        layer_grads = [None] * len(layers)
    return layer_grads, grad_logits


_weighted_layer_sum_op = define_op(OpSpec(
    name="weighted_layer_sum",
    package=__name__,
    schema="(Tensor[] layers, Tensor logits) -> Tensor",
    backward_schema="(Tensor grad_y, Tensor[] layers, Tensor logits, bool need_layer_grads) -> (Tensor, Tensor[])",
    fake=lambda layers, logits: torch.empty_like(layers[0]),
    backward_fake=lambda grad_y, layers, logits, need_layer_grads: (
        torch.empty_like(logits), [torch.empty_like(x) for x in layers] if need_layer_grads else []),
    save=_save,
    gradients=_gradients,
))


def weighted_layer_sum(layers: Union[Sequence[Tensor], Tensor], logits: Tensor, backend: str = "auto") -> Tensor:
    """Softmax-weighted sum of k hidden states: ``sum_j softmax(logits)_j * layers[j]``.

    Args:
        layers: k tensors of one shape, dtype (fp32, fp16, bf16; fp64 on the reference backend) and
            device, or one ``[k, ...]`` tensor (its k slices are used in place, never copied).
        logits: ``[k]`` float tensor on the layers' device (fp32 usually).
        backend: "auto", "reference", "triton" or "cuda".
    Returns:
        ``[...]`` tensor in the layers' dtype (accumulated in fp32). Differentiable in ``logits`` and in
        every layer that requires grad.
    """
    if isinstance(layers, Tensor):
        if layers.dim() < 1 or layers.shape[0] < 1:
            raise ValueError(f"layers as one tensor must be [k, ...] with k >= 1, got shape {tuple(layers.shape)}")
        layers = list(layers.unbind(0))
    elif not isinstance(layers, (list, tuple)):
        raise ValueError(f"layers must be a sequence of tensors or one [k, ...] tensor, got {type(layers).__name__}")
    if len(layers) == 0:
        raise ValueError("layers must hold at least one tensor")
    first = layers[0]
    check_tensor(first, "layers[0]")
    dtype, device, shape = first.dtype, first.device, first.shape
    for x in layers:  # one pass when all is well; the slow pass names the culprit
        if not (isinstance(x, Tensor) and x.dtype == dtype and x.device == device and x.shape == shape):
            for j, x in enumerate(layers[1:], start=1):
                check_tensor(x, f"layers[{j}]", dtypes=(dtype,), device=device)
                if x.shape != shape:
                    raise ValueError(f"layers[{j}] has shape {tuple(x.shape)} but layers[0] has {tuple(shape)}")
    check_tensor(logits, "logits", ndim=1, device=device)
    if logits.shape[0] != len(layers):
        raise ValueError(f"logits has {logits.shape[0]} entries but there are {len(layers)} layers")
    reasons = _FP64 if torch.float64 in (dtype, logits.dtype) else _MANY if len(layers) > CUDA_MAX_LAYERS else _NONE
    name = select_backend("weighted_layer_sum", backend, device, IMPLEMENTED, reasons)
    return _weighted_layer_sum_op([x.contiguous() for x in layers], logits.contiguous(), name)

"""``varlen_conv1d``: channels-last conv1d over each packed sequence independently, with zero padding at
every sequence edge and an optional fused exact-GELU epilogue (ALARM's conv downsampler block).

Layering as in ``varlen_pool``: ``reference.py`` / ``triton.py`` / ``cuda.py`` implement ``forward`` and
``backward``; this file validates inputs, resolves the backend and calls the ``torch.library`` custom op
``alarm_kernels::varlen_conv1d`` (registered by :func:`alarm_kernels._opdef.define_op` with fake shapes and
autograd, so ``torch.compile`` traces it).

With ``activation="gelu"`` the forward also returns the pre-activation ``[total_y, C_out]`` (one extra
store in the fused epilogue) and the backward uses it (``grad_pre = grad_y * gelu'(pre)``): saved, not
recomputed, so the backward costs two GEMMs rather than three.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._opdef import OpSpec, define_op
from .._utils import check_tensor
from ..backend import select_backend
from ..varlen import check_host_int, validate_cu_seqlens

__all__ = ["varlen_conv1d"]

IMPLEMENTED = ("cuda", "triton", "reference")  # CUDA first where built: faster on an H200 (bench/results/)
ACTIVATIONS = (None, "gelu")


def _fake(x, cu_seqlens, weight, bias, stride, padding, activation, total_out, max_len):
    total_y = total_out if total_out >= 0 else torch.library.get_ctx().new_dynamic_size()
    c_out = weight.shape[0]
    pre = x.new_empty(total_y if activation == "gelu" else 0, c_out)
    return x.new_empty(total_y, c_out), torch.empty_like(cu_seqlens), pre


def _backward_fake(grad_y, x, cu_seqlens, cu_y, weight, pre, stride, padding, activation, need_dx, need_dw, max_len):
    c_out, c_in, k = weight.shape
    return (
        x.new_empty(x.shape[0] if need_dx else 0, c_in),
        x.new_empty(c_out if need_dw else 0, c_in, k),
        x.new_empty(c_out),
    )


def _save(ctx, inputs, output):
    x, cu_seqlens, weight, bias, stride, padding, activation, _total_out, max_len = inputs
    _, cu_y, pre = output
    ctx.stride, ctx.padding, ctx.activation, ctx.max_len = stride, padding, activation, max_len
    ctx.need_dx, ctx.need_dw = x.requires_grad, weight.requires_grad
    ctx.need_db = bias is not None and bias.requires_grad
    return x, cu_seqlens, cu_y, weight, pre


def _gradients(ctx, saved, backward, grad_y, _grad_cu_y, _grad_pre):
    x, cu_seqlens, cu_y, weight, pre = saved
    need_dx, need_dw, need_db = ctx.need_dx, ctx.need_dw, ctx.need_db
    grad_x, grad_w, grad_b = backward(
        grad_y.contiguous(), x, cu_seqlens, cu_y, weight, pre, ctx.stride, ctx.padding, ctx.activation,
        need_dx, need_dw, ctx.max_len,
    )
    return (
        grad_x if need_dx else None, None, grad_w if need_dw else None, grad_b if need_db else None,
        None, None, None, None, None,
    )


_varlen_conv1d_op = define_op(OpSpec(
    name="varlen_conv1d",
    package=__name__,
    schema="(Tensor x, Tensor cu_seqlens, Tensor weight, Tensor? bias, int stride, int padding, str activation, "
           "int total_out, int max_len) -> (Tensor, Tensor, Tensor)",
    backward_schema="(Tensor grad_y, Tensor x, Tensor cu_seqlens, Tensor cu_y, Tensor weight, Tensor pre, "
                    "int stride, int padding, str activation, bool need_dx, bool need_dw, int max_len) "
                    "-> (Tensor, Tensor, Tensor)",
    fake=_fake,
    backward_fake=_backward_fake,
    save=_save,
    gradients=_gradients,
    non_differentiable=(1, 2),  # cu_y, and pre (the saved GELU input)
))


def varlen_conv1d(
    x: Tensor,
    cu_seqlens: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: int = 1,
    padding: int = 1,
    activation: Optional[str] = None,
    backend: str = "auto",
    *,
    total_out: Optional[int] = None,
    max_seqlen: Optional[int] = None,
    validate: bool = True,
) -> Tuple[Tensor, Tensor]:
    """Conv1d over each packed sequence independently (zero padding at every sequence edge).

    Args:
        x: ``[total, C_in]`` channels-last packed input (fp32, fp16, bf16; fp64 on the reference backend).
        cu_seqlens: int32 ``[N+1]`` offsets into ``x``.
        weight: ``[C_out, C_in, k]`` (``nn.Conv1d``'s layout), x's dtype and device.
        bias: ``[C_out]`` or None.
        stride: >= 1. padding: >= 0 zero frames on each side of every sequence.
        activation: None or "gelu" (exact erf GELU, fused as an epilogue).
        backend: "auto", "reference", "triton" or "cuda".
        total_out: the output token count ``sum_i`` of the formula below, when the caller knows it on the host.
        max_seqlen: the longest input sequence, when known on the host (the reference backend pads to it).
        validate: check the values of ``cu_seqlens`` (one device read). With ``validate=False`` and both host
            sizes given, the fast backends read nothing back from the device (no host sync); wrong sizes then
            give wrong results, not an error.
    Returns:
        ``(y, cu_y)``: y ``[total_y, C_out]`` in x's dtype, where sequence i yields
        ``max(0, (L_i + 2*padding - k) // stride + 1)`` tokens (0 when L_i = 0); cu_y int32 ``[N+1]``.
    """
    check_tensor(x, "x", ndim=2)
    offsets = validate_cu_seqlens(cu_seqlens, x.shape[0], device=x.device, check_values=validate)
    check_tensor(weight, "weight", ndim=3, dtypes=(x.dtype,), device=x.device)
    if weight.shape[1] != x.shape[1] or weight.shape[0] < 1 or weight.shape[2] < 1:
        raise ValueError(
            f"weight must be [C_out, C_in={x.shape[1]}, k] with C_out, k >= 1, got shape {tuple(weight.shape)}"
        )
    if bias is not None:
        check_tensor(bias, "bias", ndim=1, dtypes=(x.dtype,), device=x.device)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must be [C_out={weight.shape[0]}], got shape {tuple(bias.shape)}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    k = weight.shape[2]
    for value, label in ((total_out, "total_out"), (max_seqlen, "max_seqlen")):
        if value is not None:
            check_host_int(value, label)
    if offsets is not None:  # validated on the host: the sizes come for free
        lengths = [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        expected = sum(max(0, (n + 2 * padding - k) // stride + 1) for n in lengths if n > 0)
        if total_out is not None and total_out != expected:
            raise ValueError(f"total_out={total_out} but cu_seqlens, k, stride and padding give {expected} tokens")
        if max_seqlen is not None and max_seqlen < max(lengths, default=0):
            raise ValueError(f"max_seqlen={max_seqlen} is below the longest sequence ({max(lengths)})")
        total_out, max_seqlen = expected, max(lengths, default=0) if max_seqlen is None else max_seqlen
    fp64 = "float64 is reference-only" if x.dtype == torch.float64 else None
    name = select_backend("varlen_conv1d", backend, x.device, IMPLEMENTED, {"triton": fp64, "cuda": fp64})
    y, cu_y, _ = _varlen_conv1d_op(
        x.contiguous(), cu_seqlens.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(),
        stride, padding, activation or "none", -1 if total_out is None else total_out,
        -1 if max_seqlen is None else max_seqlen, name,
    )
    return y, cu_y

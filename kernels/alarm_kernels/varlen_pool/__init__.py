"""``varlen_pool``: per-sequence token compression by mean or max over windows of ``ratio`` frames.

Layering (the pattern every op follows):
``reference.py`` / ``triton.py`` / ``cuda.py`` implement ``forward`` and ``backward`` per backend;
this file validates inputs, resolves the backend and calls the ``torch.library`` custom op
``alarm_kernels::varlen_pool``, registered from a small spec by :func:`alarm_kernels._opdef.define_op` (fake
shapes and autograd included, so ``torch.compile`` traces it).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._opdef import OpSpec, define_op
from .._utils import check_tensor
from ..backend import select_backend
from ..varlen import check_host_int, validate_cu_seqlens

__all__ = ["varlen_pool"]

IMPLEMENTED = ("cuda", "triton", "reference")  # CUDA first where built: faster on an H200 (bench/results/)
MODES = ("mean", "max")
_FP64 = {"triton": "float64 is reference-only", "cuda": "float64 is reference-only"}  # select_backend's input_reasons


def _fake(x, cu_seqlens, ratio, mode, total_out):
    total_y = total_out if total_out >= 0 else torch.library.get_ctx().new_dynamic_size()
    return x.new_empty(total_y, x.shape[1]), torch.empty_like(cu_seqlens)


def _save(ctx, inputs, output):
    x, cu_seqlens, ratio, mode, _total_out = inputs
    y, cu_y = output
    ctx.ratio, ctx.mode = ratio, mode
    return x, y, cu_seqlens, cu_y


def _gradients(ctx, saved, backward, grad_y, _grad_cu_y):
    x, y, cu_seqlens, cu_y = saved
    return backward(grad_y.contiguous(), x, y, cu_seqlens, cu_y, ctx.ratio, ctx.mode), None, None, None, None


_varlen_pool_op = define_op(OpSpec(
    name="varlen_pool",
    package=__name__,
    schema="(Tensor x, Tensor cu_seqlens, int ratio, str mode, int total_out) -> (Tensor, Tensor)",
    backward_schema="(Tensor grad_y, Tensor x, Tensor y, Tensor cu_seqlens, Tensor cu_y, int ratio, str mode) "
                    "-> Tensor",
    fake=_fake,
    backward_fake=lambda grad_y, x, y, cu_seqlens, cu_y, ratio, mode: torch.empty_like(x),
    save=_save,
    gradients=_gradients,
    non_differentiable=(1,),  # cu_y
))


def varlen_pool(
    x: Tensor,
    cu_seqlens: Tensor,
    ratio: int,
    mode: str = "mean",
    backend: str = "auto",
    *,
    total_out: Optional[int] = None,
    validate: bool = True,
):
    """Compress each packed sequence by pooling windows of ``ratio`` frames.

    Args:
        x: ``[total, D]`` float tensor (fp32, fp16, bf16; fp64 on the reference backend).
        cu_seqlens: int32 ``[N+1]`` offsets into ``x``.
        ratio: window size (>= 1). A sequence of length L yields ``ceil(L / ratio)`` tokens.
        mode: "mean" (a partial last window averages the frames present) or "max".
        backend: "auto", "reference", "triton" or "cuda".
        total_out: ``sum_i ceil(L_i / ratio)`` when the caller knows it on the host (e.g. from the collator's
            lengths); with it and ``validate=False`` the op reads nothing back from the device (no host sync).
        validate: check the values of ``cu_seqlens`` (one device read). Pass False when they were validated
            once for the batch; a wrong ``cu_seqlens`` or ``total_out`` then gives wrong results, not an error.
    Returns:
        ``(y, cu_y)``: y ``[sum_i ceil(L_i / ratio), D]`` in x's dtype, cu_y int32 ``[N+1]``.

    Limits: ``ratio`` may be any int up to ``2**31 - 1`` (a window longer than its sequence pools the whole
    sequence); the fast kernels walk each window's frames one after the other, so their time grows with the
    frames per window, not with ``ratio`` itself, and nothing is compiled per ratio or per batch size.
    Offsets are int32: at most ``2**31 - 1`` frames per call.
    """
    check_tensor(x, "x", ndim=2)
    offsets = validate_cu_seqlens(cu_seqlens, x.shape[0], device=x.device, check_values=validate)
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio must be a positive int, got {ratio!r}")
    if total_out is not None:
        check_host_int(total_out, "total_out")
    if offsets is not None:  # validated on the host: the output size comes for free
        expected = sum(-(-(b - a) // ratio) for a, b in zip(offsets[:-1], offsets[1:], strict=True))
        if total_out is not None and total_out != expected:
            raise ValueError(f"total_out={total_out} but cu_seqlens and ratio give {expected} output rows")
        total_out = expected
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    name = select_backend("varlen_pool", backend, x.device, IMPLEMENTED, _FP64 if x.dtype == torch.float64 else None)
    total = -1 if total_out is None else total_out
    return _varlen_pool_op(x.contiguous(), cu_seqlens.contiguous(), ratio, mode, total, name)

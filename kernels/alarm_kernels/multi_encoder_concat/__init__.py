"""``multi_encoder_concat``: feature concatenation of E packed encoder streams, optionally fused with the
following linear projection (never materializing the concatenation on the fast backends).

Stream e is ``[total_e, D_e]`` with its own int32 offsets ``cu_seqlens[e]`` (same N for all). Output
sequence i has ``L_i = max_e len_{e,i}`` rows; a shorter stream contributes zeros at the end.
``reference.py`` / ``triton.py`` / ``cuda.py`` implement ``forward`` and ``backward``; this file
validates inputs, resolves the backend and calls the ``torch.library`` custom op
``alarm_kernels::multi_encoder_concat`` (registered by :func:`alarm_kernels._opdef.define_op` with fake shapes
and autograd, so ``torch.compile`` traces it).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .._opdef import OpSpec, define_op
from .._utils import check_tensor, is_compiling
from ..backend import select_backend
from ..varlen import check_host_int, validate_cu_seqlens

__all__ = ["multi_encoder_concat"]

IMPLEMENTED = ("cuda", "triton", "reference")  # CUDA first where built: faster on an H200 (bench/results/)
# most streams one fast-kernel launch takes (their pointers travel in the kernel arguments)
MAX_STREAMS = 8


def _fake(streams, cu_seqlens, weight, bias, total_y):
    rows = total_y if total_y >= 0 else torch.library.get_ctx().new_dynamic_size()
    width = weight.shape[0] if weight is not None else sum(x.shape[1] for x in streams)
    return streams[0].new_empty(rows, width), torch.empty_like(cu_seqlens[0])


def _backward_fake(grad_y, streams, cu_seqlens, cu_y, weight, stream_grads, need_weight_grad, need_bias_grad):
    grads = [torch.empty_like(x) for x, needed in zip(streams, stream_grads, strict=True) if needed]
    if need_weight_grad:
        grads.append(torch.empty_like(weight))
    if need_bias_grad:
        grads.append(grad_y.new_empty(grad_y.shape[1]))
    return grads


def _save(ctx, inputs, output):
    streams, cu_seqlens, weight, bias, _total_y = inputs
    _, cu_y = output
    ctx.num_streams = len(streams)
    ctx.stream_grads = [bool(x.requires_grad) for x in streams]
    ctx.need_weight_grad = weight is not None and bool(weight.requires_grad)
    ctx.need_bias_grad = bias is not None and bool(bias.requires_grad)
    ctx.has_weight = weight is not None
    return (*streams, *cu_seqlens, cu_y, *([weight] if weight is not None else []))


def _gradients(ctx, saved, backward, grad_y, _grad_cu_y):
    e = ctx.num_streams
    streams, cu_seqlens, cu_y = list(saved[:e]), list(saved[e : 2 * e]), saved[2 * e]
    weight = saved[2 * e + 1] if ctx.has_weight else None
    grads = list(backward(grad_y.contiguous(), streams, cu_seqlens, cu_y, weight, ctx.stream_grads,
                          ctx.need_weight_grad, ctx.need_bias_grad))
    stream_grads = [grads.pop(0) if needed else None for needed in ctx.stream_grads]
    grad_weight = grads.pop(0) if ctx.need_weight_grad else None
    grad_bias = grads.pop(0) if ctx.need_bias_grad else None
    return stream_grads, [None] * e, grad_weight, grad_bias, None


_multi_encoder_concat_op = define_op(OpSpec(
    name="multi_encoder_concat",
    package=__name__,
    schema="(Tensor[] streams, Tensor[] cu_seqlens, Tensor? weight, Tensor? bias, int total_y) -> (Tensor, Tensor)",
    backward_schema="(Tensor grad_y, Tensor[] streams, Tensor[] cu_seqlens, Tensor cu_y, Tensor? weight, "
                    "bool[] stream_grads, bool need_weight_grad, bool need_bias_grad) -> Tensor[]",
    fake=_fake,
    backward_fake=_backward_fake,
    save=_save,
    gradients=_gradients,
    non_differentiable=(1,),  # cu_y
))


def multi_encoder_concat(
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    backend: str = "auto",
    *,
    total_out: Optional[int] = None,
    validate: bool = True,
):
    """Concatenate E packed encoder streams along features, optionally projecting them in the same pass.

    Args:
        streams: E tensors ``[total_e, D_e]`` of one dtype (fp32, fp16, bf16; fp64 on the reference
            backend) and device.
        cu_seqlens: E int32 offsets ``[N+1]`` (one per stream, same N), ``cu_seqlens[e][-1] == total_e``.
        weight: optional ``[D_out, sum D_e]`` (nn.Linear layout), streams' dtype.
        bias: optional ``[D_out]`` (needs ``weight``), streams' dtype.
        backend: "auto", "reference", "triton" or "cuda".
        total_out: ``sum_i max_e len_{e,i}`` when the caller knows it on the host.
        validate: check the values of every ``cu_seqlens[e]`` (one device read for all streams). With
            ``validate=False`` and ``total_out`` given the op reads nothing back from the device (no host sync);
            wrong offsets or sizes then give wrong results, not an error.
    Returns:
        ``(y, cu_y)``: cu_y int32 ``[N+1]`` with ``L_i = max_e len_{e,i}``; y ``[sum L_i, sum D_e]`` (the
        concatenation, zeros where a stream is shorter) or ``F.linear(concat, weight, bias)``
        ``[sum L_i, D_out]``, in the streams' dtype.
    """
    if not isinstance(streams, (list, tuple)) or len(streams) == 0:
        raise ValueError("streams must be a non-empty list of [total_e, D_e] tensors")
    if not isinstance(cu_seqlens, (list, tuple)):
        raise ValueError("cu_seqlens must be a list of int32 [N+1] tensors, one per stream")
    if len(cu_seqlens) != len(streams):
        raise ValueError(f"cu_seqlens has {len(cu_seqlens)} entries but streams has {len(streams)}")
    streams, cu_seqlens = list(streams), list(cu_seqlens)
    check_tensor(streams[0], "streams[0]", ndim=2)
    first = streams[0]
    for e, x in enumerate(streams):
        check_tensor(x, f"streams[{e}]", ndim=2, dtypes=(first.dtype,), device=first.device)
        validate_cu_seqlens(cu_seqlens[e], name=f"cu_seqlens[{e}]", device=first.device, check_values=False)
        if cu_seqlens[e].shape[0] != cu_seqlens[0].shape[0]:
            raise ValueError(
                f"cu_seqlens[{e}] describes {cu_seqlens[e].shape[0] - 1} sequences but cu_seqlens[0] "
                f"describes {cu_seqlens[0].shape[0] - 1} (every stream needs the same N)"
            )
    if total_out is not None:
        check_host_int(total_out, "total_out")
    total_y = -1 if total_out is None else total_out  # -1: unknown (e.g. while tracing), the backend reads it
    if validate and not is_compiling():
        host = torch.stack(cu_seqlens).cpu()  # one device sync validates every stream's offsets
        for e, x in enumerate(streams):
            validate_cu_seqlens(host[e], x.shape[0], name=f"cu_seqlens[{e}]")
        longest = int(host.diff(dim=1).amax(0).sum()) if host.shape[1] > 1 else 0
        if total_out is not None and total_out != longest:
            raise ValueError(f"total_out={total_out} but the offsets give {longest} output rows")
        total_y = longest
    total_width = sum(x.shape[1] for x in streams)
    if weight is not None:
        check_tensor(weight, "weight", ndim=2, dtypes=(first.dtype,), device=first.device)
        if weight.shape[1] != total_width:
            raise ValueError(f"weight is {tuple(weight.shape)} but the streams' widths sum to {total_width}")
    if bias is not None:
        if weight is None:
            raise ValueError("bias needs a weight")
        check_tensor(bias, "bias", ndim=1, dtypes=(first.dtype,), device=first.device)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias has {bias.shape[0]} entries but weight has {weight.shape[0]} output rows")
    fast_reason = None
    if first.dtype == torch.float64:
        fast_reason = "float64 is reference-only"
    elif len(streams) > MAX_STREAMS:
        fast_reason = f"more than {MAX_STREAMS} streams"
    name = select_backend(
        "multi_encoder_concat", backend, first.device, IMPLEMENTED,
        {"triton": fast_reason, "cuda": fast_reason},
    )
    return _multi_encoder_concat_op(
        [x.contiguous() for x in streams],
        [cu.contiguous() for cu in cu_seqlens],
        weight.contiguous() if weight is not None else None,
        bias.contiguous() if bias is not None else None,
        total_y,
        name,
    )

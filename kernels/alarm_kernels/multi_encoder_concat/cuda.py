"""CUDA-extension multi-encoder concatenation and fused concatenation + projection
(csrc/multi_encoder_concat.cu via csrc/bind_multi_encoder_concat.h).

``cu_y`` and the outputs are allocated here (so ``_utils.nan_prefill`` reaches them) and filled by the
extension (cu_y by one small scan kernel). The projection's GEMMs run through cuBLAS on gathered operands:
the forward materializes the concatenation once (custom kernel) and multiplies it; the backward gathers each
stream's rows of grad_y for its gradient and its column block of grad_weight; grad_bias is a column sum
(row splits, fixed order).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._ext import extension
from .._utils import empty_output


def forward(
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    total_y: int = -1,
) -> Tuple[Tensor, Tensor]:
    """Contiguous CUDA streams ``[total_e, D_e]`` (fp32/fp16/bf16, E <= 8) -> (y, cu_y) as in the
    reference; ``total_y`` (-1: read from the device) as in ``reference.forward``."""
    ext = extension()
    cu_y = torch.empty_like(cu_seqlens[0])
    ext.multi_encoder_concat_output_offsets(list(cu_seqlens), cu_y)
    total_y = int(cu_y[-1]) if total_y < 0 else total_y
    width = weight.shape[0] if weight is not None else sum(x.shape[1] for x in streams)
    y = empty_output((total_y, width), streams[0].dtype, streams[0].device)
    if y.numel():
        ext.multi_encoder_concat_fwd(list(streams), list(cu_seqlens), cu_y, weight, bias, y)
    return y, cu_y


def backward(
    grad_y: Tensor,
    streams: Sequence[Tensor],
    cu_seqlens: Sequence[Tensor],
    cu_y: Tensor,
    weight: Optional[Tensor],
    stream_grads: Sequence[bool],
    need_weight_grad: bool,
    need_bias_grad: bool,
) -> List[Tensor]:
    """Same list layout as ``reference.backward``: requested stream grads, then grad_weight, grad_bias."""
    ext = extension()
    widths = [x.shape[1] for x in streams]
    d_total = sum(widths)
    offsets = [sum(widths[:e]) for e in range(len(widths))]
    grads: List[Tensor] = []
    for x, cu, offset, needed in zip(streams, cu_seqlens, offsets, stream_grads, strict=True):
        if needed:
            g = empty_output(x.shape, x.dtype, x.device)
            if g.numel():
                ext.multi_encoder_concat_bwd_stream(grad_y, cu, cu_y, d_total, offset, weight, g)
            grads.append(g)
    if need_weight_grad:
        gw = empty_output(weight.shape, weight.dtype, weight.device)
        for x, cu, offset in zip(streams, cu_seqlens, offsets, strict=True):
            ext.multi_encoder_concat_bwd_weight(grad_y, x, cu, cu_y, offset, gw)
        grads.append(gw)
    if need_bias_grad:
        gb = empty_output((grad_y.shape[1],), grad_y.dtype, grad_y.device)
        ext.multi_encoder_concat_bwd_bias(grad_y, gb)
        grads.append(gb)
    return grads

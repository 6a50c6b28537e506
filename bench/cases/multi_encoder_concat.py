"""multi_encoder_concat benchmark cases.

Concat (memory bound): the packed kernels (Triton / CUDA) vs what the reference model does (pad every
stream to ``[B, T, D_e]``, pad to a common T, ``torch.cat`` on features, unpad to the packed rows) and
torch.compile of it; bytes_moved = streams read + output written.
Concat + projection (compute bound): the fused gather-GEMM vs the reference (pad + cat + unpad +
``F.linear``), torch.compile of it, and "gemm_only": one ``F.linear`` on an already materialized
concatenation (the bar the fused kernel should meet); flops = 2 * rows * sum(D_e) * D_out.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

import alarm_kernels as ak
from alarm_kernels.backend import backend_unavailable_reason
from bench.harness import BenchCase, fwd_bwd


def _padded_concat(streams: Sequence[torch.Tensor], cus: Sequence[torch.Tensor], lengths_y: torch.Tensor,
                   weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The reference model: pad each stream, pad to a common T, concatenate features, unpad, project."""
    t_max = int(lengths_y.max())
    padded = [ak.pad_packed(x, cu, max_len=t_max)[0] for x, cu in zip(streams, cus, strict=True)]
    cat = torch.cat(padded, -1)
    mask = torch.arange(t_max, device=cat.device)[None, :] < lengths_y[:, None]
    y = cat[mask]
    return F.linear(y, weight, bias) if weight is not None else y


def cases(device: torch.device, quick: bool) -> List[BenchCase]:
    gen = torch.Generator().manual_seed(0)
    if quick:
        batch, lo, hi, widths, d_out, dtype = 2, 10, 30, (32, 16), 24, torch.float32
    else:
        batch, lo, hi, widths, d_out = 8, 200, 1500, (1024, 1024, 1024, 1024), 2560
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = torch.randint(lo, hi + 1, (batch,), generator=gen)
    # encoders disagree by a few frames per sample (different rounding of their frame rates)
    lengths = [(base - torch.randint(0, 4, (batch,), generator=gen)).clamp_min(0) for _ in widths]
    cus = [ak.seqlens_to_cu_seqlens(n, device=device) for n in lengths]
    lengths_y = torch.stack(lengths).amax(0).to(device)
    total_y = int(lengths_y.sum())
    # as the model calls it in a training step: host sizes, offsets validated once per batch (no host sync)
    host = dict(total_out=total_y, validate=False)
    streams = [torch.randn(int(n.sum()), d, generator=gen).to(device, dtype)
               for n, d in zip(lengths, widths, strict=True)]
    weight = (torch.randn(d_out, sum(widths), generator=gen) / sum(widths) ** 0.5).to(device, dtype)
    bias = torch.randn(d_out, generator=gen).to(device, dtype)
    fast = [b for b in ("triton", "cuda") if backend_unavailable_reason(b, device) is None]
    es = streams[0].element_size()
    in_bytes = sum(x.numel() for x in streams) * es
    name = f"E={len(widths)} D={'+'.join(map(str, widths))} B={batch} L~{lo}-{hi} {str(dtype).replace('torch.', '')}"
    compiled = torch.compile(_padded_concat, dynamic=False)
    out = []

    # --- plain concatenation ---
    concat_bytes = in_bytes + total_y * sum(widths) * es
    fwd: Dict[str, Callable[[], object]] = {
        "reference": lambda: _padded_concat(streams, cus, lengths_y),
        "torch.compile": lambda: compiled(streams, cus, lengths_y),
    }
    fwd.update({b: (lambda b=b: ak.multi_encoder_concat(streams, cus, backend=b, **host)[0]) for b in fast})
    out.append(BenchCase("multi_encoder_concat", "concat fwd " + name, fwd, bytes_moved=concat_bytes))
    sg = [x.detach().clone().requires_grad_() for x in streams]
    both: Dict[str, Callable[[], object]] = {
        "reference": fwd_bwd(lambda: _padded_concat(sg, cus, lengths_y), sg),
        "torch.compile": fwd_bwd(lambda: compiled(sg, cus, lengths_y), sg),
    }
    both.update({b: fwd_bwd(lambda b=b: ak.multi_encoder_concat(sg, cus, backend=b, **host)[0], sg) for b in fast})
    out.append(BenchCase("multi_encoder_concat", "concat fwd+bwd " + name, both, bytes_moved=2 * concat_bytes,
                         direction="fwd+bwd"))

    # --- concatenation fused with the projection ---
    flops = 2.0 * total_y * sum(widths) * d_out
    cat = _padded_concat(streams, cus, lengths_y)
    name_p = f"{name} -> {d_out}"
    fwd = {
        "reference": lambda: _padded_concat(streams, cus, lengths_y, weight, bias),
        "torch.compile": lambda: compiled(streams, cus, lengths_y, weight, bias),
        "gemm_only": lambda: F.linear(cat, weight, bias),
    }
    fwd.update({b: (lambda b=b: ak.multi_encoder_concat(streams, cus, weight, bias, backend=b, **host)[0])
                for b in fast})
    out.append(BenchCase("multi_encoder_concat", "concat+linear fwd " + name_p, fwd, flops=flops))
    wg, bg = weight.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    cat_g = cat.detach().clone().requires_grad_()
    params = sg + [wg, bg]
    both = {
        "reference": fwd_bwd(lambda: _padded_concat(sg, cus, lengths_y, wg, bg), params),
        "torch.compile": fwd_bwd(lambda: compiled(sg, cus, lengths_y, wg, bg), params),
        "gemm_only": fwd_bwd(lambda: F.linear(cat_g, wg, bg), [cat_g, wg, bg]),
    }
    both.update(
        {b: fwd_bwd(lambda b=b: ak.multi_encoder_concat(sg, cus, wg, bg, backend=b, **host)[0], params) for b in fast}
    )
    out.append(BenchCase("multi_encoder_concat", "concat+linear fwd+bwd " + name_p, both, flops=3 * flops,
                         direction="fwd+bwd"))
    return out

"""varlen_pool benchmark cases: packed pooling (Triton / CUDA) vs what the padded reference model does
(pad to ``[B, T, D]``, ``F.avg_pool1d`` / ``F.max_pool1d`` in NCT layout with transposes) and
torch.compile of it. Memory bound: bytes_moved is the minimum a perfect kernel reads + writes."""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

import alarm_kernels as ak
from alarm_kernels.backend import backend_unavailable_reason
from bench.harness import BenchCase, compile_static, fwd_bwd


def _padded_pool(x_pad: torch.Tensor, ratio: int, mode: str) -> torch.Tensor:
    """The padded reference: [B, T, D] -> transpose -> pool1d (ceil_mode) -> transpose back."""
    nct = x_pad.transpose(1, 2)
    if mode == "mean":
        y = F.avg_pool1d(nct, ratio, ratio, ceil_mode=True)
    else:
        y = F.max_pool1d(nct, ratio, ratio, ceil_mode=True)
    return y.transpose(1, 2).contiguous()


def cases(device: torch.device, quick: bool) -> List[BenchCase]:
    gen = torch.Generator().manual_seed(0)
    if quick:
        batch, lo, hi, dims, ratios, dtype = 2, 20, 60, (64,), (2,), torch.float32
    else:
        batch, lo, hi, dims, ratios = 8, 200, 1500, (1024, 2048), (2, 4)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths = torch.randint(lo, hi + 1, (batch,), generator=gen).tolist()
    cu = ak.seqlens_to_cu_seqlens(lengths, device=device)
    fast = [b for b in ("triton", "cuda") if backend_unavailable_reason(b, device) is None]
    out = []
    for d in dims:
        x = torch.randn(sum(lengths), d, generator=gen).to(device, dtype)
        x_pad, _ = ak.pad_packed(x, cu)
        for ratio in ratios:
            for mode in ("mean", "max"):
                total_y = sum((n + ratio - 1) // ratio for n in lengths)
                es = x.element_size()
                fwd_bytes = (x.numel() + total_y * d) * es
                # backward reads grad_y (and x, y for max) and writes grad_x
                bwd_bytes = (total_y * d + x.numel()) * es + ((x.numel() + total_y * d) * es if mode == "max" else 0)
                name = f"B={batch} L~{lo}-{hi} D={d} r={ratio} {mode} {str(dtype).replace('torch.', '')}"
                padded = lambda t, r=ratio, m=mode: _padded_pool(t, r, m)  # noqa: E731
                compiled = compile_static(padded)
                # as the model calls it in a training step: host sizes, offsets validated once per batch (no host sync)
                packed = {b: (lambda t, b=b, r=ratio, m=mode, n=total_y: ak.varlen_pool(
                    t, cu, r, m, backend=b, total_out=n, validate=False)[0]) for b in fast}
                fwd: Dict[str, Callable[[], object]] = {
                    "reference": partial(padded, x_pad),
                    "torch.compile": partial(compiled, x_pad),
                }
                fwd.update({b: partial(f, x) for b, f in packed.items()})
                out.append(BenchCase("varlen_pool", "fwd " + name, fwd, bytes_moved=fwd_bytes, direction="fwd"))
                x_pad_g = x_pad.detach().clone().requires_grad_()
                x_g = x.detach().clone().requires_grad_()
                both: Dict[str, Callable[[], object]] = {
                    "reference": fwd_bwd(partial(padded, x_pad_g), (x_pad_g,)),
                    "torch.compile": fwd_bwd(partial(compiled, x_pad_g), (x_pad_g,)),
                }
                both.update({b: fwd_bwd(partial(f, x_g), (x_g,)) for b, f in packed.items()})
                out.append(
                    BenchCase("varlen_pool", "fwd+bwd " + name, both, bytes_moved=fwd_bytes + bwd_bytes,
                              direction="fwd+bwd")
                )
    return out

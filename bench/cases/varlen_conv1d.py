"""varlen_conv1d benchmark cases at ALARM's conv-downsampler shapes (C 1024->2048 k=3 s=1 p=1 + GELU,
then 2048->1024 k=4 s=2 p=1): packed implicit-GEMM conv (Triton / CUDA) vs what the padded reference
model does (pad to ``[B, T, C]``, transpose to NCT, cuDNN ``F.conv1d``, GELU, transpose back) and
torch.compile of it. flops counts only the valid output tokens (2 * total_y * C_out * C_in * k per GEMM)."""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import alarm_kernels as ak
from alarm_kernels.backend import backend_unavailable_reason
from bench.harness import BenchCase, compile_static, fwd_bwd


def _padded_conv(x_pad, weight, bias, stride: int, padding: int, activation: Optional[str]):
    """The padded reference: [B, T, C_in] -> NCT -> conv1d (+ GELU) -> [B, T_out, C_out]."""
    y = F.conv1d(x_pad.transpose(1, 2), weight, bias, stride=stride, padding=padding)
    if activation == "gelu":
        y = F.gelu(y)
    return y.transpose(1, 2).contiguous()


def cases(device: torch.device, quick: bool) -> List[BenchCase]:
    gen = torch.Generator().manual_seed(0)
    if quick:
        batch, lo, hi, dtype = 2, 20, 60, torch.float32
        layers = [(32, 64, 3, 1, 1, "gelu"), (64, 32, 4, 2, 1, None)]
    else:
        batch, lo, hi = 8, 200, 1500
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        layers = [(1024, 2048, 3, 1, 1, "gelu"), (2048, 1024, 4, 2, 1, None)]
    lengths = torch.randint(lo, hi + 1, (batch,), generator=gen).tolist()
    cu = ak.seqlens_to_cu_seqlens(lengths, device=device)
    fast = [b for b in ("triton", "cuda") if backend_unavailable_reason(b, device) is None]
    out = []
    for c_in, c_out, k, stride, padding, act in layers:
        x = torch.randn(sum(lengths), c_in, generator=gen).to(device, dtype)
        w = (torch.randn(c_out, c_in, k, generator=gen) / (c_in * k) ** 0.5).to(device, dtype)
        b = torch.randn(c_out, generator=gen).to(device, dtype)
        x_pad, _ = ak.pad_packed(x, cu)
        total_y = sum(max(0, (n + 2 * padding - k) // stride + 1) for n in lengths)
        flops = 2.0 * total_y * c_out * c_in * k
        name = (f"B={batch} L~{lo}-{hi} {c_in}->{c_out} k={k} s={stride}{' gelu' if act else ''} "
                f"{str(dtype).replace('torch.', '')}")
        padded = lambda xp, w, b, s=stride, p=padding, a=act: _padded_conv(xp, w, b, s, p, a)  # noqa: E731
        compiled = compile_static(padded)

        def packed(backend, s=stride, p=padding, a=act, n=total_y):
            # as the model calls it in a training step: host sizes, offsets validated once per batch (no sync)
            return lambda xx, ww, bb: ak.varlen_conv1d(xx, cu, ww, bb, s, p, a, backend=backend, total_out=n,
                                                       max_seqlen=max(lengths), validate=False)[0]

        fwd: Dict[str, Callable[[], object]] = {
            "reference": partial(padded, x_pad, w, b),
            "torch.compile": partial(compiled, x_pad, w, b),
        }
        fwd.update({be: partial(packed(be), x, w, b) for be in fast})
        out.append(BenchCase("varlen_conv1d", "fwd " + name, fwd, flops=flops, direction="fwd"))

        xg_pad, xg = x_pad.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
        wg, bg = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
        both: Dict[str, Callable[[], object]] = {
            "reference": fwd_bwd(partial(padded, xg_pad, wg, bg), (xg_pad, wg, bg)),
            "torch.compile": fwd_bwd(partial(compiled, xg_pad, wg, bg), (xg_pad, wg, bg)),
        }
        both.update({be: fwd_bwd(partial(packed(be), xg, wg, bg), (xg, wg, bg)) for be in fast})
        out.append(BenchCase("varlen_conv1d", "fwd+bwd " + name, both, flops=3 * flops, direction="fwd+bwd"))
    return out

"""Kernel report: every op's fast backends proven against the float64 oracle on this machine.

    python -m alarm_kernels.report

Without a GPU the Triton backend runs under its CPU interpreter (set here before any kernel is defined)
in fp32/fp16; with one, Triton and CUDA run in fp32/fp16/bf16. Prints one line per output and gradient
and exits non-zero if any backend is out of its error budget.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Tuple

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from .backend import backend_unavailable_reason  # noqa: E402
from .testing import ParityResult, check_backend  # noqa: E402
from .varlen import seqlens_to_cu_seqlens  # noqa: E402

# Lengths exercise the convention's edges: empty, one token, odd, longer than a block.
LENGTHS = [0, 1, 63, 113, 5]


def _cases(device: torch.device) -> List[Tuple[str, Callable, Dict, List[str], Tuple[str, ...]]]:
    """(label, op, inputs, differentiable input names, backends implemented) for each op."""
    import alarm_kernels as ak

    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    cu = seqlens_to_cu_seqlens(LENGTHS, device=device)
    total = sum(LENGTHS)
    cases = [
        ("varlen_pool mean r=2 D=72", ak.varlen_pool, dict(x=rand(total, 72), cu_seqlens=cu, ratio=2, mode="mean"),
         ["x"], ("triton", "cuda")),
        ("varlen_pool max r=3 D=40", ak.varlen_pool, dict(x=rand(total, 40), cu_seqlens=cu, ratio=3, mode="max"),
         ["x"], ("triton", "cuda")),
    ]
    if hasattr(ak, "varlen_conv1d"):
        cases += [
            ("varlen_conv1d k3 s1 gelu 40->72", ak.varlen_conv1d,
             dict(x=rand(total, 40), cu_seqlens=cu, weight=rand(72, 40, 3) * 0.2, bias=rand(72), stride=1, padding=1,
                  activation="gelu"), ["x", "weight", "bias"], ("triton", "cuda")),
            ("varlen_conv1d k4 s2 72->40", ak.varlen_conv1d,
             dict(x=rand(total, 72), cu_seqlens=cu, weight=rand(40, 72, 4) * 0.2, bias=rand(40), stride=2, padding=1),
             ["x", "weight", "bias"], ("triton", "cuda")),
        ]
    if hasattr(ak, "weighted_layer_sum"):
        cases.append(("weighted_layer_sum k=5 [182,72]", ak.weighted_layer_sum,
                      dict(layers=[rand(total, 72) for _ in range(5)], logits=rand(5)), ["layers", "logits"],
                      ("triton", "cuda")))
    if hasattr(ak, "multi_encoder_concat"):
        lens = [[3, 0, 7, 1, 5], [4, 2, 7, 0, 1], [1, 1, 1, 1, 1]]
        streams = [rand(sum(l_), d) for l_, d in zip(lens, (40, 72, 24), strict=True)]
        cus = [seqlens_to_cu_seqlens(l_, device=device) for l_ in lens]
        cases += [
            ("multi_encoder_concat 3 streams", ak.multi_encoder_concat, dict(streams=streams, cu_seqlens=cus),
             ["streams"], ("triton", "cuda")),
            ("multi_encoder_concat + linear 136->48", ak.multi_encoder_concat,
             dict(streams=streams, cu_seqlens=cus, weight=rand(48, 136) * 0.1, bias=rand(48)),
             ["streams", "weight", "bias"], ("triton", "cuda")),
        ]
    if hasattr(ak, "packed_attention"):
        lq = [0, 1, 17, 40, 3]
        cuq = seqlens_to_cu_seqlens(lq, device=device)
        common = dict(cu_seqlens_q=cuq, cu_seqlens_k=cuq, max_seqlen_q=max(lq), max_seqlen_k=max(lq))
        cases += [
            ("packed_attention causal GQA 4:1 D=40", ak.packed_attention,
             dict(q=rand(sum(lq), 4, 40), k=rand(sum(lq), 1, 40), v=rand(sum(lq), 1, 40), causal=True, **common),
             ["q", "k", "v"], ("triton",)),
        ]
    return cases


def run_report(out=sys.stdout) -> List[ParityResult]:
    """Check every available fast backend of every op; returns all results (also printed)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if device.type == "cuda" else [])
    results: List[ParityResult] = []
    print(f"kernel parity on {device.type} (oracle: reference backend in float64; budget: 2x/3x the same-dtype "
          "reference error fwd/bwd + floor)", file=out)
    for label, fn, inputs, grads, backends in _cases(device):
        for backend in backends:
            reason = backend_unavailable_reason(backend, device)
            if reason:
                print(f"  {label} [{backend}]: not run ({reason})", file=out)
                continue
            for dtype in dtypes:
                for result in check_backend(fn, inputs, grads, backend=backend, dtype=dtype, label=label):
                    results.append(result)
                    print(f"  {result}", file=out)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed", file=out)
    return results


def main() -> int:
    return 1 if any(not r.ok for r in run_report()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""weighted_layer_sum benchmark cases: the packed k-pointer kernels (Triton / CUDA) vs what the reference
model does (``torch.stack`` the k hidden states, then a softmax-weighted sum over the stacked dim) and
torch.compile of it. Memory bound: bytes_moved is the minimum a perfect kernel reads + writes (k layers
read + output written; backward with frozen layers: grad_y + k layers read)."""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, Sequence

import torch

import alarm_kernels as ak
from alarm_kernels.backend import backend_unavailable_reason
from bench.harness import BenchCase, fwd_bwd


def _stacked_sum(layers: Sequence[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """The reference model's layer mix: stack, softmax weights, weighted sum over the layer dim."""
    stacked = torch.stack(list(layers))
    w = torch.softmax(logits.float(), 0).to(stacked.dtype)
    return (w.view(-1, *([1] * (stacked.dim() - 1))) * stacked).sum(0)


def cases(device: torch.device, quick: bool) -> List[BenchCase]:
    gen = torch.Generator().manual_seed(0)
    if quick:
        rows, settings, dtype = 64, [(3, 64)], torch.float32
    else:
        rows = 8 * 1500  # B=8 sequences of ~1500 encoder frames, packed
        settings = [(5, 1280), (4, 1024), (5, 768)]  # (k, D): Whisper, w2v-BERT, ...
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    fast = [b for b in ("triton", "cuda") if backend_unavailable_reason(b, device) is None]
    compiled = torch.compile(_stacked_sum, dynamic=False)
    out = []
    for k, d in settings:
        layers = [torch.randn(rows, d, generator=gen).to(device, dtype) for _ in range(k)]
        logits = torch.randn(k, generator=gen).to(device)
        es = layers[0].element_size()
        fwd_bytes = (k + 1) * rows * d * es
        bwd_bytes = (k + 1) * rows * d * es  # grad_y + k layers read (layers frozen: no layer grads)
        name = f"k={k} rows={rows} D={d} {str(dtype).replace('torch.', '')}"
        packed = {b: (lambda ls, lg, b=b: ak.weighted_layer_sum(ls, lg, backend=b)) for b in fast}
        fwd: Dict[str, Callable[[], object]] = {
            "reference": partial(_stacked_sum, layers, logits),
            "torch.compile": partial(compiled, layers, logits),
        }
        fwd.update({b: partial(f, layers, logits) for b, f in packed.items()})
        out.append(BenchCase("weighted_layer_sum", "fwd " + name, fwd, bytes_moved=fwd_bytes, direction="fwd"))
        logits_g = logits.detach().clone().requires_grad_()
        both: Dict[str, Callable[[], object]] = {
            "reference": fwd_bwd(partial(_stacked_sum, layers, logits_g), (logits_g,)),
            "torch.compile": fwd_bwd(partial(compiled, layers, logits_g), (logits_g,)),
        }
        both.update({b: fwd_bwd(partial(f, layers, logits_g), (logits_g,)) for b, f in packed.items()})
        out.append(
            BenchCase("weighted_layer_sum", "fwd+bwd (logits grad) " + name, both,
                      bytes_moved=fwd_bytes + bwd_bytes, direction="fwd+bwd")
        )
    return out

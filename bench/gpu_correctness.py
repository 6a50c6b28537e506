"""Correctness of every op's fast backends at the ALARM model's shapes, forward and backward.

    python -m bench.gpu_correctness --out OUT.json [--backends triton,cuda] [--dtype bf16] [--quick]

Each op runs at the model's widths (encoder streams 1280 / 1024 / 768, LLM 2560; attention head dims 64, 128
and 192 with atomic and deterministic dQ) on packed mixes that include empty and one-token sequences, and is
proven against the float64 oracle with the parity rule of :mod:`alarm_kernels.testing`. The JSON file is
rewritten after every case (a run cut short keeps what it measured). Exit status 1 if any check failed.
``--quick`` uses small shapes and fp32 (a CPU dry run under the Triton interpreter).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from alarm.fileio import atomic_write_json  # noqa: E402
from alarm_kernels.backend import backend_unavailable_reason  # noqa: E402
from alarm_kernels.testing import check_backend  # noqa: E402
from alarm_kernels.varlen import seqlens_to_cu_seqlens  # noqa: E402

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
Case = Tuple[str, Callable, Dict, List[str], Tuple[str, ...]]


def model_cases(device: torch.device, quick: bool) -> List[Case]:
    """(label, op, inputs, differentiable inputs, fast backends) at the model's shapes (small when ``quick``)."""
    import alarm_kernels as ak

    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    lengths = [0, 1, 37, 5] if quick else [0, 1, 1500, 731, 64, 1499]  # clips of up to 30 s at 50 Hz
    widths = (24, 40) if quick else (1280, 1024, 768)
    llm = 48 if quick else 2560
    cu = seqlens_to_cu_seqlens(lengths, device=device)
    total = sum(lengths)
    cases: List[Case] = []
    for d in widths:
        for mode, ratio in (("mean", 2), ("max", 4)):
            cases.append((f"varlen_pool {mode} r={ratio} D={d}", ak.varlen_pool,
                          dict(x=rand(total, d), cu_seqlens=cu, ratio=ratio, mode=mode), ["x"], ("triton", "cuda")))
        cases.append((f"varlen_conv1d k3 s2 gelu {d}->{d}", ak.varlen_conv1d,
                      dict(x=rand(total, d), cu_seqlens=cu, weight=rand(d, d, 3, scale=d ** -0.5), bias=rand(d),
                           stride=2, padding=1, activation="gelu"), ["x", "weight", "bias"], ("triton", "cuda")))
        cases.append((f"weighted_layer_sum k=5 [{total},{d}]", ak.weighted_layer_sum,
                      dict(layers=[rand(total, d) for _ in range(5)], logits=rand(5)), ["layers", "logits"],
                      ("triton", "cuda")))
    stream_lengths = [lengths, [n // 2 for n in lengths], [n + 1 for n in lengths]][: len(widths)]
    streams = [rand(sum(ls), d) for ls, d in zip(stream_lengths, widths, strict=True)]
    cus = [seqlens_to_cu_seqlens(ls, device=device) for ls in stream_lengths]
    d_total = sum(widths)
    cases += [
        (f"multi_encoder_concat {'+'.join(map(str, widths))}", ak.multi_encoder_concat,
         dict(streams=streams, cu_seqlens=cus), ["streams"], ("triton", "cuda")),
        (f"multi_encoder_concat + linear {d_total}->{llm}", ak.multi_encoder_concat,
         dict(streams=streams, cu_seqlens=cus, weight=rand(llm, d_total, scale=d_total ** -0.5), bias=rand(llm)),
         ["streams", "weight", "bias"], ("triton", "cuda")),
    ]
    # attention: the LLM (32 x 128, GQA 4, causal), the CA fusion (16 x 64) and the perceiver (4 x 192)
    heads = [(64, 2, 2, False), (128, 4, 1, True), (192, 1, 1, False)] if quick else \
        [(64, 16, 16, False), (128, 32, 8, True), (192, 4, 4, False)]
    q_lengths = [0, 1, 17, 40] if quick else [0, 1, 700, 2300, 100]
    cuq = seqlens_to_cu_seqlens(q_lengths, device=device)
    for head_dim, hq, hkv, causal in heads:
        for deterministic in (False, True):
            t = sum(q_lengths)
            cases.append((
                f"packed_attention D={head_dim} {hq}:{hkv}{' causal' if causal else ''} "
                f"{'deterministic' if deterministic else 'atomic'} dQ",
                ak.packed_attention,
                dict(q=rand(t, hq, head_dim), k=rand(t, hkv, head_dim), v=rand(t, hkv, head_dim), cu_seqlens_q=cuq,
                     cu_seqlens_k=cuq, max_seqlen_q=max(q_lengths), max_seqlen_k=max(q_lengths), causal=causal,
                     deterministic=deterministic),
                ["q", "k", "v"], ("triton",)))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_correctness", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument("--backends", default="triton,cuda", help="fast backends to check, comma-separated")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--ops", default="", help="only cases whose label starts with one of these (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="small shapes (CPU dry run)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    wanted = [b for b in args.backends.split(",") if b]
    ops = tuple(o for o in args.ops.split(",") if o)
    rows: List[dict] = []
    report = dict(device=str(device), dtype=str(dtype).replace("torch.", ""), quick=args.quick,
                  autotune=os.environ.get("ALARM_KERNELS_AUTOTUNE", "0"), rows=rows, complete=False)
    for label, fn, inputs, grads, backends in model_cases(device, args.quick):
        if ops and not label.startswith(ops):
            continue
        for backend in [b for b in backends if b in wanted]:
            reason = backend_unavailable_reason(backend, device)
            if reason:
                rows.append(dict(case=label, backend=backend, status="not run", reason=reason))
                continue
            start = time.perf_counter()
            try:
                results = check_backend(fn, inputs, grads, backend=backend, dtype=dtype, label=label)
            except Exception as exc:  # one broken case is recorded; the others still run
                rows.append(dict(case=label, backend=backend, status="error",
                                 reason=f"{type(exc).__name__}: {exc}"[:500]))
                print(f"ERROR {label} [{backend}]: {exc}", flush=True)
            else:
                for r in results:
                    rows.append(dict(case=label, backend=backend, check=r.name, status="ok" if r.ok else "FAIL",
                                     fast_error=r.fast_error, reference_error=r.reference_error, budget=r.budget))
                    print(r, flush=True)
            rows[-1]["seconds"] = round(time.perf_counter() - start, 2)
            atomic_write_json(args.out, report)
    report["complete"] = True
    atomic_write_json(args.out, report)
    failed = [r for r in rows if r["status"] in ("FAIL", "error")]
    print(f"{len(rows) - len(failed)} checks ok or not run, {len(failed)} failed -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

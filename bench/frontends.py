"""Audio front ends side by side: transformers' extractors vs ``alarm_kernels``' CPU path vs (on a GPU) its device path.

    python -m bench.frontends --out DIR                        # CPU (and CUDA when present); writes DIR/frontends.json
    python -m bench.frontends --out DIR --threads 1,2          # CPU rows at 1 and at 2 intra-op threads
    python -m bench.frontends --out DIR --dry-run              # seconds: tiny shapes, a few repeats (CI runs it)

Cases are batches of clips (``8x20s``: eight 20 s clips at 16 kHz, the seeded chord-plus-noise of
``alarm.model.tiny.synthetic_audio``), each through the three front ends the encoders use:

- ``whisper_log_mel`` (128 bins, the published 30 s windows: clips cut into 30 s pieces, each padded to 30 s);
  baseline ``transformers`` = ``WhisperFeatureExtractor`` on the pieces (its batched torch path);
- ``w2v_bert_fbank`` (160 zero samples on each side, whole-clip normalisation); baseline ``transformers`` =
  ``SeamlessM4TFeatureExtractor`` per clip (its per-frame NumPy loop); ``reference`` is the default, bitwise equal
  to the extractor (float64 spectrum), ``reference-fft32`` the float32-spectrum variant;
- ``kaldi_fbank`` with SSLAM's options (128 bins, Hanning window, on the mean-removed clip with 160 zero samples on
  each side); no baseline here (torchaudio cannot be installed beside the CPU torch).

Variants ``reference`` / ``reference-fft32`` run on CPU tensors and, on a GPU machine, also on CUDA tensors
(``cuda-reference``: the same torch code on cuFFT); ``triton`` / ``triton-fft32`` run on CUDA tensors only. Inputs
of device variants are already packed on the device (one flat tensor + int32 offsets); the transfers are not timed.

Timing: on CPU each call is timed with the process's CPU time (``time.process_time``: the machine may be shared)
and its wall time, repeated until ``--budget`` seconds or 200 calls (at least 5); on CUDA with CUDA events around
each call after a warm-up. Rows hold the median and p10-p90 in milliseconds (``ms``, ``p10_ms``, ``p90_ms``: CPU
time on CPU, device time on CUDA; ``wall_ms``), and ``speedup_vs_transformers`` (the baseline's median over the
row's, both in their own clock: CPU time for CPU rows and the baseline, device time for CUDA rows).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import torch

from alarm.fileio import atomic_write_json
from alarm.model.tiny import synthetic_audio
from bench.harness import spread
from bench.ops import environment

import alarm_kernels as ak

CASES = {"8x20s": [20.0] * 8, "8x30s": [30.0] * 8, "32x5s": [5.0] * 32, "4x60s": [60.0] * 4,
         "8x1-30s": [1.0, 3.5, 7.0, 11.0, 15.5, 19.0, 24.5, 30.0]}
DRY_CASES = {"2x1s": [1.0, 1.3]}
RATE = 16000
WINDOW = 480000


def _quantiles(times: List[float]) -> Dict[str, float]:
    """Median and p10-p90 (``bench.harness.spread``) of call times in ms."""
    s = spread(times)
    return {"ms": s["median"], "p10_ms": s["p10"], "p90_ms": s["p90"]}


def time_cpu(fn: Callable[[], object], budget_s: float, max_calls: int = 200) -> Dict[str, float]:
    """Median and p10-p90 of one call's process CPU time (ms), plus its median wall time, after one warm-up."""
    fn()
    cpu, wall = [], []
    deadline = time.perf_counter() + budget_s
    while len(cpu) < 5 or (time.perf_counter() < deadline and len(cpu) < max_calls):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return {**_quantiles(cpu), "wall_ms": spread(wall)["median"], "calls": len(cpu)}


def time_cuda(fn: Callable[[], object], budget_s: float, max_calls: int = 200) -> Dict[str, float]:
    """Median and p10-p90 of one call's device time (ms, CUDA events), plus its median wall time, after warm-ups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    dev, wall = [], []
    deadline = time.perf_counter() + budget_s
    while len(dev) < 5 or (time.perf_counter() < deadline and len(dev) < max_calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        w0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        wall.append((time.perf_counter() - w0) * 1e3)
        dev.append(start.elapsed_time(end))
    return {**_quantiles(dev), "wall_ms": spread(wall)["median"], "calls": len(dev)}


def _packed(clips: List[torch.Tensor], device) -> tuple:
    return torch.cat(clips).to(device), ak.seqlens_to_cu_seqlens([c.numel() for c in clips]).to(device)


def _sslam_input(clips: List[torch.Tensor]) -> List[torch.Tensor]:
    return [torch.nn.functional.pad(c - c.mean(), (160, 160)) for c in clips]


def variants(clips: List[torch.Tensor], devices: List[str]) -> Dict[str, Dict[str, tuple]]:
    """op -> variant label -> (device, zero-argument callable)."""
    from transformers import SeamlessM4TFeatureExtractor, WhisperFeatureExtractor

    pieces = [p for c in clips for p in torch.split(c, WINDOW)]
    whisper_fe = WhisperFeatureExtractor(feature_size=128)
    seamless_fe = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, stride=2, sampling_rate=RATE)
    piece_arrays = [p.numpy() for p in pieces]
    padded_arrays = [np.pad(c.numpy(), 160) for c in clips]
    out: Dict[str, Dict[str, tuple]] = {
        "whisper_log_mel": {"transformers": ("cpu", lambda: whisper_fe(piece_arrays, sampling_rate=RATE,
                                                                        return_tensors="pt"))},
        "w2v_bert_fbank": {"transformers": ("cpu", lambda: [seamless_fe(a, sampling_rate=RATE, return_tensors="pt")
                                                            for a in padded_arrays])},
        "kaldi_fbank": {},
    }
    sslam = _sslam_input(clips)
    for device in devices:
        xw, cuw = _packed(pieces, device)
        xc, cuc = _packed(clips, device)
        xs, cus = _packed(sslam, device)
        backends = ["reference"] + (["triton"] if device == "cuda" else [])
        for backend in backends:
            label = backend if device == "cpu" or backend == "triton" else f"cuda-{backend}"
            out["whisper_log_mel"][label] = (device, lambda x=xw, cu=cuw, b=backend: ak.whisper_log_mel(
                x, cu, 128, backend=b))
            for fft, suffix in ((torch.float64, ""), (torch.float32, "-fft32")):
                out["w2v_bert_fbank"][label + suffix] = (device, lambda x=xc, cu=cuc, b=backend, f=fft: (
                    ak.w2v_bert_fbank(x, cu, fft_dtype=f, backend=b)))
            out["kaldi_fbank"][label] = (device, lambda x=xs, cu=cus, b=backend: ak.kaldi_fbank(
                x, cu, num_mel_bins=128, window="hanning", backend=b))
    return out


def run(cases: Dict[str, List[float]], devices: List[str], threads: List[int], budget_s: float,
        progress: bool = True) -> List[dict]:
    """One row per (case, op, variant, thread count for CPU rows)."""
    rows: List[dict] = []
    for case, seconds in cases.items():
        clips = [torch.from_numpy(c) for c in synthetic_audio(seconds, rate=RATE, seed=len(rows))]
        for op, table in variants(clips, devices).items():
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                timed = {}
                for label, (device, fn) in table.items():
                    if device == "cuda" and n_threads != threads[0]:
                        continue  # device rows do not depend on the host's threads
                    timed[label] = (device, (time_cuda if device == "cuda" else time_cpu)(fn, budget_s))
                base = timed.get("transformers", (None, {}))[1].get("ms")
                for label, (device, res) in timed.items():
                    row = {"case": case, "clips": len(seconds), "audio_s": sum(seconds), "op": op, "variant": label,
                           "device": device, "threads": n_threads if device == "cpu" else None,
                           "clock": "process CPU time" if device == "cpu" else "CUDA events", **res}
                    if base and label != "transformers":
                        row["speedup_vs_transformers"] = base / res["ms"]
                    rows.append(row)
                    if progress:
                        speed = f" x{row['speedup_vs_transformers']:.1f}" if "speedup_vs_transformers" in row else ""
                        print(f"{case:>8} {op:<16} {label:<22} {device:<4} t={row['threads']} {res['ms']:9.2f} ms "
                              f"(p10-p90 {res['p10_ms']:.2f}-{res['p90_ms']:.2f}){speed}", file=sys.stderr,
                              flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.frontends", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder; the result goes to OUT/frontends.json")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes and a few calls (seconds on CPU)")
    parser.add_argument("--cases", default="", help=f"comma-separated cases (default all: {','.join(CASES)})")
    parser.add_argument("--threads", default="1", help="comma-separated CPU thread counts (default 1)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per variant (default 2, "
                        "0.05 with --dry-run)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA variants even when a GPU is present")
    args = parser.parse_args(argv)
    table = DRY_CASES if args.dry_run else CASES
    names = [c for c in args.cases.split(",") if c] or list(table)
    unknown = [c for c in names if c not in table]
    if unknown:
        print(f"python -m bench.frontends: unknown cases {unknown}; available: {list(table)}", file=sys.stderr)
        return 2
    try:
        threads = [int(t) for t in args.threads.split(",")]
        if min(threads) < 1:
            raise ValueError
    except ValueError:
        print(f"python -m bench.frontends: --threads must be positive ints, got {args.threads!r}", file=sys.stderr)
        return 2
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    budget = args.budget if args.budget is not None else (0.05 if args.dry_run else 2.0)
    rows = run({c: table[c] for c in names}, devices, threads, budget)
    result = {"environment": environment(torch.device(devices[-1])), "omp_num_threads": os.environ.get(
        "OMP_NUM_THREADS"), "dry_run": args.dry_run, "budget_s": budget, "rows": rows, "complete": True}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "frontends.json")
    atomic_write_json(path, result)
    print(f"wrote {path} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

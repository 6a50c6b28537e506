"""Host cost of one op call: ``alarm_kernels`` vs plain PyTorch doing the same work, at tiny sizes.

    python -m bench.overhead --out DIR [--device cpu|cuda] [--ops varlen_pool,packed_attention] [--repeats 300]
    python -m bench.overhead --dry-run --out DIR        # seconds: the plumbing, few repeats (CI runs it)

At tiny sizes (3 sequences of 4-12 frames, widths 16-32) the kernels' bodies cost next to nothing, so what is
timed is what a call costs on the host: argument checks, backend dispatch, autograd bookkeeping, the small
offset computations and the launches. Per op, ``fwd`` (the forward with autograd recording, as in a training
step) and ``fwd+bwd`` (forward, then backward with a fixed cotangent, gradients dropped) of:

* ``torch``: what the padded reference model runs for the same result on its padded ``[B, T, D]`` tensors
  (pooling: ``avg_pool1d`` / ``max_pool1d`` in NCT layout; conv: ``F.conv1d`` + GELU; layer mix: stack + softmax
  weights + sum; concat: pad to a common length, ``torch.cat``, ``F.linear``; attention: SDPA with a key mask);
* ``alarm_kernels``: the op on the packed tensors, called as the model's training step calls it (host sizes
  passed, ``validate=False``), on the default backend (``reference`` on CPU, the fastest built one on CUDA).

Both compute the same numbers (checked once per case before timing: ``max_abs_diff`` in the JSON). Timing
interleaves the two variants sample by sample (so load on a shared machine hits both alike); a sample is the mean
of ``calls`` back-to-back calls. Clock: process CPU time on CPU (run with ``OMP_NUM_THREADS=1``), wall time with a
device synchronize at each sample's end on CUDA. Reported per variant: median and p10-p90 in microseconds per call;
``ratio`` = alarm_kernels median / torch median, ``ratio_p10``-``ratio_p90`` over the per-sample pairs.
Writes ``DIR/overhead.json`` (environment with versions and git sha, settings, rows) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

import alarm_kernels as ak
from bench.cases.varlen_conv1d import _padded_conv
from bench.cases.varlen_pool import _padded_pool
from bench.cases.weighted_layer_sum import _stacked_sum
from bench.harness import fwd_bwd
from bench.kernels import environment

OPS = ("varlen_pool", "varlen_conv1d", "weighted_layer_sum", "multi_encoder_concat", "packed_attention")
DIRECTIONS = ("fwd", "fwd+bwd")
LENGTHS = (8, 4, 12)  # three sequences, 24 frames; multiples of the pooling ratio (see _pool_case)


@dataclass
class OverheadCase:
    """One op at one tiny setting: the two variants as zero-argument forwards returning their differentiable
    output, the leaves whose ``.grad`` each backward fills, and ``agree()`` -> max abs difference of the two
    results in the packed layout (proves they compute the same thing)."""

    op: str
    name: str
    torch_fn: Callable[[], torch.Tensor]
    torch_leaves: Sequence[torch.Tensor]
    ak_fn: Callable[[], torch.Tensor]
    ak_leaves: Sequence[torch.Tensor]
    agree: Callable[[], float]
    backend: str


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_()


def default_backend(op: str, device: torch.device) -> str:
    """The backend ``backend="auto"`` resolves to for ``op`` on ``device`` (floating inputs below fp64)."""
    module = {"packed_attention": "attention"}.get(op, op)
    implemented = __import__(f"alarm_kernels.{module}", fromlist=["IMPLEMENTED"]).IMPLEMENTED
    return ak.select_backend(op, "auto", device, implemented)


class _Tiny:
    """The shared tiny layout: three packed sequences on ``device`` and a seeded generator."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype, self.gen = device, dtype, torch.Generator().manual_seed(0)
        self.lengths = list(LENGTHS)
        self.t_max, self.total = max(self.lengths), sum(self.lengths)
        self.cu = ak.seqlens_to_cu_seqlens(self.lengths, device=device)
        self.valid = self.mask(self.lengths, self.t_max)

    def rand(self, *shape, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=self.gen) * scale).to(self.device, self.dtype)

    def mask(self, lengths: Sequence[int], t: int) -> torch.Tensor:
        """bool ``[B, t]``: True on the valid frames."""
        return torch.arange(t, device=self.device)[None, :] < torch.tensor(list(lengths), device=self.device)[:, None]

    def padded(self, x: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Packed ``[total, ...]`` -> zero-padded ``[B, T, ...]``."""
        lengths = self.lengths if lengths is None else lengths
        out = x.new_zeros(len(lengths), max(lengths), *x.shape[1:])
        out[self.mask(lengths, max(lengths))] = x
        return out


def _pool_case(s: _Tiny, mode: str) -> OverheadCase:
    # lengths divisible by the ratio: padded pooling then gives the packed result on the valid windows (a partial
    # window would average or max the padding in; the padded model's exact twin, pool_padded, costs more)
    ratio, d = 2, 16
    x = s.rand(s.total, d)
    xp, xk = _leaf(s.padded(x)), _leaf(x)
    out_lengths = [-(-m // ratio) for m in s.lengths]
    out_valid = s.mask(out_lengths, max(out_lengths))
    host = dict(total_out=sum(out_lengths), validate=False)

    def torch_fn():
        return _padded_pool(xp, ratio, mode)

    def ak_fn():
        return ak.varlen_pool(xk, s.cu, ratio, mode, **host)[0]

    return OverheadCase("varlen_pool", f"{mode} r={ratio} D={d}", torch_fn, [xp], ak_fn, [xk],
                        lambda: _max_diff(torch_fn()[out_valid], ak_fn()), default_backend("varlen_pool", s.device))


def _conv_case(s: _Tiny) -> OverheadCase:
    c_in, c_out = 16, 32
    x, w, b = s.rand(s.total, c_in), s.rand(c_out, c_in, 3, scale=(3 * c_in) ** -0.5), s.rand(c_out)
    xp, xk, wt, bt, wk, bk = _leaf(s.padded(x)), _leaf(x), _leaf(w), _leaf(b), _leaf(w), _leaf(b)
    host = dict(total_out=s.total, max_seqlen=s.t_max, validate=False)

    def torch_fn():
        return _padded_conv(xp, wt, bt, 1, 1, "gelu")

    def ak_fn():
        return ak.varlen_conv1d(xk, s.cu, wk, bk, 1, 1, "gelu", **host)[0]

    return OverheadCase("varlen_conv1d", f"k=3 s=1 gelu {c_in}->{c_out}", torch_fn, [xp, wt, bt], ak_fn,
                        [xk, wk, bk], lambda: _max_diff(torch_fn()[s.valid], ak_fn()),
                        default_backend("varlen_conv1d", s.device))


def _layer_sum_case(s: _Tiny) -> OverheadCase:
    k, d = 4, 16
    layers = [s.rand(s.total, d) for _ in range(k)]  # frozen encoder states: only the logits train
    layers_padded = [s.padded(x) for x in layers]
    logits = torch.randn(k, generator=s.gen).to(s.device)
    lt, lk = _leaf(logits), _leaf(logits)

    def torch_fn():
        return _stacked_sum(layers_padded, lt)

    def ak_fn():
        return ak.weighted_layer_sum(layers, lk)

    return OverheadCase("weighted_layer_sum", f"k={k} D={d} (logits grad)", torch_fn, [lt], ak_fn, [lk],
                        lambda: _max_diff(torch_fn()[s.valid], ak_fn()),
                        default_backend("weighted_layer_sum", s.device))


def _concat_case(s: _Tiny) -> OverheadCase:
    widths, d_out = (16, 16), 16
    stream_lengths = [s.lengths, [max(0, m - 1) for m in s.lengths]]  # the encoders differ by a frame
    cus = [ak.seqlens_to_cu_seqlens(ls, device=s.device) for ls in stream_lengths]
    streams = [s.rand(sum(ls), w) for ls, w in zip(stream_lengths, widths, strict=True)]
    w, b = s.rand(d_out, sum(widths), scale=sum(widths) ** -0.5), s.rand(d_out)
    sp = [_leaf(s.padded(x, ls)) for x, ls in zip(streams, stream_lengths, strict=True)]
    sk = [_leaf(x) for x in streams]
    wt, bt, wk, bk = _leaf(w), _leaf(b), _leaf(w), _leaf(b)
    host = dict(total_out=sum(max(c) for c in zip(*stream_lengths, strict=True)), validate=False)

    def torch_fn():  # the padded model: pad the streams to a common length, concatenate features, project
        t = max(x.shape[1] for x in sp)
        return F.linear(torch.cat([F.pad(x, (0, 0, 0, t - x.shape[1])) for x in sp], -1), wt, bt)

    def ak_fn():
        return ak.multi_encoder_concat(sk, cus, wk, bk, **host)[0]

    return OverheadCase("multi_encoder_concat", f"E=2 D=16+16 -> {d_out} (+bias)", torch_fn, sp + [wt, bt], ak_fn,
                        sk + [wk, bk], lambda: _max_diff(torch_fn()[s.valid], ak_fn()),
                        default_backend("multi_encoder_concat", s.device))


def _attention_case(s: _Tiny) -> OverheadCase:
    heads, d = 2, 32
    q, k, v = (s.rand(s.total, heads, d) for _ in range(3))
    qp, kp, vp = (_leaf(s.padded(t).transpose(1, 2)) for t in (q, k, v))  # [B, H, T, D]
    qk, kk, vk = _leaf(q), _leaf(k), _leaf(v)
    key_mask = s.valid[:, None, None, :]

    def torch_fn():  # the padded model's attention: SDPA with a boolean key mask
        return F.scaled_dot_product_attention(qp, kp, vp, attn_mask=key_mask)

    def ak_fn():  # as the model calls it: offsets built from host lengths, not validated per call
        return ak.packed_attention(qk, kk, vk, s.cu, s.cu, s.t_max, s.t_max, validate=False)

    return OverheadCase("packed_attention", f"self H={heads} D={d} full", torch_fn, [qp, kp, vp], ak_fn,
                        [qk, kk, vk], lambda: _max_diff(torch_fn().transpose(1, 2)[s.valid], ak_fn()),
                        default_backend("packed_attention", s.device))


def build_cases(device: torch.device, dtype: torch.dtype, ops: Sequence[str]) -> List[OverheadCase]:
    """The tiny cases of ``ops`` on ``device`` in ``dtype``."""
    s = _Tiny(device, dtype)
    builders = {"varlen_pool": lambda: [_pool_case(s, "mean"), _pool_case(s, "max")],
                "varlen_conv1d": lambda: [_conv_case(s)], "weighted_layer_sum": lambda: [_layer_sum_case(s)],
                "multi_encoder_concat": lambda: [_concat_case(s)], "packed_attention": lambda: [_attention_case(s)]}
    return [case for op in OPS if op in ops for case in builders[op]()]


def _forward(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        fn()
    return run


class _Clock:
    """Process CPU time on CPU; wall time closed by a device synchronize on CUDA (launches are asynchronous)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.name = "wall time, synchronized per sample" if self.cuda else "process CPU time"

    def now(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter_ns()
        return time.process_time_ns()


def _quantile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _stats(us: List[float]) -> Dict[str, float]:
    return {"median_us": statistics.median(us), "p10_us": _quantile(us, 0.1), "p90_us": _quantile(us, 0.9)}


def time_pair(fns: Dict[str, Callable[[], None]], clock: _Clock, repeats: int, calls: int) -> Dict[str, List[float]]:
    """Microseconds per call of each variant: ``repeats`` samples of ``calls`` calls, the variants interleaved
    (their order alternating from one sample to the next)."""
    for fn in fns.values():  # warm-up: first-call caches, allocator pools
        for _ in range(3):
            fn()
    samples: Dict[str, List[float]] = {label: [] for label in fns}
    labels = list(fns)
    for r in range(repeats):
        for label in labels if r % 2 == 0 else labels[::-1]:
            fn = fns[label]
            start = clock.now()
            for _ in range(calls):
                fn()
            samples[label].append((clock.now() - start) / calls / 1e3)
    return samples


def measure(cases: List[OverheadCase], device: torch.device, repeats: int, calls: int,
            progress: bool = True) -> List[dict]:
    """One row per case and direction: both variants' stats, the ratio and its per-sample spread."""
    clock = _Clock(device)
    rows = []
    for case in cases:
        with torch.no_grad():
            diff = case.agree()
        for direction in DIRECTIONS:
            if direction == "fwd":
                fns = {"torch": _forward(case.torch_fn), "alarm_kernels": _forward(case.ak_fn)}
            else:
                fns = {"torch": fwd_bwd(case.torch_fn, case.torch_leaves),
                       "alarm_kernels": fwd_bwd(case.ak_fn, case.ak_leaves)}
            samples = time_pair(fns, clock, repeats, calls)
            pair = [a / t for a, t in zip(samples["alarm_kernels"], samples["torch"], strict=True)]
            row = {"op": case.op, "case": case.name, "direction": direction, "backend": case.backend,
                   "torch": _stats(samples["torch"]), "alarm_kernels": _stats(samples["alarm_kernels"]),
                   "max_abs_diff": diff}
            row["ratio"] = row["alarm_kernels"]["median_us"] / row["torch"]["median_us"]
            row["ratio_p10"], row["ratio_p90"] = _quantile(pair, 0.1), _quantile(pair, 0.9)
            rows.append(row)
            if progress:
                print(f"  {case.op} {case.name} {direction}: x{row['ratio']:.2f}", file=sys.stderr)
    return rows


def format_table(rows: List[dict]) -> str:
    """Markdown table of the rows (microseconds per call)."""
    lines = ["| op | case | dir | backend | torch us (p10-p90) | alarm_kernels us (p10-p90) | ratio (p10-p90) |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        t, a = r["torch"], r["alarm_kernels"]
        lines.append(f"| {r['op']} | {r['case']} | {r['direction']} | {r['backend']} | "
                     f"{t['median_us']:.1f} ({t['p10_us']:.1f}-{t['p90_us']:.1f}) | "
                     f"{a['median_us']:.1f} ({a['p10_us']:.1f}-{a['p90_us']:.1f}) | "
                     f"{r['ratio']:.2f} ({r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}) |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for overhead.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", default="", help=f"comma-separated ops (default: all of {', '.join(OPS)})")
    parser.add_argument("--repeats", type=int, default=300, help="samples per variant and direction")
    parser.add_argument("--calls", type=int, default=20, help="back-to-back calls per sample")
    parser.add_argument("--dry-run", action="store_true", help="5 samples of 2 calls: checks the plumbing in seconds")
    args = parser.parse_args(argv)
    ops = [o for o in args.ops.split(",") if o] or list(OPS)
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"unknown ops {unknown}; available: {', '.join(OPS)}")
    repeats, calls = (5, 2) if args.dry_run else (args.repeats, args.calls)
    if repeats < 1 or calls < 1:
        parser.error("--repeats and --calls must be positive")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    threads = os.environ.get("OMP_NUM_THREADS")
    if device.type == "cpu" and threads != "1":
        print("bench.overhead: OMP_NUM_THREADS is not 1; CPU times include thread-pool spinning", file=sys.stderr)
    rows = measure(build_cases(device, dtype, ops), device, repeats, calls)
    from alarm.fileio import atomic_write_json

    result = {"bench": "overhead", "environment": environment(device), "clock": _Clock(device).name,
              "settings": {"dtype": str(dtype).replace("torch.", ""), "lengths": list(LENGTHS), "repeats": repeats,
                           "calls_per_sample": calls, "omp_num_threads": threads,
                           "torch_threads": torch.get_num_threads(), "dry_run": args.dry_run},
              "rows": rows}
    path = os.path.join(args.out, "overhead.json")
    atomic_write_json(path, result)
    env = result["environment"]
    print(f"device: {env['device']} | torch {env['torch']} | sha {env['git_sha'][:10]} | clock: {result['clock']}")
    print(format_table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

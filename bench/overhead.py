"""Host cost of one op call: ``alarm_kernels`` vs plain PyTorch doing the same work, at tiny sizes.

    python -m bench.overhead --out DIR [--device cpu|cuda] [--ops varlen_pool,packed_attention] [--repeats 300]
    python -m bench.overhead --dry-run --out DIR        # seconds: the plumbing, few repeats (CI runs it)

At tiny sizes (3 sequences of 4-12 frames, widths 16-32) the kernels' bodies cost next to nothing, so what is
timed is what a call costs on the host: argument checks, backend dispatch, autograd bookkeeping, the small
offset computations and the launches. Per op, ``fwd`` (the forward with autograd recording, as in a training
step) and ``fwd+bwd`` (forward, then backward with a fixed cotangent, gradients dropped) of three variants:

* ``torch``: plain PyTorch producing the same packed result from the same packed inputs: pad (one indexed write
  into zeros: ``alarm_kernels.varlen.PaddedLayout``, its index tensors built once per batch), the ATen ops the padded
  reference model runs (pooling: ``avg_pool1d`` / ``max_pool1d`` in NCT layout; conv: ``F.conv1d`` + GELU; layer
  mix: stack + softmax weights + sum, no padding needed; concat: pad to a common length, ``torch.cat``,
  ``F.linear``; attention: SDPA with a boolean key mask), unpad (one gather). ``ratio`` is measured against this one;
* ``padded``: those ATen ops alone on already padded tensors (what a model that stays padded pays per op);
* ``alarm_kernels``: the op on the packed tensors, called as the model's training step calls it (host sizes
  passed, ``validate=False``), on the default backend (``reference`` on CPU, the fastest built one on CUDA);
* ``custom_op``: the same backend through the registered ``torch.ops.alarm_kernels.<op>`` (torch.library's own
  autograd around the forward and backward custom ops, the route torch.compile traces), for comparison.

``torch`` and ``alarm_kernels`` compute the same numbers (checked once per case before timing: ``max_abs_diff`` in
the JSON; the pooling lengths are multiples of the ratio, so padded pooling has no partial window). Timing
interleaves the variants sample by sample (so load on a shared machine hits them alike); a sample is the mean of
``calls`` back-to-back calls. Clock: process CPU time on CPU (run with ``OMP_NUM_THREADS=1``), wall time with a
device synchronize at each sample's end on CUDA. Reported per variant: median and p10-p90 in microseconds per call;
``ratio`` = alarm_kernels median / torch median (``ratio_vs_padded``: / padded median), with p10-p90 over the
per-sample pairs. Writes ``DIR/overhead.json`` (environment with versions and git sha, settings, rows) and prints
a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

import alarm_kernels as ak
from alarm_kernels.varlen import PaddedLayout
from bench.cases.varlen_conv1d import _padded_conv
from bench.cases.varlen_pool import _padded_pool
from bench.cases.weighted_layer_sum import _stacked_sum
from bench.harness import fwd_bwd, spread
from bench.ops import environment

OPS = ("varlen_pool", "varlen_conv1d", "weighted_layer_sum", "multi_encoder_concat", "packed_attention")
DIRECTIONS = ("fwd", "fwd+bwd")
LENGTHS = (8, 4, 12)  # three sequences, 24 frames; multiples of the pooling ratio (see _pool_case)


@dataclass
class OverheadCase:
    """One op at one tiny setting. Each variant is a zero-argument forward returning its differentiable output,
    with the leaves its backward fills: ``torch`` (packed in, packed out: pad, ATen ops, unpad), ``padded``
    (the ATen ops alone on already padded tensors; None where the op needs no padding), ``alarm_kernels`` and
    ``custom_op`` (``torch.ops.alarm_kernels.<op>`` with the same arguments: torch.library's registered autograd).
    ``agree()`` -> max abs difference between the torch and alarm_kernels results (they compute the same thing)."""

    op: str
    name: str
    variants: Dict[str, Optional[Tuple[Callable[[], torch.Tensor], Sequence[torch.Tensor]]]]
    agree: Callable[[], float]
    backend: str


_OPS = torch.ops.alarm_kernels  # the registered custom ops (the "custom_op" variant)


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
    """The shared tiny batch: three packed sequences on ``device`` and a seeded generator."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype, self.gen = device, dtype, torch.Generator().manual_seed(0)
        self.lengths = list(LENGTHS)
        self.total = sum(self.lengths)
        self.layout = PaddedLayout.from_lengths(self.lengths, device)  # built once per batch
        self.cu = ak.seqlens_to_cu_seqlens(self.lengths, device=device)

    def rand(self, *shape, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=self.gen) * scale).to(self.device, self.dtype)


def _pool_case(s: _Tiny, mode: str) -> OverheadCase:
    # lengths divisible by the ratio: padded pooling then gives the packed result (a partial window would average or
    # max the padding in; the padded model's exact twin, alarm.model.adapters.pool_padded, costs more)
    ratio, d = 2, 16
    out = PaddedLayout.from_lengths([-(-m // ratio) for m in s.lengths], s.device)
    x = s.rand(s.total, d)
    xt, xp, xk = _leaf(x), _leaf(s.layout.pad(x)), _leaf(x)
    host = dict(total_out=out.total, validate=False)

    def torch_fn():
        return out.unpad(_padded_pool(s.layout.pad(xt), ratio, mode))

    def ak_fn():
        return ak.varlen_pool(xk, s.cu, ratio, mode, **host)[0]

    backend = default_backend("varlen_pool", s.device)
    return OverheadCase("varlen_pool", f"{mode} r={ratio} D={d}",
                        {"torch": (torch_fn, [xt]), "padded": (lambda: _padded_pool(xp, ratio, mode), [xp]),
                         "alarm_kernels": (ak_fn, [xk]),
                         "custom_op": (lambda: _OPS.varlen_pool(xk, s.cu, ratio, mode, out.total, backend)[0],
                                       [xk])},
                        lambda: _max_diff(torch_fn(), ak_fn()), backend)


def _conv_case(s: _Tiny) -> OverheadCase:
    c_in, c_out = 16, 32
    x, w, b = s.rand(s.total, c_in), s.rand(c_out, c_in, 3, scale=(3 * c_in) ** -0.5), s.rand(c_out)
    xt, xp, xk = _leaf(x), _leaf(s.layout.pad(x)), _leaf(x)
    (wt, bt), (wp, bp), (wk, bk) = ((_leaf(w), _leaf(b)) for _ in range(3))
    host = dict(total_out=s.total, max_seqlen=s.layout.max_len, validate=False)

    def torch_fn():
        return s.layout.unpad(_padded_conv(s.layout.pad(xt), wt, bt, 1, 1, "gelu"))

    def ak_fn():
        return ak.varlen_conv1d(xk, s.cu, wk, bk, 1, 1, "gelu", **host)[0]

    backend = default_backend("varlen_conv1d", s.device)
    return OverheadCase("varlen_conv1d", f"k=3 s=1 gelu {c_in}->{c_out}",
                        {"torch": (torch_fn, [xt, wt, bt]),
                         "padded": (lambda: _padded_conv(xp, wp, bp, 1, 1, "gelu"), [xp, wp, bp]),
                         "alarm_kernels": (ak_fn, [xk, wk, bk]),
                         "custom_op": (lambda: _OPS.varlen_conv1d(xk, s.cu, wk, bk, 1, 1, "gelu", s.total,
                                                                  s.layout.max_len, backend)[0], [xk, wk, bk])},
                        lambda: _max_diff(torch_fn(), ak_fn()), backend)


def _layer_sum_case(s: _Tiny) -> OverheadCase:
    k, d = 4, 16
    layers = [s.rand(s.total, d) for _ in range(k)]  # frozen encoder states: only the logits train
    logits = torch.randn(k, generator=s.gen).to(s.device)
    lt, lk = _leaf(logits), _leaf(logits)

    def torch_fn():  # elementwise: the same ATen ops run on packed or padded rows, no padding needed
        return _stacked_sum(layers, lt)

    def ak_fn():
        return ak.weighted_layer_sum(layers, lk)

    backend = default_backend("weighted_layer_sum", s.device)
    return OverheadCase("weighted_layer_sum", f"k={k} D={d} (logits grad)",
                        {"torch": (torch_fn, [lt]), "padded": None, "alarm_kernels": (ak_fn, [lk]),
                         "custom_op": (lambda: _OPS.weighted_layer_sum(layers, lk, backend), [lk])},
                        lambda: _max_diff(torch_fn(), ak_fn()), backend)


def _concat_case(s: _Tiny) -> OverheadCase:
    widths, d_out = (16, 16), 16
    stream_lengths = [s.lengths, [max(0, m - 1) for m in s.lengths]]  # the encoders differ by a frame
    layouts = [PaddedLayout.from_lengths(ls, s.device) for ls in stream_lengths]
    cus = [ak.seqlens_to_cu_seqlens(ls, device=s.device) for ls in stream_lengths]
    streams = [s.rand(sum(ls), w) for ls, w in zip(stream_lengths, widths, strict=True)]
    w, b = s.rand(d_out, sum(widths), scale=sum(widths) ** -0.5), s.rand(d_out)
    st, sk = [_leaf(x) for x in streams], [_leaf(x) for x in streams]
    sp = [_leaf(lay.pad(x)) for lay, x in zip(layouts, streams, strict=True)]
    (wt, bt), (wp, bp), (wk, bk) = ((_leaf(w), _leaf(b)) for _ in range(3))
    host = dict(total_out=s.total, validate=False)  # the first stream is the longer one

    def padded_fn(padded, weight, bias):  # the padded model: pad to a common length, concatenate features, project
        t = max(x.shape[1] for x in padded)
        return F.linear(torch.cat([F.pad(x, (0, 0, 0, t - x.shape[1])) for x in padded], -1), weight, bias)

    def torch_fn():
        return s.layout.unpad(padded_fn([lay.pad(x) for lay, x in zip(layouts, st, strict=True)], wt, bt))

    def ak_fn():
        return ak.multi_encoder_concat(sk, cus, wk, bk, **host)[0]

    backend = default_backend("multi_encoder_concat", s.device)
    return OverheadCase("multi_encoder_concat", f"E=2 D=16+16 -> {d_out} (+bias)",
                        {"torch": (torch_fn, st + [wt, bt]), "padded": (lambda: padded_fn(sp, wp, bp), sp + [wp, bp]),
                         "alarm_kernels": (ak_fn, sk + [wk, bk]),
                         "custom_op": (lambda: _OPS.multi_encoder_concat(sk, cus, wk, bk, s.total, backend)[0],
                                       sk + [wk, bk])},
                        lambda: _max_diff(torch_fn(), ak_fn()), backend)


def _attention_case(s: _Tiny) -> OverheadCase:
    heads, d = 2, 32
    q, k, v = (s.rand(s.total, heads, d) for _ in range(3))
    tq, tk, tv = (_leaf(t) for t in (q, k, v))
    qp, kp, vp = (_leaf(s.layout.pad(t).transpose(1, 2)) for t in (q, k, v))  # [B, H, T, D]
    qk, kk, vk = (_leaf(t) for t in (q, k, v))
    key_mask = s.layout.mask()[:, None, None, :]
    t_max = s.layout.max_len

    def sdpa(a, b, c):  # the padded model's attention: SDPA with a boolean key mask
        return F.scaled_dot_product_attention(a, b, c, attn_mask=key_mask)

    def torch_fn():
        a, b, c = (s.layout.pad(t).transpose(1, 2) for t in (tq, tk, tv))
        return s.layout.unpad(sdpa(a, b, c).transpose(1, 2))

    def ak_fn():  # as the model calls it: offsets built from host lengths, not validated per call
        return ak.packed_attention(qk, kk, vk, s.cu, s.cu, t_max, t_max, validate=False)

    backend = default_backend("packed_attention", s.device)
    return OverheadCase("packed_attention", f"self H={heads} D={d} full",
                        {"torch": (torch_fn, [tq, tk, tv]), "padded": (lambda: sdpa(qp, kp, vp), [qp, kp, vp]),
                         "alarm_kernels": (ak_fn, [qk, kk, vk]),
                         "custom_op": (lambda: _OPS.packed_attention(qk, kk, vk, s.cu, s.cu, t_max, t_max, False,
                                                                     d ** -0.5, False, backend, 0.0, 0, 0)[0],
                                       [qk, kk, vk])},
                        lambda: _max_diff(torch_fn(), ak_fn()), backend)


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


def _stats(us: List[float]) -> Dict[str, float]:
    """Median and p10-p90 (``bench.harness.spread``) of per-call microseconds."""
    s = spread(us)
    return {"median_us": s["median"], "p10_us": s["p10"], "p90_us": s["p90"]}


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
    """One row per case and direction: each variant's stats, the ratios and their per-sample spread."""
    clock = _Clock(device)
    rows = []
    for case in cases:
        with torch.no_grad():
            diff = case.agree()
        present = {label: v for label, v in case.variants.items() if v is not None}
        for direction in DIRECTIONS:
            wrap = (lambda fn, _leaves: _forward(fn)) if direction == "fwd" else fwd_bwd
            samples = time_pair({label: wrap(fn, leaves) for label, (fn, leaves) in present.items()}, clock,
                                repeats, calls)
            row = {"op": case.op, "case": case.name, "direction": direction, "backend": case.backend,
                   "max_abs_diff": diff, **{label: _stats(us) for label, us in samples.items()}}
            for base in ("torch", "padded"):
                if base in samples:
                    pair = [a / t for a, t in zip(samples["alarm_kernels"], samples[base], strict=True)]
                    suffix = "" if base == "torch" else "_vs_padded"
                    row[f"ratio{suffix}"] = row["alarm_kernels"]["median_us"] / row[base]["median_us"]
                    pair_spread = spread(pair)
                    row[f"ratio{suffix}_p10"], row[f"ratio{suffix}_p90"] = pair_spread["p10"], pair_spread["p90"]
            rows.append(row)
            if progress:
                print(f"  {case.op} {case.name} {direction}: x{row['ratio']:.2f}", file=sys.stderr)
    return rows


def format_table(rows: List[dict]) -> str:
    """Markdown table of the rows (microseconds per call, median and p10-p90)."""
    def cell(stats: Optional[dict]) -> str:
        return f"{stats['median_us']:.1f} ({stats['p10_us']:.1f}-{stats['p90_us']:.1f})" if stats else "-"

    def ratio(r: dict, suffix: str) -> str:
        key = f"ratio{suffix}"
        return f"{r[key]:.2f} ({r[key + '_p10']:.2f}-{r[key + '_p90']:.2f})" if key in r else "-"

    lines = ["| op | case | dir | backend | torch: pad, op, unpad | torch: op on padded | alarm_kernels | "
             "ratio | ratio vs op on padded | the custom op called directly |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['case']} | {r['direction']} | {r['backend']} | {cell(r['torch'])} | "
                     f"{cell(r.get('padded'))} | {cell(r['alarm_kernels'])} | {ratio(r, '')} | "
                     f"{ratio(r, '_vs_padded')} | {cell(r.get('custom_op'))} |")
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

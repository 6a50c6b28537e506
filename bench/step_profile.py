"""A ``torch.profiler`` summary of one training step, small enough to commit with the results.

``profile_step(step, device, path)`` runs ``step()`` once under the profiler (CPU activity, plus CUDA on a GPU)
and writes ``path + ".txt"`` (the profiler's table of the top ops) and returns a JSON-ready dict:
- ``wall_s``: the step's wall time under the profiler (profiling adds overhead: compare rows, not absolutes);
- ``host_op_s``: the host time of the top-level ops (their CPU time including children);
- ``device_busy_s``: time with at least one kernel running (union of the kernel intervals), ``device_span_s``
  from the first kernel's start to the last one's end, ``device_idle_s`` = span - busy, ``idle_gaps``: the
  number of gaps between kernels longer than 10 us and the 10 longest (seconds, kernel before and after);
- ``top_ops``: the 20 ops with the most self device time (CPU: self CPU time), with their call counts.
On CPU the device fields are None.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["profile_step", "busy_and_gaps"]

GAP_US = 10.0


def busy_and_gaps(intervals: Sequence[Tuple[float, float, str]], min_gap: float = GAP_US) -> dict:
    """Kernel intervals (start_us, end_us, name), in any order -> busy (union length), span, and the gaps
    longer than ``min_gap`` between consecutive busy stretches, longest first (all in microseconds)."""
    if not intervals:
        return dict(busy_us=0.0, span_us=0.0, gaps=[])
    ordered = sorted(intervals)
    busy, gaps = 0.0, []
    cur_start, cur_end, cur_name = ordered[0]
    for start, end, name in ordered[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            if start - cur_end > min_gap:
                gaps.append(dict(gap_us=start - cur_end, after=cur_name, before=name))
            cur_start, cur_end, cur_name = start, end, name
        elif end > cur_end:
            cur_end, cur_name = end, name
    busy += cur_end - cur_start
    gaps.sort(key=lambda g: -g["gap_us"])
    return dict(busy_us=busy, span_us=max(end for _, end, _ in ordered) - ordered[0][0], gaps=gaps)


def _kernel_intervals(prof) -> List[Tuple[float, float, str]]:
    out = []
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            out.append((float(evt.time_range.start), float(evt.time_range.end), evt.name))
    return out


def profile_step(step: Callable[[], None], device: torch.device, path: Optional[str] = None) -> Dict[str, object]:
    """Profile one call of ``step`` (module docstring); ``path``: where to write ``<path>.txt``."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    averages = prof.key_averages()
    sort_key = "self_device_time_total" if cuda else "self_cpu_time_total"
    top = sorted(averages, key=lambda e: -getattr(e, sort_key))[:20]
    top_level = [e for e in prof.events() if e.cpu_parent is None and e.device_type == torch.autograd.DeviceType.CPU]
    summary: Dict[str, object] = dict(
        wall_s=wall, host_op_s=sum(e.cpu_time_total for e in top_level) * 1e-6, sorted_by=sort_key,
        top_ops=[dict(name=e.key, calls=e.count, self_s=getattr(e, sort_key) * 1e-6) for e in top],
        device_busy_s=None, device_span_s=None, device_idle_s=None, idle_gaps=None)
    if cuda:
        g = busy_and_gaps(_kernel_intervals(prof))
        summary.update(device_busy_s=g["busy_us"] * 1e-6, device_span_s=g["span_us"] * 1e-6,
                       device_idle_s=(g["span_us"] - g["busy_us"]) * 1e-6,
                       idle_gaps=dict(count=len(g["gaps"]), longest=[
                           dict(gap_s=x["gap_us"] * 1e-6, after=x["after"], before=x["before"])
                           for x in g["gaps"][:10]]))
    if path is not None:
        from alarm.fileio import atomic_write_text

        atomic_write_text(path + ".txt", averages.table(sort_by=sort_key, row_limit=30, max_name_column_width=60))
    return summary

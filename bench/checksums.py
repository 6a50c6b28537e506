"""Which hash guards checkpoints, caches and model folders: throughput of the strong hashes in ``hashlib``.

    OMP_NUM_THREADS=1 python bench/checksums.py              # about 30 s; --mib 64 --repeats 15 --out FILE.json

Each hash digests the same random buffer ``--repeats`` times, in turn (interleaved, so a busy machine
slows them alike); the time is the process CPU time of one digest (``time.process_time``, robust to other
processes on a shared machine). Reported: GiB/s of digested data, median and p10-p90 over the repeats,
and each hash's median time relative to sha256's. For scale, the same buffer written as a safetensors
file (``save_file`` to a temporary folder, then fsync: what a checkpoint costs anyway) is timed alongside
(its CPU time excludes the wait for the disk, so its ratio understates the write's real cost).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.harness import spread  # noqa: E402

HASHES = ("sha256", "blake2b", "sha512", "sha1", "md5")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=int, default=64, help="buffer size in MiB (default 64)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    data = np.random.default_rng(0).integers(0, 256, args.mib << 20, dtype=np.uint8).tobytes()
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    times = {name: [] for name in (*HASHES, "safetensors write")}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.safetensors")
        for _ in range(args.repeats):
            for name in HASHES:
                t = time.process_time()
                hashlib.new(name, data).hexdigest()
                times[name].append(time.process_time() - t)
            t = time.process_time()
            save_file({"x": tensor}, path)
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            times["safetensors write"].append(time.process_time() - t)
    gib = args.mib / 1024
    ref = spread(times["sha256"])["median"]
    rows = {}
    print(f"{args.mib} MiB buffer, {args.repeats} repeats, process CPU time; GiB/s = GiB digested per CPU second")
    print(f"{'':18} {'GiB/s median':>12} {'p10':>7} {'p90':>7} {'time vs sha256':>15}")
    for name, xs in times.items():
        s = spread(xs)
        med, lo, hi = s["median"], s["p10"], s["p90"]
        rows[name] = {"gib_per_s_median": gib / med, "gib_per_s_p10": gib / hi, "gib_per_s_p90": gib / lo,
                      "time_vs_sha256": med / ref}
        print(f"{name:18} {gib / med:12.2f} {gib / hi:7.2f} {gib / lo:7.2f} {med / ref:15.2f}")
    if args.out:
        from alarm.fileio import atomic_write_json
        atomic_write_json(args.out, {"mib": args.mib, "repeats": args.repeats, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

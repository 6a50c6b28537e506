"""Resampler cost at awkward rates, and ``alarm generate`` end to end on a 2 s clip at 44101 Hz.

    python bench/resample.py                 # CPU, about a minute; prints a table, optionally --out FILE.json

Each row runs in a fresh child process so that its peak memory is its own: the resample rows report the
median time of ``alarm.audio.resample`` on a 2 s clip (to 16 kHz) and the child's peak RSS minus that of a
child that only imports the same modules; the ``alarm generate`` row saves the tiny random ALARM model,
writes a 2 s 44101 Hz WAV and times the whole command (process start, imports, model build, generation)
with its peak RSS and CPU time (user + system).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from alarm.fileio import atomic_write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RATES = (11127, 44100, 44101, 47999)


def _child(rate: int, reps: int) -> None:
    """In the child: resample a 2 s clip ``reps`` times (rate 0: imports only); print JSON."""
    import numpy as np
    import torch

    from alarm.audio import resample

    times = []
    if rate:
        x = torch.from_numpy(np.random.default_rng(0).standard_normal(2 * rate).astype(np.float32) * 0.1)
        for _ in range(reps):
            start = time.perf_counter()
            resample(x, rate, 16000)
            times.append(time.perf_counter() - start)
    print(json.dumps({"median_s": statistics.median(times) if times else 0.0}))


def _peak_rss(argv: list[str]) -> tuple[str, float, float, float]:
    """Run ``argv`` -> (stdout, wall seconds, peak RSS in MiB, CPU seconds) of that process alone (wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err}")
    return out, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.reps)
        return 0

    me = [sys.executable, os.path.abspath(__file__), "--reps", str(args.reps), "--child"]
    _, _, base_rss, _ = _peak_rss(me + ["0"])
    rows = []
    print(f"{'case':<34} {'time':>10} {'peak RSS':>12}")
    for rate in RATES:
        out, _, rss, _ = _peak_rss(me + [str(rate)])
        med = json.loads(out.strip().splitlines()[-1])["median_s"]
        rows.append({"case": f"resample 2 s {rate} -> 16000 Hz", "median_s": med, "extra_rss_mib": rss - base_rss})
        print(f"{rows[-1]['case']:<34} {med * 1e3:8.2f} ms {rss - base_rss:+9.1f} MiB")

    with tempfile.TemporaryDirectory() as tmp:
        setup = ("import sys, numpy as np, soundfile as sf; from alarm.model.tiny import tiny_model, synthetic_audio;"
                 "tiny_model('CA').save_pretrained(sys.argv[1] + '/m');"
                 "sf.write(sys.argv[1] + '/a.wav', synthetic_audio([2.0], rate=44101)[0] * 0.5, 44101)")
        _peak_rss([sys.executable, "-c", setup, tmp])
        gen = [sys.executable, "-m", "alarm", "generate", "--model", f"{tmp}/m", "--audio", f"{tmp}/a.wav",
               "--prompt", "What do you hear?", "--max-thinking-tokens", "4", "--max-new-tokens", "8"]
        _, wall, rss, cpu = _peak_rss(gen)
    rows.append({"case": "alarm generate, 2 s at 44101 Hz (tiny)", "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss})
    print(f"{rows[-1]['case']:<34} {wall:8.2f} s  {rss:9.1f} MiB (whole process; {cpu:.2f} s of CPU time: "
          "wall time includes waiting on a loaded machine)")
    if args.out:
        atomic_write_json(args.out, {"rows": rows, "python": sys.version.split()[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

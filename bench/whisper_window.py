"""Whisper input modes side by side: published 30 s windows (default) vs the opt-in clip-length mode.

    python bench/whisper_window.py --size base --seconds 2 5 10 --out out/bench      # CPU, minutes
    python bench/whisper_window.py --size large-v3 --out out/bench                   # GPU

Random weights with the shapes of the named Whisper encoder (no download), the published layer indices
scaled to its depth. Reports per clip duration: median encoder time per clip in each mode (one clip per
call), their ratio, and the relative difference of the kept features (``||clip - window|| / ||window||``
over the selected layers; with random weights this shows that the features differ, not how much they
differ for the pretrained model). Writes ``whisper_window.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alarm.fileio import atomic_write_json  # noqa: E402
from alarm.model import EncoderSpec  # noqa: E402
from alarm.model.encoders import build_encoder  # noqa: E402
from alarm.model.tiny import synthetic_audio  # noqa: E402

SIZES = {"base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048),
         "large-v3": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120)}


def encoder(size: str, clip_length: bool, dtype: str):
    dims = SIZES[size]
    n = dims["encoder_layers"]
    layers = sorted({max(1, round(n * q / 32)) for q in (7, 15, 23, 31)})
    spec = EncoderSpec(name="whisper", kind="whisper", layers=layers, dim=dims["d_model"], norm="batch",
                       clip_length=clip_length, dtype=dtype,
                       hf_config=dict(**dims, num_mel_bins=128, max_source_positions=1500, decoder_layers=1))
    torch.manual_seed(0)
    return build_encoder(spec)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--seconds", type=float, nargs="+", default=[2.0, 5.0, 10.0, 30.0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="out/bench")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if dev == "cuda" else "float32"
    window, clip = encoder(args.size, False, dtype).to(dev), encoder(args.size, True, dtype).to(dev)
    clip.load_state_dict(window.state_dict())
    rows = []
    for s in args.seconds:
        wave = torch.from_numpy(synthetic_audio([s], seed=1)[0])
        fw, _ = window([wave])
        fc, _ = clip([wave])
        diff = sum(float((a.float() - b.float()).norm()) for a, b in zip(fc, fw, strict=True))
        ref = sum(float(b.float().norm()) for b in fw)
        tw = median_time(lambda: window([wave]), args.repeats)  # noqa: B023
        tc = median_time(lambda: clip([wave]), args.repeats)  # noqa: B023
        rows.append(dict(seconds=s, window_s=tw, clip_length_s=tc, speedup=tw / tc, rel_feature_diff=diff / ref))
        print(f"{s:6.1f} s clip: window {tw * 1e3:8.1f} ms, clip-length {tc * 1e3:8.1f} ms "
              f"(x{tw / tc:.2f}), feature difference {diff / ref:.3f}")
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "whisper_window.json"),
                      dict(size=args.size, device=dev, dtype=dtype, torch=torch.__version__, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

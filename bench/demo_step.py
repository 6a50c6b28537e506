"""Training-step speed of the two execution paths on the ``alarm demo`` configuration, side by side.

The demo trains tiny ALARM-CA (stage A) on cached frozen encoder features, 16 questions about 1-2 s clips
per micro-batch. This times forward + backward of exactly such a micro-batch on the packed fast path and
on the padded reference path (same parameters, same batch, alternating runs), plus the fast path with the
frozen encoders run online (what the feature cache saves), and reports LLM tokens/s and the speed-ups.
CPU by default; ``--device cuda`` on a GPU.

    python bench/demo_step.py --repeats 20 --out bench/results/demo_step_cpu.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alarm.demo.run import RECIPE  # noqa: E402
from alarm.demo.synth import RATE, make_clip, questions_for  # noqa: E402
from alarm.fileio import atomic_write_json  # noqa: E402
from alarm.model import ALARMModel, ModelBatch  # noqa: E402
from alarm.model.config import LEGACY_PATHS  # noqa: E402
from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX, text_batch_from_ids  # noqa: E402
from alarm.train.config import build_model_config, load_config  # noqa: E402
from bench.harness import spread  # noqa: E402


def demo_batch(model: ALARMModel, n: int, seed: int = 0) -> tuple:
    """``n`` demo questions (one per clip): (batch with the clips' frozen encoder features precomputed,
    the same batch with the waveforms, for the encoders to run online)."""
    rng = np.random.default_rng(seed)
    tok = model.tokenizer
    clips, suffixes, targets = [], [], []
    for _ in range(n):
        clip = make_clip(rng)
        q = questions_for(clip, rng)[int(rng.integers(0, 3))]
        clips.append(torch.from_numpy(clip.samples))
        suffixes.append(tok.encode(q.prompt + ASSISTANT_SUFFIX, add_special_tokens=False))
        targets.append(tok.encode(q.options[q.answer], add_special_tokens=False))
    header = len(tok.encode(ASSISTANT_SUFFIX, add_special_tokens=False))
    text = text_batch_from_ids(tok.encode(USER_PREFIX, add_special_tokens=False), suffixes, targets, header)
    features = model.encode(clips, [RATE] * n)
    return ModelBatch(text, features=features), ModelBatch(text, waves=clips, rates=[RATE] * n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="questions per micro-batch (default 16, the demo's)")
    p.add_argument("--repeats", type=int, default=15, help="timed steps per path (default 15)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="wall time, or this process's CPU time (robust on a shared CPU when run single-threaded)")
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args(argv)
    cfg = load_config(str(RECIPE), ["data.train_manifest=unused.jsonl"])
    model_cfg = build_model_config({k: v for k, v in cfg.model.items() if k != "llm_path"})
    model = ALARMModel(model_cfg).to(args.device).train()
    cached, online = demo_batch(model, args.batch)
    batches = {"fast": cached.to(args.device), "reference": cached.to(args.device),
               "fast_online_encoders": online.to(args.device)}
    params = list(model.trainable_parameters().values())
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times = {name: [] for name in batches}
    losses, tokens = {}, {}
    for i in range(args.warmup + args.repeats):
        for path, batch in batches.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = clock()
            out = model.forward_batch(batch, LEGACY_PATHS[path.split("_")[0]], reduction="sum")
            out.loss.backward()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[path].append(clock() - t0)
            losses[path], tokens[path] = float(out.loss.detach()), out.n_tokens
            for q in params:
                q.grad = None
    result = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "clock": args.clock,
              "batch": args.batch, "llm_tokens": tokens["fast"], "repeats": args.repeats,
              "loss_abs_diff": abs(losses["fast"] - losses["reference"])}
    for path, ts in times.items():
        s = spread(ts, (20, 80))
        med = s["median"]
        result[path] = {"step_s_median": med, "step_s_p20": s["p20"], "step_s_p80": s["p80"],
                        "tokens_per_s": tokens[path] / med}
    result["speedup_fast_over_reference"] = result["reference"]["step_s_median"] / result["fast"]["step_s_median"]
    result["speedup_cached_over_online_encoders"] = (result["fast_online_encoders"]["step_s_median"]
                                                     / result["fast"]["step_s_median"])
    print(f"demo micro-batch: {args.batch} questions, {tokens['fast']} LLM tokens, {args.device}, "
          f"{torch.get_num_threads()} threads; |loss fast - reference| = {result['loss_abs_diff']:.2e}")
    for path in ("reference", "fast", "fast_online_encoders"):
        r = result[path]
        print(f"  {path:<20} {r['step_s_median'] * 1e3:8.1f} ms/step (p20-p80 {r['step_s_p20'] * 1e3:.1f}-"
              f"{r['step_s_p80'] * 1e3:.1f})  {r['tokens_per_s']:8.0f} tokens/s")
    print(f"  fast path: {result['speedup_fast_over_reference']:.2f}x the reference path's tokens/s; cached "
          f"features: {result['speedup_cached_over_online_encoders']:.2f}x the step with the encoders online")
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One ALARM training step (forward + backward), reference path vs fast path, side by side.

    python bench/e2e_step.py --quick --out out/bench          # tiny random model on CPU (seconds)
    python bench/e2e_step.py --out out/bench                  # full-size shapes, random bf16 weights, GPU
    python bench/e2e_step.py --quick --token-rates 1,2,4 ...  # the same step at several audio token rates

Full size: Qwen3-4B dims (random weights, bf16, frozen), Whisper-large-v3 and w2v-BERT 2.0 encoder shapes
(random, bf16, frozen; MuQ and SSLAM are not in transformers, so the fusion sees these two streams),
adapters/fusion at spec dims in fp32 under bf16 autocast. Reports per path: median step time, LLM tokens/s
(unpadded tokens), peak memory (CUDA allocator peak; process max RSS on CPU), the loss, and the loss
difference between the paths. With ``--token-rates`` the step is timed once per
``ALARMConfig.token_rate_ratio`` (1 = 25 Hz audio tokens, 2 = 12.5 Hz, ...; same weights, the LLM shared),
and ``token_rates`` in the JSON gives each rate's results and its step-time speed-up over the first rate;
the top-level ``results`` are the first rate's. ``--cached-features`` runs the frozen encoders once and
reuses their outputs (as a trainer with precomputed encoder features would), so the step times only the
part the token rate changes: adapters, fusion, splice and the frozen LLM, forward and backward.
Writes ``e2e_step.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alarm.fileio import atomic_write_json  # noqa: E402
from bench.harness import git_state  # noqa: E402
from alarm.audio import validate_audio_batch  # noqa: E402
from alarm.model import ALARMConfig, ALARMModel, EncoderSpec  # noqa: E402
from alarm.model.config import LEGACY_PATHS, QWEN3_4B_CONFIG  # noqa: E402
from alarm.model.tiny import synthetic_audio  # noqa: E402

TARGET = ("Okay, let me think about what the user is asking. I hear a calm voice talking about the weather, "
          "then a dog barking and a car passing by. ")


def full_config(fusion: str) -> ALARMConfig:
    """Spec dims with random weights: Whisper-large-v3 + w2v-BERT 2.0 shapes and Qwen3-4B."""
    whisper = EncoderSpec(name="whisper", kind="whisper", layers=[7, 15, 23, 31], dim=1280, norm="batch",
                          dtype="bfloat16", hf_config=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                                                           encoder_ffn_dim=5120, num_mel_bins=128,
                                                           max_source_positions=1500, decoder_layers=1))
    w2v = EncoderSpec(name="w2v-bert", kind="w2v-bert", layers=[6, 10, 15, 20, 24], dim=1024, dtype="bfloat16",
                      hf_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                     intermediate_size=4096, feature_projection_input_dim=160))
    llm = {k: v for k, v in QWEN3_4B_CONFIG.items()}
    return ALARMConfig(encoders=[whisper, w2v], fusion=fusion, stage="B" if fusion in ("CA", "P") else "A",
                       llm_path=None, llm_config=llm, llm_dtype="bfloat16", tiny_tokenizer_vocab=384,
                       dropout=0.0)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_rates(text: str) -> list:
    """"1,2,4" -> [1, 2, 4] (distinct ints >= 1); argparse reports anything else as a usage error."""
    try:
        rates = [int(t) for t in text.split(",")]
    except ValueError:
        rates = []
    if not rates or min(rates) < 1 or len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 1 separated by commas, got {text!r}")
    return rates


def run_path(model, batch, path: str, steps: int, device: torch.device, autocast) -> dict:
    params = list(model.trainable_parameters().values())
    times, loss, n_tokens = [], None, 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + 1):  # step 0 is warm-up
        t0 = time.perf_counter()
        with autocast():
            out = model(*batch, layout=LEGACY_PATHS[path])
        out.loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
        loss, n_tokens = out.loss.item(), out.n_tokens
        for p in params:
            p.grad = None
    med = statistics.median(times)
    return dict(step_s_median=med, step_s_min=min(times), step_s_max=max(times), tokens=n_tokens,
                tokens_per_s=n_tokens / med, peak_memory_mb=peak_memory_mb(device), loss=loss)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny random model on CPU")
    ap.add_argument("--out", required=True, help="output folder (e2e_step.json is written there)")
    ap.add_argument("--fusion", default="CA", choices=["sum", "concat", "CA", "P"])
    ap.add_argument("--batch", type=int, default=None, help="clips per step (default 4 quick, 8 full)")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default 2 quick, 20 full)")
    ap.add_argument("--target-repeat", type=int, default=None, help="target text repeats (default 1 quick, 8 full)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per path (after one warm-up)")
    ap.add_argument("--device", default=None, help="default: cuda if available (full), cpu (quick)")
    ap.add_argument("--token-rates", type=parse_rates, default=[1],
                    help="audio token rate ratios to time, e.g. 1,2,4 (ALARMConfig.token_rate_ratio; 1 = 25 Hz)")
    ap.add_argument("--cached-features", action="store_true",
                    help="run the frozen encoders once and reuse their outputs (times the rest of the step)")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.quick else "cpu"))
    if not args.quick and device.type != "cuda":
        print("full-size shapes need a GPU; use --quick on CPU", file=sys.stderr)
        return 2
    batch_n = args.batch or (4 if args.quick else 8)
    seconds = args.seconds or (2.0 if args.quick else 20.0)
    repeat = args.target_repeat or (1 if args.quick else 8)
    # quick: the full size's 4096-token context, so long clips are not truncated at the tiny default 512
    cfg = ALARMConfig.tiny(args.fusion, max_length=4096) if args.quick else full_config(args.fusion)
    clips = synthetic_audio([seconds * (1 - 0.1 * (i % 4)) for i in range(batch_n)], seed=0)
    prompts = [f"Question {i}: what do you hear, and why?" for i in range(batch_n)]
    targets = [TARGET * repeat for _ in range(batch_n)]
    batch = (clips, 16000, prompts, targets)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
        else contextlib.nullcontext
    by_rate, shared, features = {}, {}, None
    for rate in args.token_rates:
        with torch.device(device):
            model = ALARMModel(dataclasses.replace(cfg, token_rate_ratio=rate), **shared)
        model.to(device).train()
        shared = dict(tokenizer=model.tokenizer, llm=model.llm)
        if args.cached_features:  # same seed, same encoders at every rate: compute once, then shadow encode()
            features = features or model.encode(*validate_audio_batch(clips, 16000, cfg.max_audio_seconds))
            model.encode = lambda waves, rates, cached=features: cached
        res = {p: run_path(model, batch, p, args.steps, device, autocast) for p in ("reference", "fast")}
        first = by_rate[args.token_rates[0]]["results"] if by_rate else res
        by_rate[rate] = dict(results=res, speedup=res["reference"]["step_s_median"] / res["fast"]["step_s_median"],
                             step_speedup_vs_first_rate={p: first[p]["step_s_median"] / res[p]["step_s_median"]
                                                         for p in res})
        trainable = sum(p.numel() for p in model.trainable_parameters().values())
        del model
    results = by_rate[args.token_rates[0]]["results"]
    ref, fast = results["reference"], results["fast"]
    report = dict(
        bench="e2e_step", quick=args.quick, fusion=args.fusion, batch=batch_n, clip_seconds=seconds,
        cached_features=args.cached_features,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__, transformers=__import__("transformers").__version__, git_sha=git_state()[0],
        trainable_params=trainable, token_rate_ratio=args.token_rates[0], results=results,
        token_rates={str(r): v for r, v in by_rate.items()}, loss_abs_diff=abs(ref["loss"] - fast["loss"]),
        loss_rel_diff=abs(ref["loss"] - fast["loss"]) / max(abs(ref["loss"]), 1e-12),
        speedup=ref["step_s_median"] / fast["step_s_median"],
        memory_ratio=ref["peak_memory_mb"] / max(fast["peak_memory_mb"], 1e-9),
        note="CPU peak memory is the process max RSS (monotonic; the second path's value includes the first)"
        if device.type == "cpu" else "peak memory: torch.cuda.max_memory_allocated per path")
    path = os.path.join(args.out, "e2e_step.json")
    atomic_write_json(path, report)
    print(f"{'rate':>4} {'path':<10} {'step s':>9} {'tokens':>7} {'tokens/s':>10} {'peak MB':>9} {'loss':>10} "
          f"{'vs rate ' + str(args.token_rates[0]):>10}")
    for rate, entry in by_rate.items():
        for name, r in entry["results"].items():
            print(f"{rate:>4} {name:<10} {r['step_s_median']:>9.4f} {r['tokens']:>7} {r['tokens_per_s']:>10.1f} "
                  f"{r['peak_memory_mb']:>9.1f} {r['loss']:>10.5f} {entry['step_speedup_vs_first_rate'][name]:>9.2f}x")
    print(f"speedup {report['speedup']:.2f}x, |loss diff| {report['loss_abs_diff']:.2e} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

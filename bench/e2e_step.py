"""One ALARM training step (forward + backward), padded reference vs packed fast path, side by side.

    python bench/e2e_step.py --out OUT                            # GPU: full-size shapes, stages A and B, rates 1/2/4
    python bench/e2e_step.py --config quick --out OUT             # tiny random model on CPU (seconds)
    OMP_NUM_THREADS=1 python bench/e2e_step.py --config mixed-cpu --clock process --out OUT   # the CPU packing case
    python bench/e2e_step.py --stages B --token-rates 1 --llm-variants none,liger,compile,fp8 --name e2e_llm --out OUT

Configurations (``--config``): ``full`` (GPU): Qwen3-4B dims (random bf16 weights, frozen), the four encoders of
ALARM-CA at their published specs and shapes with random bf16 weights, frozen (``full_encoders``: Whisper-large-v3,
w2v-BERT 2.0, MuQ-large's shape through the stand-in ``alarm.model.tiny.TinyMuQ``, SSLAM's ViT-B), each with its
published front end; adapters and fusion at spec dims in fp32 under bf16 autocast; 8 clips of 20 s (10% shorter
each, cyclically). ``quick`` (CPU): ``ALARMConfig.tiny``'s stand-ins of the four encoders with 4 clips of 2 s.
``mixed-cpu`` (CPU): the same tiny model with Qwen3's 151,936-token vocabulary and 8 clips spread evenly over 1-30 s,
the case where packing has padding and full-vocabulary logits to save. ``--encoders`` keeps a subset, in the order
whisper, w2v-bert, muq, sslam (the first kept is the base stream), e.g. ``whisper,w2v-bert`` as in the H200 run
of 2026-11-29; CA and P need two or more.

Stages (``--stages``), each its own rows: **A** trains adapters + fusion with the frozen encoders run online, on the
batch the trainer's DataLoader gives (``ALARMModel.worker_front_ends``: the front ends that are not device kernels,
all of them off CUDA, are computed once outside the timed steps, as the workers would; the kernel front ends run
inside the step); with ``--cached-features`` from encoder features computed once outside the timed steps. **B**
trains the fusion on the stage-B cache, the frozen adapters' outputs (``ALARMModel.adapter_streams``), computed
once per token rate. Each stage runs at every ``--token-rates`` ratio (``ALARMConfig.token_rate_ratio``: 1 = 25
Hz audio tokens, 2 = 12.5 Hz, 4 = 6.25 Hz) on the padded reference and the packed fast path, plus one fast-path row
per ``--llm-variants`` entry besides ``none`` (``liger`` / ``compile``: ``ALARMConfig.llm_kernels``; ``fp8``:
``llm_fp8="on"`` on CUDA, ``"emulate"`` elsewhere), each with its loss difference against the plain fast path.

Per row: ``--warmup`` untimed steps (the first one also records which backend every ``alarm_kernels`` op ran on and
which attention kernels ran), then ``--steps`` timed steps, the paths alternating step by step; median and p10-p90
step time (``--clock wall``: wall time with a device sync; ``process``: this process's CPU time, for a shared CPU),
LLM tokens/s (unpadded), peak memory in GiB (CUDA allocator peak; not measured on CPU), the loss, the model FLOPs
of the step (``bench/flops.py``, printed with their breakdown) and the MFU against the device's peak. With
``--profile`` (default) one more fast-path step per stage is profiled (``bench/step_profile.py``):
``profile_stage<S>_fast.txt`` and a summary in the JSON. Writes ``<--name>.json`` (default ``e2e_step.json``) into
``--out``. Field reference: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import resource
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script: the repo root

import alarm_kernels as ak  # noqa: E402
from alarm.fileio import atomic_write_json  # noqa: E402
from alarm.model import ALARMConfig, ALARMModel, EncoderSpec, ModelBatch  # noqa: E402
from alarm.model.batch import source_lengths  # noqa: E402
from alarm.model.config import QWEN3_4B_CONFIG, muq_large, sslam, w2v_bert_2, whisper_large_v3  # noqa: E402
from alarm.model.fusion import host_cu_seqlens  # noqa: E402
from alarm.model.splice import splice_packed, tokenize_batch  # noqa: E402
from alarm.model.tiny import synthetic_audio  # noqa: E402
from bench.flops import (adapter_flops, fusion_flops, llm_step_flops, muq_flops, sslam_flops,  # noqa: E402
                         w2v_bert_flops, whisper_flops)
from bench.harness import git_state, spread  # noqa: E402

TARGET = ("Okay, let me think about what the user is asking. I hear a calm voice talking about the weather, "
          "then a dog barking and a car passing by. ")
CONFIGS = ("full", "quick", "mixed-cpu")
LLM_VARIANTS = ("none", "liger", "compile", "fp8")
QWEN3_VOCAB = QWEN3_4B_CONFIG["vocab_size"]
# dense bf16 peak of the GPUs this project runs on (vendor spec sheets, SXM parts), for MFU
SPEC_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0}


ENCODER_NAMES = ("whisper", "w2v-bert", "muq", "sslam")
# MuQ-large (OpenMuQ/MuQ-large-msd-iter; muq.MuQConfig: encoder_dim 1024, encoder_depth 12, conv_dim 512, n_mels 128,
# hop 240, MelSTFT n_fft 2048) as the stand-in module; heads, FFN and depthwise kernel are transformers'
# Wav2Vec2ConformerConfig defaults (16, 4096, 31), rotary positions
MUQ_LARGE_STAND_IN = dict(tiny_stand_in=True, dim=1024, layers=12, heads=16, ffn=4096, kernel=31, n_mels=128,
                          n_fft=2048, hop=240, conv_channels=512)


def full_encoders() -> List[EncoderSpec]:
    """The four encoders of ALARM-CA (``ENCODER_NAMES`` order) with their published specs (layers, adapters, rates,
    pieces) and shapes, random weights: Whisper-large-v3, w2v-BERT 2.0, MuQ-large's shape as the stand-in
    (``MUQ_LARGE_STAND_IN``), SSLAM's ViT-B (``SSLAMConfig``'s defaults: 768 wide, 12 blocks, 12 heads)."""
    return [
        whisper_large_v3(path=None, hf_config=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                                                   encoder_ffn_dim=5120, num_mel_bins=128, max_source_positions=1500,
                                                   decoder_layers=1)),
        w2v_bert_2(path=None, hf_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                             intermediate_size=4096, feature_projection_input_dim=160)),
        muq_large(path=None, hf_config=dict(MUQ_LARGE_STAND_IN)),
        sslam(path=None, hf_config=dict(embed_dim=768, depth=12, num_heads=12)),
    ]


def keep_encoders(specs: List[EncoderSpec], fusion: str, names) -> List[EncoderSpec]:
    """The ``specs`` named in ``names``, in the order of ``specs`` (the first kept is the base stream); for ALARM-P
    the others feed their perceivers through identity adapters, as in ``ALARMConfig.full``."""
    kept = [s for s in specs if s.name in names]
    return [dataclasses.replace(s, adapter="identity") if fusion == "P" and i else s for i, s in enumerate(kept)]


def full_config(fusion: str, encoders=ENCODER_NAMES) -> ALARMConfig:
    """Spec dims with random weights: the ``encoders`` named (``full_encoders``) and Qwen3-4B. ValueError for a
    set the fusion refuses."""
    return ALARMConfig(encoders=keep_encoders(full_encoders(), fusion, encoders), fusion=fusion,
                       stage="B" if fusion in ("CA", "P") else "A", llm_path=None, llm_config=dict(QWEN3_4B_CONFIG),
                       llm_dtype="bfloat16", tiny_tokenizer_vocab=384, dropout=0.0)


def bench_setup(name: str, fusion: str, batch: Optional[int], seconds: Optional[float],
                target_repeat: Optional[int], encoders=ENCODER_NAMES) -> tuple:
    """(config, clip durations in seconds, target repeats) of a ``--config`` (module docstring) with the
    ``encoders`` named (a subset of ``ENCODER_NAMES``). ValueError for a set the fusion refuses (CA or P with one
    encoder)."""
    if name == "full":
        n, s = batch or 8, seconds or 20.0
        return full_config(fusion, encoders), [s * (1 - 0.1 * (i % 4)) for i in range(n)], target_repeat or 8
    # the full size's 4096-token context, so long clips are not truncated at the tiny default 512
    tiny = ALARMConfig.tiny("CA", n_encoders=len(ENCODER_NAMES), max_length=4096)  # no identity adapters
    tiny = dataclasses.replace(tiny, fusion=fusion, encoders=keep_encoders(tiny.encoders, fusion, encoders))
    if name == "quick":
        n, s = batch or 4, seconds or 2.0
        return tiny, [s * (1 - 0.1 * (i % 4)) for i in range(n)], target_repeat or 1
    n = batch or 8
    cfg = dataclasses.replace(tiny, llm_config={**tiny.llm_config, "vocab_size": QWEN3_VOCAB})
    return cfg, [float(x) for x in np.linspace(1.0, seconds or 30.0, n)], target_repeat or 1


def parse_rates(text: str) -> list:
    """"1,2,4" -> [1, 2, 4] (distinct ints >= 1); argparse reports anything else as a usage error."""
    try:
        rates = [int(t) for t in text.split(",")]
    except ValueError:
        rates = []
    if not rates or min(rates) < 1 or len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 1 separated by commas, got {text!r}")
    return rates


def parse_choices(allowed, what: str):
    """An argparse type: comma-separated distinct names from ``allowed``."""
    def parse(text: str) -> list:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [n for n in names if n not in allowed]
        if not names or bad or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"expected distinct {what} from {', '.join(allowed)}, got {text!r}")
        return names
    return parse


class OpsSeen(TorchDispatchMode):
    """Records, while active, the backend every ``alarm_kernels`` op ran on (``alarm_kernels.record_backends``) and
    the attention kernels of ATen that ran (SDPA's flash / efficient / cuDNN / math variants)."""

    def __init__(self):
        super().__init__()
        self.attention: set = set()
        self._recording = ak.record_backends()

    def __enter__(self):
        self.backends = self._recording.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._recording.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name:
            self.attention.add(name.split("::", 1)[1])
        return func(*args, **(kwargs or {}))

    def report(self) -> dict:
        return dict(alarm_kernels={k: sorted(v) for k, v in sorted(self.backends.items())},
                    aten_attention=sorted(self.attention))


def peak_tflops(device: torch.device) -> dict:
    """The device's dense peak for MFU: the spec sheet's bf16 figure when known (GPU) and the measured
    throughput of one large matmul (bf16 on GPU, fp32 on CPU; ``bench.ops.measure_ceilings``). MFU is
    reported on GPUs only."""
    from bench.ops import measure_ceilings

    measured = measure_ceilings(device, quick=device.type != "cuda")
    spec = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        spec = next((v for k, v in SPEC_PEAK_TFLOPS.items() if k in name.split()), None)
    return dict(spec_bf16=spec, measured_matmul=measured["matmul_TFLOPs"], measured_dtype=measured["matmul_dtype"],
                device_type=device.type)


def package_versions(names=("triton", "liger-kernel", "torchao")) -> Dict[str, Optional[str]]:
    """Installed versions of the optional packages the step may use (None: not installed)."""
    from importlib import metadata

    out: Dict[str, Optional[str]] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _hf_encoder_config(spec: EncoderSpec):
    """The transformers config of a Whisper / w2v-BERT encoder spec (its ``hf_config``, else its ``path``)."""
    from transformers import AutoConfig, Wav2Vec2BertConfig, WhisperConfig

    if spec.hf_config is not None:
        return (WhisperConfig if spec.kind == "whisper" else Wav2Vec2BertConfig)(**spec.hf_config)
    return AutoConfig.from_pretrained(spec.path)


def encoder_flops(spec: EncoderSpec, encoder, samples: List[int], frames: List[int]) -> Optional[float]:
    """Forward FLOPs of one frozen encoder (``encoder``: the built module) on clips of ``samples`` samples (at its
    rate) giving ``frames`` frames each; None for a kind without a formula. Whisper: one window per
    ``chunk_seconds`` piece, 3000 mel frames each (published) or the piece's own frames (``clip_length``);
    w2v-BERT: 1500-frame chunks at their own lengths (the batch's padding is not counted); MuQ (the stand-in, whose
    shape is known; None for the ``muq`` package's module): one ``chunk_seconds`` window per piece, padded, of
    ``window // hop`` mel frames (the log-mel is not counted); SSLAM: ``ceil(F / piece_frames)`` whole pieces per
    clip of ``F = 1 + (n - 80) // 160`` fbank frames (``SSLAMFrontEnd``'s count)."""
    blocks = max(1, max(spec.layers))
    if spec.kind == "muq":
        shape = getattr(encoder.model, "shape", None)
        if shape is None:
            return None
        window = encoder.front.window
        return muq_flops(shape, [window // shape.hop for n in samples for _ in range(-(-n // window))], blocks)
    if spec.kind == "sslam":
        piece = encoder.front.piece_frames
        fbank = [1 + (n - 80) // 160 for n in samples]
        return sslam_flops(encoder.model.cfg, [piece for f in fbank for _ in range(-(-f // piece))], blocks)
    if spec.kind not in ("whisper", "w2v-bert"):
        return None
    cfg = _hf_encoder_config(spec)
    if spec.kind == "whisper":
        chunk = int(round(spec.chunk_seconds * spec.sample_rate))
        pieces = [min(chunk, n - s) for n in samples for s in range(0, n, chunk)]
        window = 2 * cfg.max_source_positions
        mel = [window if not spec.clip_length else min(window, 2 * (-(-p // 320))) for p in pieces]
        return whisper_flops(cfg, mel, blocks=max(spec.layers))
    chunk = int(round(spec.chunk_seconds * 50))
    chunks = [min(chunk, n - s) for n in frames for s in range(0, n, chunk)]
    return w2v_bert_flops(cfg, chunks, blocks=blocks)


def step_census(model: ALARMModel, text, feats, samples: Dict[str, List[int]], stage: str, encoders_online: bool
                ) -> dict:
    """Shapes and model FLOPs of one step (``bench/flops.py``): LLM tokens and targets, per-clip LLM sequence
    lengths, and FLOPs split into frozen LLM (forward, input-gradient backward), frozen encoders (forward; 0 when
    not run in the step), trainable parts (3x forward: adapters in stage A, the fusion) and their total."""
    cfg = model.config
    frames = source_lengths(feats)
    streams = {s.name: model.audio.adapters[s.name].host_out_lengths(frames[s.name]) for s in cfg.encoders}
    fused = model.audio.fusion.out_lengths([streams[s.name] for s in cfg.encoders])
    device = model.audio.audio_start.device
    with torch.no_grad():  # the packed splice on stand-in audio rows: the exact lengths and target count
        audio = torch.zeros(sum(fused), cfg.llm_hidden, device=device)
        spliced = splice_packed(model.llm.embed(), text, audio, host_cu_seqlens(fused, device), model.audio.audio_start,
                                model.audio.audio_end, cfg.max_length, fused)
    seq = (spliced["cu_seqlens"][1:] - spliced["cu_seqlens"][:-1]).tolist()
    llm = llm_step_flops(model.llm.model.config, seq, spliced["n_targets"])
    enc = 0.0
    if encoders_online:
        per = [encoder_flops(s, model.encoders[s.name], samples[s.name], frames[s.name]) for s in cfg.encoders]
        enc = None if any(x is None for x in per) else sum(per)
    adapters = 0.0
    if stage == "A":
        adapters = sum(adapter_flops(s.adapter, frames[s.name], s.dim, cfg.adapter_dim, cfg.adapter_hidden,
                                     cfg.mlp_hidden, cfg.llm_hidden, s.pool_ratio) for s in cfg.encoders)
    fusion = fusion_flops(cfg.fusion, [streams[s.name] for s in cfg.encoders], cfg.llm_hidden, cfg.ca_dim, cfg.ca_ffn)
    trainable = None if fusion is None else 3 * (adapters + fusion)
    parts = dict(llm_forward=llm["forward"], llm_backward_input_grad=llm["backward"], encoders_forward=enc,
                 trainable_fwd_bwd=trainable)
    total = None if any(v is None for v in parts.values()) else sum(parts.values())
    return dict(llm_tokens=sum(seq), llm_targets=spliced["n_targets"], llm_seq_lens=seq, audio_tokens=fused,
                flops={**parts, "total": total})


def variant_config(cfg: ALARMConfig, variant: str, device: torch.device) -> ALARMConfig:
    """The config of an ``--llm-variants`` entry (the frozen LLM's options)."""
    if variant in ("liger", "compile"):
        return dataclasses.replace(cfg, llm_kernels=variant)
    if variant == "fp8":
        return dataclasses.replace(cfg, llm_fp8="on" if device.type == "cuda" else "emulate")
    return cfg


class Runner:
    """Times steps of several (model, batch, layout) entries side by side and keeps per-entry results."""

    def __init__(self, device: torch.device, clock: str, autocast):
        self.device, self.autocast = device, autocast
        self.clock = time.perf_counter if clock == "wall" else time.process_time

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, model: ALARMModel, batch: ModelBatch, layout: str):
        """One forward + backward; returns (seconds, loss, LLM tokens, peak GiB or None)."""
        cuda = self.device.type == "cuda"
        self._sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = self.clock()
        with self.autocast():
            out = model.forward_batch(batch, layout)
        out.loss.backward()
        self._sync()
        seconds = self.clock() - t0
        for p in model.trainable_parameters().values():
            p.grad = None
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if cuda else None
        return seconds, float(out.loss.detach()), out.n_tokens, peak

    def run(self, entries: Dict[str, tuple], warmup: int, steps: int) -> Dict[str, dict]:
        """entries: name -> (model, batch, layout). Warm-up (the first step also records the ops' backends),
        then ``steps`` timed steps, the entries alternating step by step."""
        res = {k: dict(times=[], peaks=[]) for k in entries}
        for i in range(warmup + steps):
            for name, (model, batch, layout) in entries.items():
                seen = OpsSeen() if i == 0 else contextlib.nullcontext()
                with seen:
                    seconds, loss, tokens, peak = self.step(model, batch, layout)
                if i == 0:
                    res[name]["backends"] = seen.report()
                if i >= warmup:
                    res[name]["times"].append(seconds)
                    res[name]["peaks"].append(peak)
                res[name].update(loss=loss, tokens=tokens)
        return res


def build_row(stage: str, rate: int, path: str, llm: str, r: dict, census: dict, peak: dict) -> dict:
    stats = spread(r["times"])
    flops = census["flops"]["total"]
    tflops = flops / stats["median"] / 1e12 if flops else None
    peaks = [p for p in r["peaks"] if p is not None]
    ref_peak = peak["spec_bf16"] or peak["measured_matmul"]
    gpu = peak["device_type"] == "cuda"  # a shared CPU's wall-clock matmul ceiling says nothing about process time
    return dict(stage=stage, token_rate=rate, path=path, layout="padded" if path == "reference" else "packed",
                llm=llm, steps=len(r["times"]), step_s=stats, step_s_all=r["times"], tokens=r["tokens"],
                tokens_per_s=r["tokens"] / stats["median"], peak_memory_gib=max(peaks) if peaks else None,
                loss=r["loss"], backends=r["backends"], model_flops=flops, model_tflops_per_s=tflops,
                mfu=tflops / ref_peak if tflops and gpu else None,
                mfu_vs_measured_matmul=tflops / peak["measured_matmul"] if tflops and gpu else None)


def compare_rows(rows: List[dict]) -> None:
    """Add to each fast row its speed-up, memory ratio and loss difference against the reference of its stage and
    rate, and to each LLM-variant row its loss difference against the plain fast path."""
    for row in rows:
        same = [r for r in rows if r["stage"] == row["stage"] and r["token_rate"] == row["token_rate"]]
        ref = next((r for r in same if r["path"] == "reference"), None)
        if row["path"] == "fast" and ref is not None:
            row["speedup_vs_reference"] = ref["step_s"]["median"] / row["step_s"]["median"]
            row["loss_abs_diff_vs_reference"] = abs(ref["loss"] - row["loss"])
            if ref["peak_memory_gib"] and row["peak_memory_gib"]:
                row["memory_vs_reference"] = row["peak_memory_gib"] / ref["peak_memory_gib"]
        plain = next((r for r in same if r["path"] == "fast" and r["llm"] == "none"), None)
        if row["llm"] != "none" and plain is not None:
            row["speedup_vs_fast_none"] = plain["step_s"]["median"] / row["step_s"]["median"]
            row["loss_abs_diff_vs_fast_none"] = abs(plain["loss"] - row["loss"])
            row["loss_rel_diff_vs_fast_none"] = abs(plain["loss"] - row["loss"]) / max(abs(plain["loss"]), 1e-12)


def fastest_llm_variants(rows: List[dict]) -> Dict[str, str]:
    """Per stage and rate with more than one fast-path LLM option: the option with the lowest median step."""
    out = {}
    for key in {(r["stage"], r["token_rate"]) for r in rows}:
        fast = [r for r in rows if (r["stage"], r["token_rate"]) == key and r["path"] == "fast"]
        if len(fast) > 1:
            out[f"{key[0]}@{key[1]}"] = min(fast, key=lambda r: r["step_s"]["median"])["llm"]
    return dict(sorted(out.items()))


def print_rows(rows: List[dict], censuses: Dict[str, dict]) -> None:
    for key, c in censuses.items():
        f = c["flops"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3e}"  # noqa: E731
        print(f"FLOPs stage {key}: LLM fwd {fmt(f['llm_forward'])} + LLM input-grad bwd "
              f"{fmt(f['llm_backward_input_grad'])} + encoders fwd {fmt(f['encoders_forward'])} + trainable fwd+bwd "
              f"{fmt(f['trainable_fwd_bwd'])} = {fmt(f['total'])} ({c['llm_tokens']} LLM tokens, "
              f"{c['llm_targets']} targets)")
    print(f"{'stage':>5} {'rate':>4} {'path':<9} {'llm':<8} {'median s':>9} {'p10-p90 s':>17} {'tokens/s':>9} "
          f"{'peak GiB':>8} {'MFU':>6} {'loss':>9} {'x ref':>6}")
    for r in rows:
        s = r["step_s"]
        mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        x = f"{r['speedup_vs_reference']:.2f}" if "speedup_vs_reference" in r else ""
        print(f"{r['stage']:>5} {r['token_rate']:>4} {r['path']:<9} {r['llm']:<8} {s['median']:>9.4f} "
              f"{s['p10']:>8.4f}-{s['p90']:<8.4f} {r['tokens_per_s']:>9.0f} {mem:>8} {mfu:>6} {r['loss']:>9.5f} {x:>6}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default="e2e_step", help="result file name without .json (default e2e_step)")
    ap.add_argument("--config", choices=CONFIGS, default=None, help="full (GPU, default), quick or mixed-cpu (CPU)")
    ap.add_argument("--quick", action="store_true", help="same as --config quick")
    ap.add_argument("--fusion", default="CA", choices=["sum", "concat", "CA", "P"])
    ap.add_argument("--stages", type=parse_choices(("A", "B"), "stages"), default=["A", "B"],
                    help="A: encoders online (or --cached-features), B: the adapter-output cache (default A,B)")
    ap.add_argument("--token-rates", type=parse_rates, default=[1, 2, 4],
                    help="audio token rate ratios (ALARMConfig.token_rate_ratio; 1 = 25 Hz), default 1,2,4")
    ap.add_argument("--llm-variants", type=parse_choices(LLM_VARIANTS, "variants"), default=["none"],
                    help="fast-path rows per frozen-LLM option: none, liger, compile, fp8 (default none)")
    ap.add_argument("--encoders", type=parse_choices(ENCODER_NAMES, "encoders"), default=list(ENCODER_NAMES),
                    help="the frozen encoders, a subset of whisper,w2v-bert,muq,sslam (default all four, as ALARM-CA)")
    ap.add_argument("--batch", type=int, default=None, help="clips per step (default 8 full/mixed-cpu, 4 quick)")
    ap.add_argument("--seconds", type=float, default=None, help="longest clip (default 20 full, 2 quick, 30 mixed)")
    ap.add_argument("--target-repeat", type=int, default=None, help="target text repeats (default 8 full, else 1)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per row first (default 2)")
    ap.add_argument("--cached-features", action="store_true",
                    help="stage A from encoder features computed once (the step then excludes the encoders)")
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="wall time (device synced), or this process's CPU time (a shared CPU, one thread)")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                    help="profile one fast-path step per stage (torch.profiler; default on)")
    ap.add_argument("--device", default=None, help="default: cuda for full, cpu otherwise")
    args = ap.parse_args(argv)
    config = "quick" if args.quick else args.config or "full"
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be >= 1 (the first warm-up step records the backends)")
    device = torch.device(args.device or ("cuda" if config == "full" else "cpu"))
    if config == "full" and device.type != "cuda":
        print("e2e_step: --config full needs a GPU; use --config quick or mixed-cpu on CPU", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("e2e_step: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    try:
        cfg, seconds, repeat = bench_setup(config, args.fusion, args.batch, args.seconds, args.target_repeat,
                                           args.encoders)
    except ValueError as exc:
        print(f"e2e_step: --encoders {','.join(args.encoders)} with --fusion {args.fusion}: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    clips = [torch.from_numpy(c) for c in synthetic_audio(seconds, seed=0)]
    rates = [16000] * len(clips)
    prompts = [f"Question {i}: what do you hear, and why?" for i in range(len(clips))]
    targets = [TARGET * repeat for _ in clips]
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
        else contextlib.nullcontext
    runner = Runner(device, args.clock, autocast)
    peak = peak_tflops(device)
    rows: List[dict] = []
    censuses: Dict[str, dict] = {}
    profiles: Dict[str, dict] = {}
    unavailable: Dict[str, str] = {}
    shared: dict = {}
    feats = None
    in_workers: List[str] = []  # encoders whose front ends the trainer's DataLoader workers would compute
    sha, dirty = git_state()
    result_path = os.path.join(args.out, f"{args.name}.json")

    def write_report(complete: bool) -> dict:
        """The result file, rewritten after every (stage, rate): a run cut short keeps what it measured."""
        compare_rows(rows)
        report = dict(
            bench="e2e_step", complete=complete, config=config, fusion=args.fusion,
            encoders=[e.name for e in cfg.encoders], front_ends_in_workers=in_workers, batch=len(clips),
            clip_seconds=seconds, target_repeat=repeat, stages=args.stages, token_rates=args.token_rates,
            llm_vocab=shared["llm"].model.config.vocab_size if shared else None, llm_variants=args.llm_variants,
            llm_variants_unavailable=unavailable,
            cached_features=args.cached_features, steps=args.steps, warmup=args.warmup, clock=args.clock,
            threads=torch.get_num_threads(),
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            torch=torch.__version__, transformers=__import__("transformers").__version__, cuda=torch.version.cuda,
            python=platform.python_version(), packages=package_versions(), git_sha=sha, git_dirty=dirty,
            attention=dict(
                llm_packed="alarm_packed (alarm_kernels.packed_attention)", llm_padded="sdpa (torch SDPA)",
                fusion_packed="alarm_kernels.packed_attention", fusion_padded="torch SDPA"),
            peak_tflops=peak, census=censuses, rows=rows, fastest_llm_variant=fastest_llm_variants(rows),
            profile=profiles,
            max_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            note="peak_memory_gib: torch.cuda.max_memory_allocated per step (max over the timed steps); not measured "
                 "on CPU (max_rss_gib is the whole process's). MFU: model_flops / median step time / peak_tflops "
                 "(spec_bf16 when known, else measured_matmul); GPU only.")
        atomic_write_json(result_path, report)
        return report
    for stage in args.stages:
        for rate in args.token_rates:
            stage_cfg = dataclasses.replace(cfg, stage=stage, token_rate_ratio=rate)
            with torch.device(device):
                model = ALARMModel(stage_cfg, **shared).to(device).train()
            shared = dict(tokenizer=model.tokenizer, llm=model.llm)
            text = tokenize_batch(model.tokenizer, prompts, targets, device=device)
            if feats is None:  # the same frozen encoders (same seed) at every stage and rate
                feats = model.encode(clips, rates)
            frames = source_lengths(feats)
            if stage == "B":
                with torch.no_grad():
                    streams = model.adapter_streams(feats, frames)
                batch = ModelBatch(text, streams=streams, lengths=source_lengths(streams))
            elif args.cached_features:
                batch = ModelBatch(text, features=feats, lengths=frames)
            else:  # as the trainer's DataLoader gives it: front ends that are not device kernels already computed
                workers = model.worker_front_ends(device)
                in_workers[:] = [] if workers is None else list(workers.front_ends)
                prepared = None if workers is None else {k: p.to(device) for k, p in workers(clips, rates).items()}
                keep = dict(waves=clips, rates=rates) if workers is None or workers.partial else {}
                batch = ModelBatch(text, prepared=prepared, **keep)
            online = stage == "A" and not args.cached_features
            samples = {s.name: [int(round(c.numel() * s.sample_rate / 16000)) for c in clips] for s in cfg.encoders}
            census = step_census(model, text, feats, samples, stage, online)
            censuses[f"{stage}@{rate}"] = census
            entries = {("reference", "none"): (model, batch, "padded"), ("fast", "none"): (model, batch, "packed")}
            variants = {}
            for v in args.llm_variants:
                if v != "none" and v not in unavailable:
                    try:
                        with torch.device(device):
                            variants[v] = ALARMModel(variant_config(stage_cfg, v, device), tokenizer=model.tokenizer
                                                     ).to(device).train()
                    except ImportError as exc:  # its optional package is not installed: say so, time the rest
                        unavailable[v] = str(exc).split("; import failed")[0]
                        print(f"e2e_step: llm variant {v} skipped: {unavailable[v]}", file=sys.stderr)
                        continue
                    entries[("fast", v)] = (variants[v], batch, "packed")
            print(f"stage {stage}, rate {rate}: timing {len(entries)} rows x {args.steps} steps "
                  f"(+{args.warmup} warm-up)", flush=True)
            res = runner.run(entries, args.warmup, args.steps)
            for (path, llm), r in res.items():
                rows.append(build_row(stage, rate, path, llm, r, census, peak))
            if args.profile and rate == args.token_rates[0]:
                from bench.step_profile import profile_step

                profiles[stage] = profile_step(lambda m=model, b=batch: runner.step(m, b, "packed"), device,
                                               os.path.join(args.out, f"profile_stage{stage}_fast"))
            del variants, entries, res
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write_report(complete=False)
    report = write_report(complete=True)
    print(f"device {report['device']}, {args.clock} clock, {report['threads']} threads, peak "
          f"{peak['spec_bf16'] or '?'} TFLOP/s spec, {peak['measured_matmul']:.3g} measured ({peak['measured_dtype']})")
    print_rows(rows, censuses)
    print(f"-> {result_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``alarm demo``: ALARM's principle at toy scale, on a CPU, with nothing downloaded.

1. Train a tiny Qwen3 on the *text* form of a synthetic sound world (description + question -> answer),
   then freeze it (``alarm.demo.text_lm``).
2. Write a corpus of synthetic clips (WAV) and a training manifest of questions about them.
3. Build an ALARM model around the frozen LM (two frozen random tiny encoders, CA fusion, trainable
   adapters), cache the frozen encoders' features (``alarm.train.cache``), and train the audio side with
   the project's trainer (``alarm.train``) from a recipe file.
4. Report multiple-choice accuracy from audio before and after training, next to the text-form ceiling.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import soundfile as sf
import torch

from alarm.data.manifest import ManifestRecord, write_manifest
from alarm.fileio import atomic_write, atomic_write_json
from alarm.model import ALARMModel, ModelBatch
from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX, text_batch_from_ids
from alarm.model.tiny import tiny_tokenizer
from alarm.train.cache import build_cache
from alarm.train.config import build_model_config, load_config
from alarm.train.data import load_examples
from alarm.train.loop import train

from .synth import RATE, Question, describe, make_clip, questions_for
from .text_lm import text_accuracy, train_text_lm

__all__ = ["run_demo", "write_corpus", "RECIPE"]

RECIPE = Path(__file__).resolve().parent.parent / "train" / "recipes" / "demo.yaml"


def write_corpus(folder: Path, n_clips: int, seed: int) -> Tuple[Path, List[Tuple[str, Question]]]:
    """WAV clips + ``folder/manifest.jsonl`` (one record per question); returns (manifest, [(wav, question)])."""
    rng = np.random.default_rng(seed)
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    records, items = [], []
    for c in range(n_clips):
        clip = make_clip(rng)
        wav = audio / f"clip-{c:05d}.wav"
        atomic_write(wav, lambda p, x=clip.samples: sf.write(p, x, RATE, subtype="PCM_16", format="WAV"))
        for q in questions_for(clip, rng):
            records.append(ManifestRecord(id=f"{wav.stem}-{q.topic}", audio=str(wav.relative_to(folder)),
                                          duration=len(clip.samples) / RATE, dataset=q.topic,
                                          description=describe(clip), prompt=q.prompt,
                                          target=q.options[q.answer]))
            items.append((str(wav), q))
    manifest = folder / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest, items


def _repeat_features(feats: dict, which: List[int]) -> dict:
    """Packed encoder features for a batch whose example j uses clip ``which[j]`` of ``feats``."""
    out = {}
    for name, (layers, cu) in feats.items():
        bounds = cu.tolist()
        lens = [bounds[c + 1] - bounds[c] for c in which]
        new_cu = torch.zeros(len(which) + 1, dtype=torch.int32)
        new_cu[1:] = torch.tensor(lens).cumsum(0)
        out[name] = ([torch.cat([x[bounds[c]:bounds[c + 1]] for c in which]) for x in layers], new_cu)
    return out


@torch.no_grad()
def audio_accuracy(model: ALARMModel, items: List[Tuple[str, Question]], batch_clips: int = 8) -> dict:
    """Accuracy from audio: each of a question's options scored by its summed log-prob given the clip
    (each clip is encoded once for all its questions and options)."""
    tok = model.tokenizer
    prefix = tok.encode(USER_PREFIX, add_special_tokens=False)
    header_len = len(tok.encode(ASSISTANT_SUFFIX, add_special_tokens=False))
    by_clip: dict = {}
    for wav, q in items:
        by_clip.setdefault(wav, []).append(q)
    model.eval()
    hits: dict = {}
    wavs = list(by_clip)
    for start in range(0, len(wavs), batch_clips):
        chunk = wavs[start:start + batch_clips]
        feats = model.encode([torch.from_numpy(sf.read(w, dtype="float32")[0]) for w in chunk], [RATE] * len(chunk))
        which, suffixes, targets, asked = [], [], [], []
        for c, wav in enumerate(chunk):
            for q in by_clip[wav]:
                asked.append(q)
                for option in q.options:
                    which.append(c)
                    suffixes.append(tok.encode(q.prompt + ASSISTANT_SUFFIX, add_special_tokens=False))
                    targets.append(tok.encode(option, add_special_tokens=False))
        text = text_batch_from_ids(prefix, suffixes, targets, header_len)
        scores = model.score_targets(ModelBatch(text, features=_repeat_features(feats, which))).view(-1, 4)
        for q, row in zip(asked, scores, strict=True):
            hits.setdefault(q.topic, []).append(int(row.argmax()) == q.answer)
    model.train()
    every = [h for v in hits.values() for h in v]
    return {"all": float(np.mean(every)), **{k: float(np.mean(v)) for k, v in sorted(hits.items())}}


def run_demo(out_dir: str = "out/demo", text_steps: int = 400, train_clips: int = 3000, eval_clips: int = 100,
             overrides: Tuple[str, ...] = (), seed: int = 0) -> dict:
    """The whole demo; returns (and writes to ``<out_dir>/demo.json``) its summary."""
    t0 = time.perf_counter()
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # the demo's own lines only (no weight-loading bars)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    manifest, lm_dir, cache_dir = out / "train" / "manifest.jsonl", out / "text-lm", out / "cache"
    cfg = load_config(str(RECIPE), [f"data.train_manifest={manifest}", f"run.out_dir={out / 'run'}",
                                    f"model.llm_path={lm_dir}", f"data.cache={cache_dir}",
                                    f"data.eval_manifest={out / 'eval' / 'manifest.jsonl'}", *overrides])
    model_cfg = build_model_config(cfg.model)

    print("== 1. a tiny reasoning LM learns the sound world from text ==", flush=True)
    tokenizer = tiny_tokenizer(model_cfg.tiny_tokenizer_vocab)
    from transformers import Qwen3Config, Qwen3ForCausalLM
    lm = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tokenizer), attention_dropout=0.0, **model_cfg.llm_config))
    train_text_lm(lm, tokenizer, steps=text_steps, seed=seed)
    text_acc = text_accuracy(lm, tokenizer, n_clips=eval_clips)
    lm.save_pretrained(str(lm_dir))
    print(f"text-form accuracy: {text_acc:.1%}; LM frozen and saved to {lm_dir} "
          f"({time.perf_counter() - t0:.0f} s so far)", flush=True)

    print("\n== 2. synthetic audio corpus ==", flush=True)
    write_corpus(manifest.parent, train_clips, seed + 1)
    _, eval_items = write_corpus(out / "eval", eval_clips, seed + 2)
    print(f"{train_clips} training clips ({3 * train_clips} questions) in {manifest}; "
          f"{len(eval_items)} held-out questions", flush=True)

    print("\n== 3. ALARM audio side trained with alarm.train (the LM stays frozen) ==", flush=True)
    model = ALARMModel(model_cfg, tokenizer=tokenizer)
    before = audio_accuracy(model, eval_items)
    print(f"accuracy from audio before training: {before['all']:.1%} ({time.perf_counter() - t0:.0f} s so far)",
          flush=True)
    examples = [e for m in (manifest, cfg.data.eval_manifest)  # held-out clips too: eval loss per question type
                for e in load_examples(str(m), tokenizer, cfg.data.max_seconds)[0]]
    build_cache(model, examples, str(cache_dir), level="encoder", progress=False)
    summary = train(cfg, resume="never", model=model)
    after = audio_accuracy(model, eval_items)
    result = {"text_accuracy": text_acc, "audio_accuracy_before": before, "audio_accuracy_after": after,
              "train": summary, "seconds": time.perf_counter() - t0}
    atomic_write_json(out / "demo.json", result)
    topics = ", ".join(f"{k} {v:.0%}" for k, v in after.items() if k != "all")
    print(f"\nper question type after training: {topics}")
    print(f"loss curve: {summary.get('plot')}; run folder: {out / 'run'}; {result['seconds']:.0f} s in all")
    print(f"accuracy from audio: {after['all']:.0%} (before training {before['all']:.0%}, chance 25%, "
          f"text ceiling {text_acc:.0%})", flush=True)
    return json.loads(json.dumps(result, default=str))

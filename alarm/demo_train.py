"""The tiny ALARM training run of ``alarm demo``: synthetic audio, random tiny encoders and Qwen3, no
downloads. Both execution paths start from the same parameters and take the same AdamW steps; their
losses are printed side by side, then the trained model is saved, reloaded and asked a question under a
thinking budget."""
from __future__ import annotations

import copy
import json
import os
import time

import torch

from alarm.model import ALARMModel
from alarm.model.tiny import synthetic_audio, tiny_model

PROMPTS = ["What do you hear in this clip?", "Describe the sounds.", "Is there music?", "How long is the clip?"]
TARGETS = [
    "I hear a steady chord of a few tones with a little hiss behind it.",
    "It sounds like several pure tones played together over soft noise.",
    "Not really music: a sustained chord of sine tones, nothing rhythmic.",
    "The clip is short, about a second or two of tones and noise.",
]


def train_tiny(steps: int = 4, out_dir: str = "out/demo", fusion: str = "CA", seed: int = 0) -> dict:
    """Train the tiny ``fusion`` model for ``steps`` steps on both paths; returns (and writes) a summary."""
    torch.manual_seed(seed)
    audio = synthetic_audio([1.0, 1.7, 0.6, 2.3], seed=seed)
    fast = tiny_model(fusion)
    reference = copy.deepcopy(fast)
    summary = {"fusion": fusion, "steps": steps, "trainable_parameters": sum(
        p.numel() for p in fast.trainable_parameters().values()), "loss": {"fast": [], "reference": []}}
    print(f"tiny ALARM-{fusion}: {summary['trainable_parameters']:,} trainable parameters, {len(audio)} clips")
    for name, model in (("reference", reference), ("fast", fast)):
        model.train()
        optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-3, weight_decay=0.0)
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            out = model(audio, 16000, PROMPTS, TARGETS, path=name)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters().values(), 1.0)
            optimizer.step()
            summary["loss"][name].append(out.loss.item())
        summary[f"{name}_seconds"] = time.perf_counter() - start
    print("step | reference loss | fast loss")
    for i, (r, f) in enumerate(zip(summary["loss"]["reference"], summary["loss"]["fast"])):
        print(f"{i:4d} | {r:14.6f} | {f:9.6f}")
    gap = max(abs(r - f) for r, f in zip(summary["loss"]["reference"], summary["loss"]["fast"]))
    summary["max_loss_gap"] = gap
    print(f"max |reference - fast| loss over {steps} steps: {gap:.2e}")

    folder = os.path.join(out_dir, f"tiny-alarm-{fusion}")
    fast.save_pretrained(folder)
    reloaded = ALARMModel.from_pretrained(folder).eval()
    answer = reloaded.generate(audio[0], PROMPTS[0], max_thinking_tokens=8, max_new_tokens=24, do_sample=False)
    summary["generation"] = answer["text"][0]
    print(f"saved to {folder}; reloaded model answers (random weights, so gibberish): {answer['text'][0]!r}")
    with open(os.path.join(out_dir, "train_tiny.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary

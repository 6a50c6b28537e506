"""Tiny, download-free pieces for tests and demos.

``tiny_tokenizer`` is the project's in-memory byte-level BPE tokenizer (``alarm.testing_tokenizer``:
trained on a small built-in text, wrapped in ``PreTrainedTokenizerFast``) with Qwen's chat special tokens
``<|im_start|>``, ``<|im_end|>``, ``<think>``, ``</think>`` (+ ``<|endoftext|>``, ``<answer>``, ``</answer>``).
``tiny_model`` builds a random tiny ALARM model (tiny Whisper, tiny w2v-BERT, tiny Qwen3) on CPU in seconds.
``synthetic_audio`` makes deterministic test clips (tones + noise) with numpy.
"""
from __future__ import annotations

from typing import List

import numpy as np

from alarm.testing_tokenizer import build_tiny_tokenizer

__all__ = ["tiny_tokenizer", "tiny_model", "synthetic_audio"]


def tiny_tokenizer(vocab_size: int = 384):
    """A fresh tiny ``PreTrainedTokenizerFast`` with the Qwen chat special tokens (deterministic)."""
    return build_tiny_tokenizer(vocab_size)


def tiny_model(fusion: str = "CA", **kw):
    """A random tiny ``ALARMModel`` (``ALARMConfig.tiny(fusion, **kw)``)."""
    from .alarm_model import ALARMModel
    from .config import ALARMConfig
    return ALARMModel(ALARMConfig.tiny(fusion, **kw))


def synthetic_audio(seconds: List[float], rate: int = 16000, seed: int = 0) -> List[np.ndarray]:
    """float32 clips: a chord of random tones plus a little noise, one per duration."""
    rng = np.random.default_rng(seed)
    clips = []
    for s in seconds:
        t = np.arange(int(round(s * rate))) / rate
        f = rng.uniform(100, 2000, size=3)
        x = sum(np.sin(2 * np.pi * fi * t) for fi in f) / 3 + 0.05 * rng.standard_normal(t.size)
        clips.append(x.astype(np.float32))
    return clips

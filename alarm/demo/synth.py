"""The demo's synthetic sound world: short clips of 1-4 sound bursts, each clip with a text description
and three kinds of four-option questions about it (how many, how high, what kind).

Every clip is drawn from a seeded numpy generator: a count of bursts (1-4), a pitch band (4 bands between
150 Hz and 4 kHz) and a sound kind (pure tone, band-pass noise, rising chirp, falling chirp), with random
loudness, burst length (0.12-0.2 s), burst positions and clip duration (1-2 s), plus a little noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

__all__ = ["COUNTS", "PITCHES", "KINDS", "QUESTIONS", "Attributes", "Clip", "sample_attributes", "make_clip",
           "Question", "questions_for", "describe"]

RATE = 16000
COUNTS = ["one", "two", "three", "four"]
PITCHES = ["very low", "low", "high", "very high"]
_BANDS = [(150, 250), (400, 650), (1000, 1600), (2500, 4000)]
KINDS = ["pure tone", "noise", "rising chirp", "falling chirp"]
QUESTIONS = {
    "count": ("How many sounds are there?", COUNTS),
    "pitch": ("How high is the pitch?", PITCHES),
    "kind": ("What kind of sound is it?", KINDS),
}


@dataclass(frozen=True)
class Attributes:
    """What a clip is made of (indices into ``COUNTS``, ``PITCHES``, ``KINDS``)."""
    count: int
    pitch: int
    kind: int


@dataclass(frozen=True)
class Clip(Attributes):
    """A synthetic clip: its attributes and float32 samples at ``RATE`` Hz."""
    samples: np.ndarray = None


def sample_attributes(rng: np.random.Generator) -> Attributes:
    """Random attributes (what the text LM trains on: no audio is synthesised)."""
    count, pitch, kind = (int(v) for v in rng.integers(0, 4, size=3))
    return Attributes(count, pitch, kind)


def _burst(rng: np.random.Generator, kind: int, band: Tuple[int, int], n: int) -> np.ndarray:
    t = np.arange(n) / RATE
    lo, hi = band
    if kind == 0:
        x = np.sin(2 * np.pi * rng.uniform(lo, hi) * t)
    elif kind == 1:
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        spec[(freqs < lo) | (freqs > hi)] = 0
        x = np.fft.irfft(spec, n)
        x /= np.abs(x).max() + 1e-9
    else:
        f0, f1 = (lo, hi) if kind == 2 else (hi, lo)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * t[-1]))
        x = np.sin(phase)
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * RATE))
    return x * ramp


def make_clip(rng: np.random.Generator) -> Clip:
    """One random clip."""
    count, pitch, kind = (lambda a: (a.count, a.pitch, a.kind))(sample_attributes(rng))
    duration = rng.uniform(1.0, 2.0)
    total = int(duration * RATE)
    x = 0.01 * rng.standard_normal(total)
    lengths = [int(rng.uniform(0.12, 0.2) * RATE) for _ in range(count + 1)]
    slot = total // (count + 1)
    for i, n in enumerate(lengths):
        start = i * slot + int(rng.uniform(0, max(1, slot - n)))
        x[start:start + n] += rng.uniform(0.3, 0.8) * _burst(rng, kind, _BANDS[pitch], n)
    return Clip(count, pitch, kind, np.clip(x, -1, 1).astype(np.float32))


def describe(clip: Attributes) -> str:
    """The clip as text (what the text LM reads in place of audio)."""
    noun = clip_kind = KINDS[clip.kind]
    plural = "s" if clip.count > 0 else ""
    noun = f"{clip_kind} burst{plural}" if clip_kind != "noise" else f"noise burst{plural}"
    return f"{COUNTS[clip.count]} {PITCHES[clip.pitch]} {noun}"


@dataclass(frozen=True)
class Question:
    """A four-option question: prompt text (question + options), the options and the correct index."""
    prompt: str
    options: Tuple[str, ...]
    answer: int
    topic: str


def questions_for(clip: Attributes, rng: np.random.Generator) -> List[Question]:
    """One question per topic, options shuffled."""
    truth = {"count": clip.count, "pitch": clip.pitch, "kind": clip.kind}
    out = []
    for topic, (text, options) in QUESTIONS.items():
        order = rng.permutation(4)
        shuffled = tuple(options[i] for i in order)
        answer = int(np.nonzero(order == truth[topic])[0][0])
        prompt = f"{text} Options: " + ", ".join(shuffled) + "."
        out.append(Question(prompt, shuffled, answer, topic))
    return out

"""Tiny, download-free pieces for tests and demos.

``tiny_tokenizer`` is the project's in-memory byte-level BPE tokenizer (``alarm.testing_tokenizer``:
trained on a small built-in text, wrapped in ``PreTrainedTokenizerFast``) with Qwen's chat special tokens
``<|im_start|>``, ``<|im_end|>``, ``<think>``, ``</think>`` (+ ``<|endoftext|>``, ``<answer>``, ``</answer>``).
``tiny_model`` builds a random tiny ALARM model (tiny Whisper, tiny w2v-BERT, tiny Qwen3) on CPU in seconds.
``synthetic_audio`` makes deterministic test clips (tones + noise) with numpy.
``TinyMuQ`` is a random module with MuQ's structure (``.model.preprocessing / normalize / conv / conformer``),
the stand-in that lets the "muq" encoder kind run without the ``muq`` package (tests, CPU demos).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from torch import Tensor, nn

from alarm.testing_tokenizer import build_tiny_tokenizer

__all__ = ["tiny_tokenizer", "tiny_model", "synthetic_audio", "TinyMuQ"]


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


class _TinyMuQCore(nn.Module):
    """MuQModel's feature path in miniature: ``preprocessing`` (centred STFT, power, a random filterbank, dB,
    last frame dropped: ``[B, n_mels, n // hop]``), ``normalize`` (fixed statistics), ``conv`` (two stride-2
    convolutions over mel x time, then a projection: ``[B, ceil(T / 4), dim]``) and ``conformer`` (transformers'
    ``Wav2Vec2ConformerEncoder``, rotary positions)."""

    def __init__(self, dim: int, layers: int, heads: int, n_mels: int, n_fft: int, hop: int):
        super().__init__()
        from transformers import Wav2Vec2ConformerConfig
        from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

        self.n_fft, self.hop = n_fft, hop
        sub_mels = ((n_mels + 1) // 2 + 1) // 2  # mel bins left after the two stride-2 convolutions
        self.register_buffer("mel_bank", torch.rand(n_fft // 2 + 1, n_mels) / n_fft)
        self.stat = {"melspec_2048_mean": -20.0, "melspec_2048_std": 15.0}
        self.conv = nn.Sequential(nn.Unflatten(1, (1, n_mels)), nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Flatten(1, 2),
                                  _Transpose(), nn.Linear(4 * sub_mels, dim))
        self.conformer = Wav2Vec2ConformerEncoder(Wav2Vec2ConformerConfig(
            hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * dim,
            conv_depthwise_kernel_size=5, position_embeddings_type="rotary", hidden_dropout=0.0,
            attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0))

    @torch.no_grad()
    def preprocessing(self, x: Tensor, features: List[str]) -> Dict[str, Tensor]:
        window = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x.float(), self.n_fft, self.hop, window=window, center=True, return_complex=True)
        mel = (spec.abs() ** 2).transpose(-1, -2) @ self.mel_bank.float()
        db = 10 * torch.log10(mel.clamp(min=1e-10)).transpose(-1, -2)
        return {key: db[..., :-1] for key in features}

    @torch.no_grad()
    def normalize(self, x: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return {k: (v - self.stat[f"{k}_mean"]) / self.stat[f"{k}_std"] for k, v in x.items()}


class _Transpose(nn.Module):
    def forward(self, x: Tensor) -> Tensor:  # [B, C, T] -> [B, T, C]
        return x.transpose(1, 2)


class TinyMuQ(nn.Module):
    """A random MuQ stand-in (``.model`` as in ``muq.MuQ``) at 24 kHz and 25 Hz: hop 240, 4x subsampling."""

    def __init__(self, dim: int = 32, layers: int = 2, heads: int = 2, n_mels: int = 16, n_fft: int = 512,
                 hop: int = 240):
        super().__init__()
        self.model = _TinyMuQCore(dim, layers, heads, n_mels, n_fft, hop)

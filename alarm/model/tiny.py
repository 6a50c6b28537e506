"""Tiny, download-free pieces for tests and demos.

``tiny_tokenizer`` is the project's in-memory byte-level BPE tokenizer (``alarm.testing_tokenizer``:
trained on a small built-in text, wrapped in ``PreTrainedTokenizerFast``) with Qwen's chat special tokens
``<|im_start|>``, ``<|im_end|>``, ``<think>``, ``</think>`` (+ ``<|endoftext|>``, ``<answer>``, ``</answer>``).
``tiny_model`` builds a random tiny ALARM model (tiny Whisper, tiny w2v-BERT, tiny Qwen3) on CPU in seconds.
``synthetic_audio`` makes deterministic test clips (tones + noise) with numpy.
``TinyMuQ`` is a random module with MuQ's structure (``.model.preprocessing / normalize / conv / conformer``),
the stand-in that lets the "muq" encoder kind run without the ``muq`` package (tests, CPU demos, and at
MuQ-large's shape the full-size benchmark).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from alarm.testing_tokenizer import build_tiny_tokenizer

__all__ = ["tiny_tokenizer", "tiny_model", "synthetic_audio", "TinyMuQ", "MuQShape"]


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


@dataclass(frozen=True)
class MuQShape:
    """The shape of a MuQ-structured module: conformer width ``dim``, ``layers`` blocks of ``heads`` heads, FFN
    ``ffn`` (default ``2 * dim``), depthwise kernel ``kernel``; log-mel of ``n_mels`` bins (``n_fft``, ``hop``
    samples); convolutional subsampling with ``conv_channels`` channels. MuQ-large (``OpenMuQ/MuQ-large-msd-iter``):
    dim 1024, 12 layers, 128 mels, n_fft 2048, hop 240, 512 channels (``muq.MuQConfig``'s ``encoder_dim``,
    ``encoder_depth``, ``n_mels``, ``hop_length``, ``conv_dim``)."""
    dim: int = 32
    layers: int = 2
    heads: int = 2
    n_mels: int = 16
    n_fft: int = 512
    hop: int = 240
    ffn: Optional[int] = None
    kernel: int = 5
    conv_channels: int = 4

    @property
    def ffn_dim(self) -> int:
        return self.ffn or 2 * self.dim


class _ResidualConv2d(nn.Module):
    """MuQ's residual 2-D convolution block: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + bn3(conv3 x))``, 3 x 3
    kernels, ``conv1`` and the shortcut ``conv3`` with stride 2 over (mel, time)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout)
        self.conv3, self.bn3 = nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.bn3(self.conv3(x)))


class _Subsampling(nn.Module):
    """MuQ's 4x convolutional subsampling: two residual blocks over the ``[n_mels, T]`` image, then
    ``Linear(channels * ceil(ceil(n_mels / 2) / 2) -> dim)`` on the (channel, mel) features of each time step:
    ``[B, n_mels, T] -> [B, ceil(ceil(T / 2) / 2), dim]``."""

    def __init__(self, n_mels: int, channels: int, dim: int):
        super().__init__()
        bands = ((n_mels + 1) // 2 + 1) // 2  # mel bins left after the two stride-2 convolutions
        self.conv = nn.Sequential(_ResidualConv2d(1, channels), _ResidualConv2d(channels, channels))
        self.linear = nn.Linear(channels * bands, dim)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv(mel.unsqueeze(1))  # [B, C, F', T']
        return self.linear(x.permute(0, 3, 1, 2).flatten(2))  # [B, T', C * F'] (channel-major, as MuQ)


class _TinyMuQCore(nn.Module):
    """MuQModel's feature path: ``preprocessing`` (centred STFT, power, a random filterbank, dB, last frame
    dropped: ``[B, n_mels, n // hop]``), ``normalize`` (fixed statistics), ``conv`` (:class:`_Subsampling`:
    ``[B, ceil(T / 4), dim]``) and ``conformer`` (transformers' ``Wav2Vec2ConformerEncoder``, rotary positions)."""

    def __init__(self, shape: MuQShape):
        super().__init__()
        from transformers import Wav2Vec2ConformerConfig
        from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

        self.n_fft, self.hop = shape.n_fft, shape.hop
        self.register_buffer("mel_bank", torch.rand(shape.n_fft // 2 + 1, shape.n_mels) / shape.n_fft)
        self.stat = {"melspec_2048_mean": -20.0, "melspec_2048_std": 15.0}
        self.conv = _Subsampling(shape.n_mels, shape.conv_channels, shape.dim)
        self.conformer = Wav2Vec2ConformerEncoder(Wav2Vec2ConformerConfig(
            hidden_size=shape.dim, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
            intermediate_size=shape.ffn_dim, conv_depthwise_kernel_size=shape.kernel,
            position_embeddings_type="rotary", hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            feat_proj_dropout=0.0))

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


class TinyMuQ(nn.Module):
    """A random MuQ stand-in (``.model`` as in ``muq.MuQ``) at 24 kHz and 25 Hz (hop 240, 4x subsampling), of any
    :class:`MuQShape` (keyword arguments; default tiny, for tests). At MuQ-large's shape it does MuQ-large's
    work (the full-size benchmark, ``bench/e2e_step.py``); only the weights and the mel filterbank are random."""

    def __init__(self, **shape):
        super().__init__()
        self.shape = MuQShape(**shape)
        self.model = _TinyMuQCore(self.shape)

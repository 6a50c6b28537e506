"""Model FLOPs of one ALARM training step, counted from the shapes (the formula of docs/benchmarks.md).

What is counted: matmuls, convolutions and attention score / value products, at 2 FLOPs per multiply-add.
Elementwise work (norms, activations, softmax, RoPE, the layer mix, pooling) is not counted, nor is any
recomputation (activation checkpointing) or padding a path adds: both layouts of a step get the same count,
the useful work, so MFU compares them at face value.

- Frozen LLM (Qwen3): forward + input-gradient backward. Forward per token and layer
  ``2 (H (n_q + 2 n_kv) d_h + n_q d_h H + 3 H I)``; causal attention per sequence of n tokens
  ``4 n_q d_h n (n + 1) / 2`` per layer; LM head ``2 H V`` per *target* token. The weights are frozen, so the
  backward computes input gradients only: 1x the forward for the linear layers and the LM head, 2x for
  attention (dQ, dK, dV and the score gradient: four products against the forward's two).
- Frozen encoders, forward only. Whisper per window of T_mel mel frames (3000 for the published 30 s windows):
  conv stem ``2 T_mel n_mels 3 d + 2 (T_mel / 2) d 3 d``, then per kept block (T = T_mel / 2)
  ``2 T (4 d^2 + 2 d f) + 4 T^2 d``. w2v-BERT per chunk of T frames: feature projection ``2 T 160 d``, per
  kept conformer block ``2 T (4 d^2 + 4 d f + 2 d^2 + d^2 + k d) + 4 T^2 d + 2 T^2 d`` (two half-step FFNs,
  q/k/v/o, pointwise convolutions d -> 2d and d -> d, the depthwise convolution of width k, attention and
  the relative-key position scores). MuQ per 30 s piece of T_mel mel frames (3000; ``n_mels`` bins, C channels):
  the convolutional subsampling (two residual blocks of 3 x 3 convolutions, each halving mel and time)
  ``2 F1 T1 9 (2 C + C^2) + 3 * 2 F2 T2 9 C^2 + 2 T2 C F2 d`` (F1 = ceil(n_mels / 2), T1 = ceil(T_mel / 2); F2,
  T2 halved once more), then per kept conformer block on T = T2 frames the w2v-BERT block above without the
  relative-key term (rotary positions are elementwise); its log-mel (a front end, like Whisper's and
  w2v-BERT's) is not counted. SSLAM (ViT-B) per piece of T fbank frames: patch embedding ``2 n d p^2``
  (n = T/p * mel/p patches), then per kept block on N = n + 1 tokens ``2 N (4 d^2 + 2 d h) + 4 N^2 d``
  (h = mlp_ratio d).
- Trainable parts (adapters in stage A, fusion, both layouts' shared parameters): 3x their forward (forward,
  input gradient, weight gradient). Adapters: conv ``2 n (D d_a [in_proj]) + 2 n d_a h 3 + 2 (n/2) h d_a 4
  + 2 (n/2) d_a H``; mlp / pool ``2 n (D m + m^2 + m H)`` (n after pooling). Fusion: sum 0; concat
  ``2 n E H H``; CA ``2 n_e H d`` per stream in, per other stream e: self-attention ``8 n_q d^2 + 4 n_q^2 d``,
  cross-attention ``4 n_q d^2 + 4 n_e d^2 + 4 n_q n_e d``, FFN ``4 n_q d f_ca``, and ``2 n_q d H`` out.
  ALARM-P's perceivers are not counted (``trainable`` is then None and so is the MFU).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

__all__ = ["llm_flops", "llm_step_flops", "whisper_flops", "w2v_bert_flops", "muq_flops", "sslam_flops",
           "adapter_flops", "fusion_flops"]


def llm_flops(cfg, seq_lens: Sequence[int], n_targets: int, causal: bool = True) -> Dict[str, float]:
    """Forward FLOPs of a Qwen3-style decoder (``cfg``: its transformers config) on sequences of ``seq_lens``
    tokens with the LM head at ``n_targets`` positions: dict(linear, attention, lm_head). ``causal=False``
    counts full attention (what ``torch.utils.flop_counter`` counts for SDPA, used by the tests)."""
    h, inter, layers, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    nq, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or h // nq
    tokens = sum(seq_lens)
    per_token = 2 * (h * (nq + 2 * nkv) * dh + nq * dh * h + 3 * h * inter)
    pairs = sum(n * (n + 1) // 2 if causal else n * n for n in seq_lens)
    return dict(linear=float(per_token * tokens * layers), attention=float(4 * nq * dh * pairs * layers),
                lm_head=float(2 * h * vocab * n_targets))


def llm_step_flops(cfg, seq_lens: Sequence[int], n_targets: int, causal: bool = True) -> Dict[str, float]:
    """The frozen LLM's part of a training step: dict(forward, backward), the backward computing input gradients
    only (module docstring)."""
    fwd = llm_flops(cfg, seq_lens, n_targets, causal)
    forward = sum(fwd.values())
    backward = fwd["linear"] + 2 * fwd["attention"] + fwd["lm_head"]
    return dict(forward=forward, backward=backward)


def whisper_flops(cfg, mel_frames: Sequence[int], blocks: int) -> float:
    """Forward FLOPs of a Whisper encoder (``cfg``: WhisperConfig) on windows of ``mel_frames`` mel frames each,
    running its first ``blocks`` blocks."""
    d, f, n_mels = cfg.d_model, cfg.encoder_ffn_dim, cfg.num_mel_bins
    total = 0
    for t_mel in mel_frames:
        t = t_mel // 2
        total += 2 * t_mel * n_mels * 3 * d + 2 * t * d * 3 * d
        total += blocks * (2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d)
    return float(total)


def _conformer_block(t: int, d: int, f: int, k: int, relative_key: bool = False) -> int:
    """One conformer block on ``t`` frames: two half-step FFNs (d -> f -> d), q/k/v/o, the convolution module
    (pointwise d -> 2d, depthwise width k, pointwise d -> d), attention, and w2v-BERT's relative-key scores."""
    scores = 4 * t * t * d + (2 * t * t * d if relative_key else 0)
    return 2 * t * (4 * d * d + 4 * d * f + 2 * d * d + d * d + k * d) + scores


def w2v_bert_flops(cfg, chunk_frames: Sequence[int], blocks: int) -> float:
    """Forward FLOPs of a w2v-BERT 2.0 encoder (``cfg``: Wav2Vec2BertConfig) on chunks of ``chunk_frames`` frames,
    running its first ``blocks`` conformer blocks."""
    d, f, k = cfg.hidden_size, cfg.intermediate_size, cfg.conv_depthwise_kernel_size
    rel = cfg.position_embeddings_type == "relative_key"
    total = 0
    for t in chunk_frames:
        total += 2 * t * cfg.feature_projection_input_dim * d + blocks * _conformer_block(t, d, f, k, rel)
    return float(total)


def muq_flops(shape, mel_frames: Sequence[int], blocks: int) -> float:
    """Forward FLOPs of a MuQ-structured encoder (``shape``: ``alarm.model.tiny.MuQShape``; rotary positions) on
    pieces of ``mel_frames`` log-mel frames each (3000 for a 30 s piece at 24 kHz, hop 240), running its
    convolutional subsampling and first ``blocks`` conformer blocks; the log-mel is not counted."""
    half = lambda n: -(-n // 2)  # noqa: E731 -- a 3 x 3 convolution with stride 2 and padding 1
    c, d = shape.conv_channels, shape.dim
    f1, f2 = half(shape.n_mels), half(half(shape.n_mels))
    total = 0
    for t_mel in mel_frames:
        t1, t2 = half(t_mel), half(half(t_mel))
        total += 2 * f1 * t1 * 9 * (2 * c + c * c) + 3 * 2 * f2 * t2 * 9 * c * c + 2 * t2 * c * f2 * d
        total += blocks * _conformer_block(t2, d, shape.ffn_dim, shape.kernel)
    return float(total)


def sslam_flops(cfg, piece_frames: Sequence[int], blocks: int) -> float:
    """Forward FLOPs of SSLAM's ViT (``cfg``: ``alarm.model.sslam.SSLAMConfig``) on fbank pieces of ``piece_frames``
    frames each (1024 for the published 10.24 s), CLS token included, running its first ``blocks`` blocks."""
    d, p = cfg.embed_dim, cfg.patch_size
    hidden = int(d * cfg.mlp_ratio)
    total = 0
    for t in piece_frames:
        patches = (t // p) * (cfg.mel_bins // p)
        n = patches + 1
        total += 2 * patches * d * p * p + blocks * (2 * n * (4 * d * d + 2 * d * hidden) + 4 * n * n * d)
    return float(total)


def adapter_flops(kind: str, frames: Sequence[int], dim: int, adapter_dim: int, adapter_hidden: int,
                  mlp_hidden: int, llm_hidden: int, pool_ratio: int = 2) -> float:
    """Forward FLOPs of one adapter on clips of ``frames`` encoder frames (the token-rate pooling that may follow
    is elementwise and not counted)."""
    n = sum(frames)
    if kind == "identity":
        return 0.0
    if kind == "conv":
        half = sum(t // 2 for t in frames)
        in_proj = 2 * n * dim * adapter_dim if dim != adapter_dim else 0
        return float(in_proj + 2 * n * adapter_dim * adapter_hidden * 3 + 2 * half * adapter_hidden * adapter_dim * 4
                     + 2 * half * adapter_dim * llm_hidden)
    if kind == "pool":
        n = sum(-(-t // pool_ratio) for t in frames)
    return float(2 * n * (dim * mlp_hidden + mlp_hidden * mlp_hidden + mlp_hidden * llm_hidden))


def fusion_flops(fusion: str, stream_lengths: Sequence[Sequence[int]], llm_hidden: int, ca_dim: int = 0,
                 ca_ffn: int = 0) -> Optional[float]:
    """Forward FLOPs of the fusion on E streams of per-clip token counts ``stream_lengths[e][b]`` (base stream
    first); None for ALARM-P (not counted)."""
    h = llm_hidden
    if fusion == "sum":
        return 0.0
    if fusion == "concat":
        out = sum(max(col) for col in zip(*stream_lengths, strict=True))
        return float(2 * out * len(stream_lengths) * h * h)
    if fusion != "CA":
        return None
    d, base = ca_dim, stream_lengths[0]
    nq = sum(base)
    total = sum(2 * sum(lens) * h * d for lens in stream_lengths) + 2 * nq * d * h
    for lens in stream_lengths[1:]:
        total += 8 * nq * d * d + 4 * sum(q * q for q in base) * d
        total += 4 * nq * d * d + 4 * sum(lens) * d * d + 4 * sum(q * k for q, k in zip(base, lens, strict=True)) * d
        total += 4 * nq * d * ca_ffn
    return float(total)

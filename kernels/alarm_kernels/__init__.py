"""alarm_kernels: fused Triton / CUDA kernels for multi-encoder audio-language training.

Public ops (each takes ``backend="auto" | "reference" | "triton" | "cuda"``; see docs/kernels.md):
``varlen_pool``, ``varlen_conv1d``, ``weighted_layer_sum``, ``multi_encoder_concat``, ``packed_attention``; audio
front ends over packed waveforms (``backend="auto" | "reference" | "triton"``): ``kaldi_fbank``, ``w2v_bert_fbank``,
``whisper_log_mel``.
"""
from ._opdef import record_backends
from .backend import BACKEND_ENV, BACKENDS, select_backend
from .varlen import (
    cu_seqlens_to_seqlens,
    max_seqlen,
    pack,
    pad_packed,
    seqlens_to_cu_seqlens,
    unpack,
    unpad,
    validate_cu_seqlens,
)
from .attention import packed_attention
from .varlen_pool import varlen_pool
from .varlen_conv1d import varlen_conv1d
from .weighted_layer_sum import weighted_layer_sum
from .multi_encoder_concat import multi_encoder_concat
from .frontend import kaldi_fbank, w2v_bert_fbank, whisper_log_mel

__version__ = "0.1.0"

__all__ = [
    "BACKEND_ENV",
    "BACKENDS",
    "select_backend",
    "record_backends",
    "cu_seqlens_to_seqlens",
    "max_seqlen",
    "pack",
    "pad_packed",
    "seqlens_to_cu_seqlens",
    "unpack",
    "unpad",
    "validate_cu_seqlens",
    "packed_attention",
    "varlen_pool",
    "varlen_conv1d",
    "weighted_layer_sum",
    "multi_encoder_concat",
    "kaldi_fbank",
    "w2v_bert_fbank",
    "whisper_log_mel",
]

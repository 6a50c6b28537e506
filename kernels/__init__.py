"""alarm_kernels: fused Triton / CUDA kernels for multi-encoder audio-language training.

Public ops (each takes ``backend="auto" | "reference" | "triton" | "cuda"``; see docs/kernels.md):
``varlen_pool``, ``varlen_conv1d``, ``weighted_layer_sum``, ``multi_encoder_concat``, ``packed_attention``.
"""
import sys as _sys

if __name__ != "alarm_kernels":
    # The folder kernels/ is the package alarm_kernels. With the repository root on sys.path it is also
    # importable as `kernels`, the name of a PyPI package that transformers probes for by importing it.
    # Running this package a second time would register every torch.library op again and corrupt the
    # first registration (crashes later), so under any other name it is an empty module: "not installed".
    import importlib.machinery as _machinery
    import types as _types

    _placeholder = _types.ModuleType(__name__, "kernels/ is the package alarm_kernels; import it by that name")
    _placeholder.__spec__ = _machinery.ModuleSpec(__name__, None)
    _sys.modules[__name__] = _placeholder
else:
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

    __version__ = "0.1.0"

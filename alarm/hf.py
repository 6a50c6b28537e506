"""Loading Hugging Face models the way this project needs them: stock modules, no hub kernels."""
from __future__ import annotations

__all__ = ["load_pretrained"]


def load_pretrained(model_cls, path: str, **kwargs):
    """``model_cls.from_pretrained(path, **kwargs)`` with Hugging Face hub kernels off.

    transformers >= 5.2x "kernelizes" every model ``from_pretrained`` loads whenever Hugging Face's ``kernels``
    package is installed (it now comes with transformers): RMSNorm, rotary embeddings and other layers are
    swapped for kernels downloaded from the hub, on the model's device. This project's frozen modules must
    compute what the stock modules compute (its numerics tests and the published checkpoints assume them), and
    its fused ops are its own, so kernelization is always off here."""
    return model_cls.from_pretrained(path, use_kernels=False, **kwargs)

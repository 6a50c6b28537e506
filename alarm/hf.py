"""Hugging Face glue in one place: loading models as this project needs them (stock modules, no hub kernels) and
finding a frozen model's files (a local folder, or named files fetched from the hub)."""
from __future__ import annotations

import os
from typing import List

__all__ = ["load_pretrained", "checkpoint_folder"]


def load_pretrained(model_cls, path: str, **kwargs):
    """``model_cls.from_pretrained(path, **kwargs)`` with Hugging Face hub kernels off.

    transformers >= 5.2x "kernelizes" every model ``from_pretrained`` loads whenever Hugging Face's ``kernels``
    package is installed (it now comes with transformers): RMSNorm, rotary embeddings and other layers are
    swapped for kernels downloaded from the hub, on the model's device. This project's frozen modules must
    compute what the stock modules compute (its numerics tests and the published checkpoints assume them), and
    its fused ops are its own, so kernelization is always off here."""
    return model_cls.from_pretrained(path, use_kernels=False, **kwargs)


def checkpoint_folder(path: str, patterns: List[str]) -> str:
    """A local folder as is, or a hub id (``owner/name``) downloaded with huggingface_hub, only the files matching
    ``patterns`` (e.g. never code). ValueError for a path that is neither."""
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.count("/") != 1:
        raise ValueError(f"{path}: not a checkpoint folder (nor a hub id of the form owner/name)")
    from huggingface_hub import snapshot_download
    return snapshot_download(path, allow_patterns=patterns)

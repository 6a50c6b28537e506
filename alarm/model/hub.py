"""Where a frozen model's files are: a local folder, or a hub id fetched (named files only) into the cache."""
from __future__ import annotations

import os
from typing import List

__all__ = ["checkpoint_folder"]


def checkpoint_folder(path: str, patterns: List[str]) -> str:
    """A local folder as is, or a hub id (``owner/name``) downloaded with huggingface_hub, only the files matching
    ``patterns`` (e.g. never code). ValueError for a path that is neither."""
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.count("/") != 1:
        raise ValueError(f"{path}: not a checkpoint folder (nor a hub id of the form owner/name)")
    from huggingface_hub import snapshot_download
    return snapshot_download(path, allow_patterns=patterns)

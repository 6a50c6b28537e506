"""Data: training manifests (``manifest``), label descriptions (``descriptions``), JSONL helpers (``jsonl``)."""

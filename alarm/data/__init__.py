"""Data: training manifests (``manifest``), label descriptions (``descriptions``), JSONL helpers (``jsonl``), the
published ALARM corpora -> manifests (``corpora``)."""

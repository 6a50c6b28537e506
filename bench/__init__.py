"""Benchmarks: kernel micro-benchmarks (``python -m bench.ops``) and end-to-end steps."""

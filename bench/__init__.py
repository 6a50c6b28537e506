"""Benchmarks: kernel micro-benchmarks (``python -m bench.kernels``) and end-to-end steps."""

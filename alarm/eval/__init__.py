"""Evaluation on MCQA benchmarks: answer parsing (``mcqa``), benchmark files and scoring (``benchmarks``),
whole-benchmark generation with resume (``run``), and the optional vLLM backend (``vllm_backend``)."""

"""Benchmark cases, one module per op. Each module defines ``cases(device, quick) -> list[BenchCase]``."""

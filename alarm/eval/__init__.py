"""Evaluation: MCQA prompting/parsing (``mcqa``) and benchmark loaders/scorers (``benchmarks``)."""

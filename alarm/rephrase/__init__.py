"""Self-generation and self-rephrasing of training targets (docs/model.md, "Training targets"); see ``pipeline``."""

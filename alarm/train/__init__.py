"""The ALARM trainer: recipes (``config``), manifest data and packing collator (``data``), the packing
sampler (``sampler``), the frozen-feature cache (``cache``), the loop (``loop``), checkpoints
(``checkpoint``), torch.distributed glue (``distributed``) and what a user sees (``metrics``)."""
from .config import TrainConfig, build_model_config, load_config
from .loop import build_model, learning_rate, train

__all__ = ["TrainConfig", "load_config", "build_model_config", "build_model", "learning_rate", "train"]

"""A tiny byte-level BPE tokenizer (and a tiny random Qwen3 LM) built locally, no downloads, for tests and demos.

It has Qwen3's special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``, ``<think>``,
``</think>``, ``<answer>``, ``</answer>``) and a ChatML chat template whose generation prompt ends with
``<|im_start|>assistant\\n<think>\\n`` as Qwen3 thinking models do. Byte-level: any text encodes.
"""
from __future__ import annotations

from functools import lru_cache

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<answer>", "</answer>"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)

_CORPUS = """The speaker sounds happy and talks about the weather in a calm voice.
I hear a dog barking, then a car passes by. The music is a slow jazz piece with piano and drums.
Okay, let me think about what the user is asking. The audio is about 12 seconds long.
Answer with the index of the correct option. Options: 0. speech 1. music 2. noise 3. silence
A woman says hello, a man answers in an angry tone with a British accent. duration: 5.2s, emotion: neutral
"""


@lru_cache(maxsize=None)
def _build(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tok.to_str()


def build_tiny_tokenizer(vocab_size: int = 384):
    """A fresh ``PreTrainedTokenizerFast`` (eos ``<|im_end|>``, pad ``<|endoftext|>``, left padding),
    deterministic for a given size."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_build(vocab_size)),
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_lm(tokenizer, seed: int = 0, hidden_size: int = 32, layers: int = 2):
    """A tiny randomly initialised ``Qwen3ForCausalLM`` (eval mode, fp32) matching ``tokenizer``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=hidden_size // 4, max_position_embeddings=4096,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM._from_config(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()

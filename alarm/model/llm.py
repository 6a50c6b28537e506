"""The frozen LLM: a stock transformers causal LM (Qwen3) wrapped, never forked.

Weights are frozen and the module stays in eval mode whatever ``train()`` says.
- ``loss_packed``: one packed row through ``attn_implementation="alarm_packed"`` with explicit
  ``cu_seq_lens_q/k``; LM head + cross-entropy only at positions whose next token is a label, in chunks of
  ``chunk`` positions, each recomputed in backward (activation checkpointing) so at most
  ``chunk x vocab`` logits exist at a time.
- ``loss_padded``: the published computation: padded batch, SDPA with the padding mask, full-vocabulary
  logits for every position in fp32, shifted cross-entropy.
Both return the mean cross-entropy over all target tokens of the batch (fp32 scalar).
``cfg.llm_kernels`` / ``cfg.llm_fp8`` (fused norms, RoPE and SwiGLU; FP8 linear layers) are applied once at
construction by ``alarm.model.llm_kernels``; with their defaults the stock modules run unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from alarm.profiling import nvtx_range
from alarm_kernels.attention.hf import register_hf_attention

from ..hf import load_pretrained
from ..seeding import seeded
from .llm_kernels import apply_llm_options, forward_context

__all__ = ["FrozenLLM", "load_tokenizer"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
IGNORE = -100


def load_tokenizer(cfg):
    """The tokenizer for ``cfg`` (ALARMConfig): tiny byte-level BPE when ``tiny_tokenizer_vocab`` is set,
    otherwise ``AutoTokenizer.from_pretrained(tokenizer_path or llm_path)``."""
    if cfg.tiny_tokenizer_vocab is not None:
        from alarm.testing_tokenizer import build_tiny_tokenizer as tiny_tokenizer
        return tiny_tokenizer(cfg.tiny_tokenizer_vocab)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(cfg.tokenizer_path or cfg.llm_path)


def _ce_sum(hidden: Tensor, weight: Tensor, bias, targets: Tensor) -> Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, reduction="sum")


class FrozenLLM(nn.Module):
    """Frozen causal LM. ``cfg.llm_path`` -> ``AutoModelForCausalLM.from_pretrained``; else a random
    ``Qwen3ForCausalLM`` from ``cfg.llm_config`` (vocab from the tokenizer) seeded by ``cfg.init_seed``."""

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.packed_attn = register_hf_attention()
        dtype = _DTYPES[cfg.llm_dtype]
        if cfg.llm_path is not None:
            from transformers import AutoModelForCausalLM
            model = load_pretrained(AutoModelForCausalLM, cfg.llm_path, dtype=dtype, attn_implementation="sdpa")
        else:
            from transformers import Qwen3Config, Qwen3ForCausalLM
            conf = Qwen3Config(**{"vocab_size": vocab_size, "attention_dropout": 0.0, **cfg.llm_config})
            with seeded(cfg.init_seed + 1, torch.get_default_device()):
                model = Qwen3ForCausalLM._from_config(conf, dtype=dtype, attn_implementation="sdpa")
        self.model = model.requires_grad_(False).eval()
        self.kernels, self.fp8 = cfg.llm_kernels, cfg.llm_fp8
        apply_llm_options(self.model, cfg.llm_kernels, cfg.llm_fp8)

    def train(self, mode: bool = True):
        """Frozen: always stays in eval mode."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def embed(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @contextmanager
    def attention(self, name: str):
        """Temporarily route attention through ``name`` ("sdpa" or "alarm_packed"), in the forward context of
        ``cfg.llm_kernels`` (Liger's RoPE while the model runs)."""
        conf = self.model.config
        old = conf._attn_implementation
        conf._attn_implementation = name
        try:
            with forward_context(self.model, self.kernels, self.fp8):
                yield
        finally:
            conf._attn_implementation = old

    def hidden_packed(self, inputs_embeds: Tensor, position_ids: Tensor, cu_seqlens: Tensor, max_seqlen: int
                      ) -> Tensor:
        """inputs_embeds [T, H], position_ids int64 [T], cu_seqlens int32 [B+1] -> last hidden states [T, H].

        The boundaries go to the attention explicitly, so no mask is built: the prepared (empty) mask mapping
        keeps transformers from scanning ``position_ids`` for packed sequences (a device read per forward)."""
        no_mask = {"full_attention": None, "sliding_attention": None}
        with self.attention(self.packed_attn):
            return self.model.model(inputs_embeds=inputs_embeds[None].to(self.dtype), position_ids=position_ids[None],
                                    attention_mask=no_mask, cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens,
                                    max_length_q=max_seqlen, max_length_k=max_seqlen,
                                    use_cache=False).last_hidden_state[0]

    def loss_packed(self, inputs_embeds: Tensor, labels: Tensor, position_ids: Tensor, cu_seqlens: Tensor,
                    max_seqlen: int, chunk: int = 1024, reduction: str = "mean", n_targets: int | None = None
                    ) -> Tensor:
        """inputs_embeds [T, H], labels/position_ids int64 [T], cu_seqlens int32 [B+1] -> CE over the target
        tokens (fp32 scalar): their mean (``reduction="mean"``) or their sum (``"sum"``). ``n_targets``: the
        number of labelled tokens when known on the host (then their positions are found without a device
        read; it must be exact)."""
        hidden = self.hidden_packed(inputs_embeds, position_ids, cu_seqlens, max_seqlen)
        with nvtx_range("alarm/loss"):
            # a label at p is predicted from p - 1 (same example: position 0 of an example never has a label)
            targets = labels[1:] != IGNORE
            if n_targets is None:
                sel = torch.nonzero(targets).squeeze(1)
            else:
                sel = torch.nonzero_static(targets, size=n_targets).squeeze(1)
            if sel.numel() == 0:
                raise ValueError("no target token in the batch (empty targets or all truncated)")
            h, y = hidden[sel], labels[sel + 1]
            head = self.model.get_output_embeddings()
            total = hidden.new_zeros((), dtype=torch.float32)
            for s in range(0, sel.numel(), chunk):
                total = total + checkpoint(_ce_sum, h[s:s + chunk], head.weight, head.bias, y[s:s + chunk],
                                           use_reentrant=False)
            return total if reduction == "sum" else total / sel.numel()

    @torch.no_grad()
    def target_logprob_packed(self, inputs_embeds: Tensor, labels: Tensor, position_ids: Tensor,
                              cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        """Summed log-probability of each example's target tokens (fp32 [B]; 0 for an example without one)."""
        hidden = self.hidden_packed(inputs_embeds, position_ids, cu_seqlens, max_seqlen)
        sel = torch.nonzero(labels[1:] != IGNORE).squeeze(1)
        head = self.model.get_output_embeddings()
        logp = -F.cross_entropy(F.linear(hidden[sel], head.weight, head.bias).float(), labels[sel + 1],
                                reduction="none")
        example = torch.searchsorted(cu_seqlens[1:].long(), sel + 1, right=True)
        return torch.zeros(cu_seqlens.numel() - 1, dtype=torch.float32, device=hidden.device).index_add_(
            0, example, logp)

    def loss_padded(self, inputs_embeds: Tensor, attention_mask: Tensor, labels: Tensor, position_ids: Tensor
                    ) -> Tensor:
        """Padded [B, L, H] batch, full fp32 logits [B, L, V] -> mean CE over labelled tokens (fp32)."""
        with self.attention("sdpa"):
            logits = self.model(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                                position_ids=position_ids, use_cache=False).logits.float()
        with nvtx_range("alarm/loss"):
            if not bool((labels[:, 1:] != IGNORE).any()):
                raise ValueError("no target token in the batch (empty targets or all truncated)")
            return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=IGNORE)

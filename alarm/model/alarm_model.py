"""``ALARMModel``: frozen encoders -> adapters -> fusion -> splice -> frozen LLM, and ``ALARMEnsemble`` (E).

Two execution paths share every parameter (``path="fast"`` or ``"reference"``; default ``config.path``):
- fast: packed varlen tensors end to end (fused ``alarm_kernels`` ops, packed attention in the fusion and
  the LLM, LM head only at target positions);
- reference: padded batches, ``nn.Conv1d``/SDPA with masks, per-example splicing and full fp32 logits:
  the published computation re-expressed, with the changes listed in the README ("Where this project
  differs from the published code").
NVTX ranges: ``alarm/encoder``, ``alarm/adapter``, ``alarm/fusion``, ``alarm/splice``, ``alarm/llm``
and, nested in it, ``alarm/loss`` (LM head + cross-entropy on the fast path; cross-entropy on the reference
path, whose HF forward computes the full logits inside ``alarm/llm``).

Trainable: stage "A" adapters + fusion + separators; stage "B" fusion + separators (adapters frozen).
Frozen modules (encoders, LLM, stage-B adapters) have ``requires_grad=False`` and stay in eval mode
(``model.train()`` does not flip them, so BatchNorm always uses its running statistics).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from alarm.profiling import nvtx_range
from alarm_kernels.varlen import pad_packed, unpack

from ..fileio import atomic_write, atomic_write_text
from ..audio import resample_batch, validate_audio_batch
from ..generation import generate_with_thinking_budget
from .adapters import Adapter
from .config import ALARMConfig
from .encoders import build_encoder
from .fusion import build_fusion
from .llm import FrozenLLM, load_tokenizer
from .splice import ASSISTANT_SUFFIX, USER_PREFIX, splice_packed, splice_padded, tokenize_batch

__all__ = ["ALARMModel", "AudioSide", "ALARMOutput", "ALARMEnsemble"]

CONFIG_NAME = "alarm_config.json"
WEIGHTS_NAME = "audio_side.safetensors"


@dataclass
class ALARMOutput:
    """loss: fp32 scalar, mean CE over target tokens; n_tokens: LLM input tokens (unpadded) in the batch."""
    loss: Tensor
    n_tokens: int


class AudioSide(nn.Module):
    """The saved, non-LLM, non-encoder part: adapters, fusion and the two learned separators [H] (N(0, 1) at
    init, as published)."""

    def __init__(self, cfg: ALARMConfig):
        super().__init__()
        self.adapters = nn.ModuleDict({e.name: Adapter(e, cfg.adapter_dim, cfg.adapter_hidden, cfg.mlp_hidden,
                                                       cfg.llm_hidden) for e in cfg.encoders})
        self.fusion = build_fusion(cfg)
        self.audio_start = nn.Parameter(torch.randn(cfg.llm_hidden))  # published: standard normal
        self.audio_end = nn.Parameter(torch.randn(cfg.llm_hidden))
        if cfg.stage == "B":  # identity adapters (P's layer mixes) stay trainable, as published
            for ad in self.adapters.values():
                if ad.kind != "identity":
                    ad.requires_grad_(False)

    def train(self, mode: bool = True):
        """Trainable parts follow ``mode``; frozen adapters stay in eval mode (BatchNorm keeps its statistics)."""
        super().train(mode)
        frozen = [ad for ad in self.adapters.values() if not ad.layer_logits.requires_grad]
        for ad in frozen:
            ad.eval()
        if len(frozen) == len(self.adapters):
            self.adapters.eval()
        return self


def _generate(llm, tokenizer, inputs: dict, max_thinking_tokens, max_new_tokens: int, **kwargs) -> dict:
    """Thinking-budget generation from prompt embeddings; dict(text: B decoded strings, generation)."""
    gen = generate_with_thinking_budget(llm.model, tokenizer, **inputs, max_thinking_tokens=max_thinking_tokens,
                                        max_new_tokens=max_new_tokens, **kwargs)
    text = [tokenizer.decode(gen.sequences[i, : int(gen.lengths[i])], skip_special_tokens=False)
            for i in range(gen.sequences.shape[0])]
    return dict(text=text, generation=gen)


class ALARMModel(nn.Module):
    """ALARM model. ``llm``/``tokenizer`` may be passed to share one frozen LLM between models (ALARM-E)."""

    def __init__(self, config: ALARMConfig, tokenizer=None, llm: Optional[FrozenLLM] = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.encoders = nn.ModuleDict({e.name: build_encoder(e) for e in config.encoders})
            self.audio = AudioSide(config)
        self.llm = llm if llm is not None else FrozenLLM(config, len(self.tokenizer))
        if self.llm.model.config.hidden_size != config.llm_hidden:
            raise ValueError(f"config.llm_hidden={config.llm_hidden} but the LLM's hidden size is "
                             f"{self.llm.model.config.hidden_size}")
        self.train(False)

    # ---- modes ---------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Trainable parts follow ``mode``; encoders, LLM and frozen adapters stay in eval mode."""
        self.training = mode
        self.audio.train(mode)
        self.encoders.eval()
        self.llm.eval()
        return self

    def trainable_parameters(self) -> Dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def fold_batchnorm(self) -> "ALARMModel":
        """Inference: fold every BatchNorm conv adapter's norms into its conv2 / llm_proj (exact; those
        adapters become frozen). A folded model cannot be saved with ``save_pretrained``."""
        for ad in self.audio.adapters.values():
            if ad.kind == "conv" and isinstance(ad.norm1, nn.BatchNorm1d):
                ad.fold_batchnorm()
        return self

    # ---- audio ---------------------------------------------------------------------------------
    def _check(self, audio, sampling_rate, *lists):
        waves, rates = validate_audio_batch(audio, sampling_rate, self.config.max_audio_seconds)
        for name, values in lists:
            if values is not None and (isinstance(values, (str, bytes)) or len(values) != len(waves)):
                n = 1 if isinstance(values, (str, bytes)) else len(values)
                raise ValueError(f"got {len(waves)} audio clips but {n} {name}: the batch lists must match")
        return waves, rates

    def encode(self, waves: List[Tensor], rates: List[int]) -> Dict[str, tuple]:
        """Frozen encoders -> {name: (k x [total, D] packed selected states, int32 cu_seqlens [B+1])}.

        ValueError naming the clip when an encoder's frames give its adapter no token (a clip too short)."""
        out, resampled = {}, {}
        with nvtx_range("alarm/encoder"), torch.no_grad():
            for spec in self.config.encoders:
                if spec.sample_rate not in resampled:  # CPU waveforms: feature extraction runs on the host
                    resampled[spec.sample_rate] = resample_batch(waves, rates, spec.sample_rate)
                out[spec.name] = self.encoders[spec.name](resampled[spec.sample_rate])
                cu = out[spec.name][1]
                empty = torch.nonzero(Adapter.out_lengths(cu[1:] - cu[:-1], spec.adapter) == 0).flatten().tolist()
                if empty:
                    i = empty[0]
                    raise ValueError(f"audio[{i}] ({waves[i].numel() / rates[i]:.3f} s) is too short: encoder "
                                     f"{spec.name} gives its adapter no token")
        return out

    def audio_tokens_packed(self, feats: Dict[str, tuple]):
        """Fast path: adapters + fusion on packed tensors -> ([A, H], int32 cu [B+1])."""
        with nvtx_range("alarm/adapter"):
            streams, cus = [], []
            for spec in self.config.encoders:
                layers, cu = feats[spec.name]
                s, c = self.audio.adapters[spec.name].forward_packed(layers, cu)
                streams.append(s)
                cus.append(c)
        with nvtx_range("alarm/fusion"):
            return self.audio.fusion.forward_packed(streams, cus)

    def audio_tokens_padded(self, feats: Dict[str, tuple]) -> List[Tensor]:
        """Reference path: adapters + fusion on padded batches -> B tensors [A_i, H]."""
        with nvtx_range("alarm/adapter"):
            streams, lengths = [], []
            for spec in self.config.encoders:
                layers, cu = feats[spec.name]
                padded = [pad_packed(x, cu)[0] for x in layers]
                s, n = self.audio.adapters[spec.name].forward_padded(padded, cu[1:] - cu[:-1])
                streams.append(s)
                lengths.append(n.long())
        with nvtx_range("alarm/fusion"):
            y, n = self.audio.fusion.forward_padded(streams, lengths)
            return [y[i, : int(n[i])] for i in range(y.shape[0])]

    def audio_embeddings(self, audio, sampling_rate, path: Optional[str] = None) -> List[Tensor]:
        """Audio tokens per clip (B tensors [A_i, H], fp32) on the given path."""
        waves, rates = self._check(audio, sampling_rate)
        feats = self.encode(waves, rates)
        if (path or self.config.path) == "fast":
            y, cu = self.audio_tokens_packed(feats)
            return list(unpack(y, cu))
        return self.audio_tokens_padded(feats)

    # ---- training forward ----------------------------------------------------------------------
    def forward(self, audio: Sequence, sampling_rate, prompts: Sequence[str], targets: Sequence,
                path: Optional[str] = None) -> ALARMOutput:
        """Mean CE of ``targets`` (strings or token-id lists) given audio + prompts.

        audio: B waveforms (1-D, or [channels, samples]); sampling_rate: int or B ints (Hz).
        """
        path = path or self.config.path
        if path not in ("fast", "reference"):
            raise ValueError(f"path must be 'fast' or 'reference', got {path!r}")
        waves, rates = self._check(audio, sampling_rate, ("prompts", prompts), ("targets", targets))
        feats = self.encode(waves, rates)
        dev = self.audio.audio_start.device
        text = tokenize_batch(self.tokenizer, prompts, targets, device=dev)
        if path == "fast":
            a, cu_a = self.audio_tokens_packed(feats)
            with nvtx_range("alarm/splice"):
                batch = splice_packed(self.llm.embed(), text, a, cu_a, self.audio.audio_start, self.audio.audio_end,
                                      self.config.max_length)
            with nvtx_range("alarm/llm"):
                loss = self.llm.loss_packed(batch["inputs_embeds"], batch["labels"], batch["position_ids"],
                                            batch["cu_seqlens"], batch["max_seqlen"], self.config.lm_head_chunk)
            return ALARMOutput(loss, int(batch["labels"].numel()))
        a = self.audio_tokens_padded(feats)
        with nvtx_range("alarm/splice"):
            batch = splice_padded(self.llm.embed(), text, a, self.audio.audio_start, self.audio.audio_end,
                                  self.config.max_length)
        with nvtx_range("alarm/llm"):
            loss = self.llm.loss_padded(batch["inputs_embeds"], batch["attention_mask"], batch["labels"],
                                        batch["position_ids"])
        return ALARMOutput(loss, int(batch["attention_mask"].sum()))

    # ---- inference -----------------------------------------------------------------------------
    def prompt_embeddings(self, audio, sampling_rate, prompts) -> dict:
        """Left-padded generation inputs: inputs_embeds [B, L, H] (LLM dtype) and attention_mask [B, L]."""
        if isinstance(prompts, str):
            prompts = [prompts]
        waves, rates = self._check(audio, sampling_rate, ("prompts", prompts))
        a = self.audio_embeddings(waves, rates)
        text = tokenize_batch(self.tokenizer, prompts, None, device=self.audio.audio_start.device)
        batch = splice_padded(self.llm.embed(), text, a, self.audio.audio_start, self.audio.audio_end,
                              self.config.max_length, left_pad=True)
        return dict(inputs_embeds=batch["inputs_embeds"].to(self.llm.dtype), attention_mask=batch["attention_mask"])

    @torch.no_grad()
    def generate(self, audio, prompt, sampling_rate: int | Sequence[int] = 16000,
                 max_thinking_tokens: Optional[int] = None, max_new_tokens: int = 512, **kwargs) -> dict:
        """Answer ``prompt`` (str or B strs) about ``audio`` (one clip or B clips) under a thinking budget.

        Returns dict(text: B decoded strings, generation: ``alarm.generation.ThinkingGeneration``).
        """
        return _generate(self.llm, self.tokenizer, self.prompt_embeddings(audio, sampling_rate, prompt),
                         max_thinking_tokens, max_new_tokens, **kwargs)

    # ---- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, folder: str) -> None:
        """Write ``alarm_config.json`` and ``audio_side.safetensors`` (adapters, fusion, separators, BN
        buffers) atomically. Encoders and the LLM are not saved: they are rebuilt from their ``path`` (or,
        when randomly initialised, from their config and ``init_seed``, deterministically)."""
        if any(ad.folded for ad in self.audio.adapters.values() if ad.kind == "conv"):
            raise ValueError("this model's BatchNorms were folded (inference only); save before folding")
        os.makedirs(folder, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.audio.state_dict().items()}
        atomic_write(os.path.join(folder, WEIGHTS_NAME), lambda p: save_file(state, p, metadata={"format": "pt"}))

        atomic_write_text(os.path.join(folder, CONFIG_NAME), self.config.to_json())

    def load_adapter(self, name: str, folder: str, source_name: Optional[str] = None) -> None:
        """Stage B: copy the adapter ``source_name`` (default ``name``) of a saved (stage-A) model in
        ``folder`` into this model's adapter ``name`` (strict: every tensor must match)."""
        if name not in self.audio.adapters:
            raise ValueError(f"this model has no encoder {name!r}; it has {list(self.audio.adapters)}")
        prefix = f"adapters.{source_name or name}."
        state = {k[len(prefix):]: v for k, v in load_file(os.path.join(folder, WEIGHTS_NAME)).items()
                 if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{folder} holds no adapter {source_name or name!r}")
        try:
            self.audio.adapters[name].load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"adapter {name!r} from {folder} does not fit this model: {e}") from e

    @classmethod
    def from_pretrained(cls, folder: str, tokenizer=None, llm: Optional[FrozenLLM] = None, **overrides
                        ) -> "ALARMModel":
        """Rebuild a saved model (``overrides`` replace config fields, e.g. ``path="reference"``)."""
        cfg_path, w_path = os.path.join(folder, CONFIG_NAME), os.path.join(folder, WEIGHTS_NAME)
        for p in (cfg_path, w_path):
            if not os.path.isfile(p):
                raise ValueError(f"{folder} is not a saved ALARM model: {os.path.basename(p)} is missing")
        with open(cfg_path) as f:
            cfg = ALARMConfig.from_dict({**json.load(f), **overrides})
        model = cls(cfg, tokenizer=tokenizer, llm=llm)
        state = load_file(w_path)
        missing, unexpected = model.audio.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights in {w_path} do not match the config: missing {missing}, unexpected {unexpected}")
        return model


class ALARMEnsemble:
    """ALARM-E (inference only): the prompt holds the audio once per model, each under a text header.

    The models must share one frozen LLM and tokenizer (build the second with ``llm=first.llm,
    tokenizer=first.tokenizer``). Sequence: ``<|im_start|>user\\n`` then, for model i of N,
    ``header(i, N) | audio_start_i | tokens_i | audio_end_i``, then the prompt and the assistant prefix.
    """

    HEADER = "What you hear (time {i} of {n}):\n"

    def __init__(self, models: Sequence[ALARMModel], header: str = HEADER):
        if len(models) < 2:
            raise ValueError("an ensemble needs at least two models")
        if any(m.llm is not models[0].llm for m in models[1:]):
            raise ValueError("ensemble members must share one LLM (pass llm=first.llm when building them)")
        self.models, self.header = list(models), header
        self.llm, self.tokenizer = models[0].llm, models[0].tokenizer

    def _ids(self, text: str, dev) -> Tensor:
        return torch.tensor(self.tokenizer.encode(text, add_special_tokens=False), dtype=torch.long, device=dev)

    @torch.no_grad()
    def prompt_embeddings(self, audio, sampling_rate, prompts) -> dict:
        """Left-padded inputs_embeds [B, L, H] and attention_mask [B, L] holding every model's audio."""
        if isinstance(prompts, str):
            prompts = [prompts]
        first = self.models[0]
        waves, rates = first._check(audio, sampling_rate, ("prompts", prompts))
        per_model = [m.audio_embeddings(waves, rates) for m in self.models]
        embed, dev, n = self.llm.embed(), first.audio.audio_start.device, len(self.models)
        rows = []
        for b, prompt in enumerate(prompts):
            parts = [embed(self._ids(USER_PREFIX, dev))]
            for i, (m, toks) in enumerate(zip(self.models, per_model), start=1):
                parts += [embed(self._ids(self.header.format(i=i, n=n), dev)), m.audio.audio_start[None],
                          toks[b], m.audio.audio_end[None]]
            parts.append(embed(self._ids(prompt + ASSISTANT_SUFFIX, dev)))
            rows.append(torch.cat([p.to(self.llm.dtype) for p in parts]))
        longest = max(r.shape[0] for r in rows)
        x = rows[0].new_zeros(len(rows), longest, rows[0].shape[1])
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=dev)
        for b, r in enumerate(rows):
            x[b, longest - r.shape[0]:], mask[b, longest - r.shape[0]:] = r, 1
        return dict(inputs_embeds=x, attention_mask=mask)

    @torch.no_grad()
    def generate(self, audio, prompt, sampling_rate=16000, max_thinking_tokens: Optional[int] = None,
                 max_new_tokens: int = 512, **kwargs) -> dict:
        """Same contract as ``ALARMModel.generate``."""
        return _generate(self.llm, self.tokenizer, self.prompt_embeddings(audio, sampling_rate, prompt),
                         max_thinking_tokens, max_new_tokens, **kwargs)

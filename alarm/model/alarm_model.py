"""``ALARMModel``: frozen encoders -> adapters -> fusion -> splice -> frozen LLM, and ``ALARMEnsemble`` (E).

Two execution layouts share every parameter (``layout="packed"`` or ``"padded"``; default ``config.layout``;
before this name the argument was ``path="fast"`` / ``"reference"``, still accepted with a DeprecationWarning):
- packed: varlen tensors end to end (fused ``alarm_kernels`` ops, packed attention in the fusion and
  the LLM, LM head only at target positions);
- padded: padded batches, ``nn.Conv1d``/SDPA with masks, per-example splicing and full fp32 logits:
  the published computation re-expressed, with the changes listed in docs/model.md ("Differences from the
  published implementation").
NVTX ranges: ``alarm/encoder``, ``alarm/adapter``, ``alarm/fusion``, ``alarm/splice``, ``alarm/llm``
and, nested in it, ``alarm/loss`` (LM head + cross-entropy in the packed layout; cross-entropy in the padded
layout, whose HF forward computes the full logits inside ``alarm/llm``).

Trainable: stage "A" adapters + fusion + separators; stage "B" fusion + separators (adapters frozen).
Frozen modules (encoders, LLM, stage-B adapters) have ``requires_grad=False`` and stay in eval mode
(``model.train()`` does not flip them, so BatchNorm always uses its running statistics).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from alarm.profiling import nvtx_range
from alarm_kernels.varlen import pad_packed, unpack

from ..fileio import (
    CorruptFileError,
    atomic_write_bytes,
    atomic_write_folder,
    atomic_write_text,
    format_checksums,
    parse_checksums,
    read_verified,
    verify_files,
)
from ..audio import resample_batch, validate_audio_batch
from ..generation import SAMPLING_DEFAULTS, generate_with_thinking_budget
from ..prompts import SYSTEM_PROMPT, ensemble_header, ensemble_intro, system_turn
from ..seeding import seeded
from .adapters import Adapter
from .config import LAYOUTS, LEGACY_PATHS, ALARMConfig
from .encoders import PreparedAudio, build_encoder
from .fusion import build_fusion
from .layout import Packed, Padded
from .llm import FrozenLLM, load_tokenizer
from .batch import ModelBatch, source_lengths
from .splice import IGNORE, ASSISTANT_SUFFIX, USER_PREFIX, splice_packed, splice_padded, tokenize_batch

__all__ = ["ALARMModel", "AudioSide", "ALARMOutput", "ALARMEnsemble", "load_saved_config", "write_saved_model",
           "verify_saved_model"]

CONFIG_NAME = "alarm_config.json"
WEIGHTS_NAME = "audio_side.safetensors"
# the weights' sha256 as a sha256sum line (`sha256sum -c SHA256SUMS`); the config stays editable by hand (e.g. a
# moved llm_path), so it is validated field by field rather than checksummed
CHECKSUMS_NAME = "SHA256SUMS"


class AudioFrontEnds:
    """Encoders' front ends, weight-free and picklable: ``front_ends(waves, rates, devices=None)`` ->
    ``{encoder name: PreparedAudio}`` for B waveforms (1-D float32 CPU tensors, any rates; resampled once per encoder
    rate). ``devices``: encoder name -> where its front end computes (default the CPU). Made by
    :meth:`ALARMModel.audio_front_ends`; a DataLoader's collate function calls it in the workers. ``partial``: True
    when it covers only some of the model's encoders (the batch must then carry the waveforms too, for the others)."""

    def __init__(self, front_ends: Dict[str, tuple], partial: bool = False):
        self.front_ends = dict(front_ends)  # name -> (sample rate, (waves, device) -> PreparedAudio)
        self.partial = partial

    def __call__(self, waves: Sequence[Tensor], rates: Sequence[int],
                 devices: Optional[Dict[str, Optional[torch.device]]] = None) -> Dict[str, PreparedAudio]:
        resampled: Dict[int, List[Tensor]] = {}
        out = {}
        for name, (rate, front_end) in self.front_ends.items():
            if rate not in resampled:
                resampled[rate] = resample_batch(waves, rates, rate)
            out[name] = front_end(resampled[rate], (devices or {}).get(name))
        return out


@dataclass
class ALARMOutput:
    """loss: fp32 scalar CE over target tokens (mean, or sum where asked); n_tokens: LLM input tokens
    (unpadded) in the batch; n_targets: target tokens the loss covers (after truncation)."""
    loss: Tensor
    n_tokens: int
    n_targets: int = 0


class AudioSide(nn.Module):
    """The saved, non-LLM, non-encoder part: adapters, fusion and the two learned separators [H] (N(0, 1) at
    init, as published). ``cfg.weight_init`` "published": Linear/Conv1d weights N(0, 0.02) with zero bias
    (set by each module); "torch": PyTorch's own layer initialisation instead (an opt-in for small models)."""

    def __init__(self, cfg: ALARMConfig):
        super().__init__()
        self.adapters = nn.ModuleDict({e.name: Adapter(e, cfg.adapter_dim, cfg.adapter_hidden, cfg.mlp_hidden,
                                                       cfg.llm_hidden, cfg.token_rate_ratio, cfg.token_rate_mode)
                                       for e in cfg.encoders})
        self.fusion = build_fusion(cfg)
        if cfg.weight_init == "torch":
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Conv1d)):
                    m.reset_parameters()
        # published: standard normal (``separator_std`` 1); a small LM with small embeddings may want less
        self.audio_start = nn.Parameter(torch.randn(cfg.llm_hidden) * cfg.separator_std)
        self.audio_end = nn.Parameter(torch.randn(cfg.llm_hidden) * cfg.separator_std)
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
    """Thinking-budget generation from prompt embeddings (sampling defaults: ``SAMPLING_DEFAULTS``; greedy
    when ``do_sample=False``); dict(text: B decoded strings, generation)."""
    sampling = dict(SAMPLING_DEFAULTS) if kwargs.get("do_sample", True) else {}
    gen = generate_with_thinking_budget(llm.model, tokenizer, **inputs, max_thinking_tokens=max_thinking_tokens,
                                        max_new_tokens=max_new_tokens, **{**sampling, **kwargs})
    text = [tokenizer.decode(gen.sequences[i, : int(gen.lengths[i])], skip_special_tokens=False)
            for i in range(gen.sequences.shape[0])]
    return dict(text=text, generation=gen)


class ALARMModel(nn.Module):
    """ALARM model. ``llm``/``tokenizer`` may be passed to share one frozen LLM between models (ALARM-E)."""

    def __init__(self, config: ALARMConfig, tokenizer=None, llm: Optional[FrozenLLM] = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config)
        with seeded(config.init_seed, torch.get_default_device()):
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

    def training_buffers(self) -> Dict[str, Tensor]:
        """Buffers that training updates besides the parameters (BatchNorm running statistics of the trainable
        audio side), by name: a trainer averages them across ranks and checkpoints them."""
        return {f"audio.{n}": b for n, b in self.audio.named_buffers()
                if n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}

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

    def audio_front_ends(self, names: Optional[Sequence[str]] = None) -> AudioFrontEnds:
        """The encoders' front ends without their weights (picklable): ``(waves, rates) -> {name: PreparedAudio}``,
        for a data pipeline that prepares batches in its own processes (:meth:`encode_prepared` runs the rest).
        ``names``: only these encoders' front ends (default: every encoder's)."""
        specs = [spec for spec in self.config.encoders if names is None or spec.name in names]
        return AudioFrontEnds({spec.name: (spec.sample_rate, self.encoders[spec.name].front_end()) for spec in specs},
                              partial=len(specs) < len(self.config.encoders))

    def worker_front_ends(self, device: torch.device) -> Optional[AudioFrontEnds]:
        """The front ends a data pipeline feeding this model on ``device`` computes in its worker processes, off the
        training process's path: on CUDA those not made of device kernels (``AudioEncoder.KERNEL_FRONT_END``
        False: MuQ's resampling to 24 kHz, pieces and padding), the others running on the GPU inside the step;
        elsewhere all of them. None when there is none (the batch then carries the waveforms alone)."""
        names = [name for name, enc in self.encoders.items()
                 if torch.device(device).type != "cuda" or not enc.KERNEL_FRONT_END]
        return self.audio_front_ends(names) if names else None

    def prepare_audio(self, waves: List[Tensor], rates: List[int], names: Optional[Sequence[str]] = None
                      ) -> Dict[str, PreparedAudio]:
        """The front ends of every encoder (or of those in ``names``) on B CPU waveforms, each on its encoder's
        device when it is made of kernels (else on the CPU)."""
        devices = {name: enc.front_end_device() for name, enc in self.encoders.items()}
        return self.audio_front_ends(names)(waves, rates, devices)

    def encode(self, waves: List[Tensor], rates: List[int],
               prepared: Optional[Dict[str, PreparedAudio]] = None) -> Dict[str, tuple]:
        """Frozen encoders (front ends included) -> {name: (k x [total, D] packed selected states, int32 cu_seqlens
        [B+1])}. ``prepared``: some encoders' inputs already prepared (e.g. in DataLoader workers:
        ``worker_front_ends``); the other encoders' front ends run here. ValueError naming the clip when an encoder's
        frames give its adapter no token (a clip too short)."""
        prepared = dict(prepared or {})
        missing = [spec.name for spec in self.config.encoders if spec.name not in prepared]
        if missing:
            with nvtx_range("alarm/encoder"), torch.no_grad():
                prepared.update(self.prepare_audio(waves, rates, missing))
        return self.encode_prepared(prepared)

    def encode_prepared(self, prepared: Dict[str, PreparedAudio]) -> Dict[str, tuple]:
        """:meth:`encode` from every encoder's prepared inputs (:meth:`audio_front_ends`, on the model's device or
        the CPU); ValueError naming an encoder without them."""
        missing = [spec.name for spec in self.config.encoders if spec.name not in prepared]
        if missing:
            raise ValueError(f"no prepared inputs for encoders {missing} (and no waveforms to compute them from)")
        out = {}
        with nvtx_range("alarm/encoder"), torch.no_grad():
            for spec in self.config.encoders:
                inputs = prepared[spec.name]
                out[spec.name] = self.encoders[spec.name].run(inputs)
                cu = out[spec.name][1]
                empty = torch.nonzero(Adapter.out_lengths(cu[1:] - cu[:-1], spec.adapter) == 0).flatten().tolist()
                if empty:
                    i = empty[0]
                    raise ValueError(f"audio[{i}] ({inputs.samples[i] / spec.sample_rate:.3f} s) is too short: "
                                     f"encoder {spec.name} gives its adapter no token")
        return out

    def audio_tokens_packed(self, feats: Dict[str, tuple], lengths: Optional[Dict[str, List[int]]] = None):
        """Packed layout: adapters + fusion on packed tensors -> ([A, H], int32 cu [B+1]).

        ``lengths``: host-side frames per clip of each encoder (``ModelBatch.lengths``); without them the offsets
        are read once (``source_lengths``). Sizes then flow on the host, so no op reads the device back."""
        return self._fused_tokens(self._adapter_outputs(feats, "packed", lengths))[:2]

    def audio_tokens_padded(self, feats: Dict[str, tuple]) -> List[Tensor]:
        """Padded layout: adapters + fusion on padded batches -> B tensors [A_i, H]."""
        return self._fused_tokens(self._adapter_outputs(feats, "padded"))

    def _adapter_outputs(self, feats: Dict[str, tuple], layout: str,
                         lengths: Optional[Dict[str, List[int]]] = None) -> List[Union[Packed, Padded]]:
        """Each encoder's adapter output (config order) in ``layout`` from its packed selected states;
        ``lengths`` as in ``audio_tokens_packed`` (packed layout only)."""
        if layout == "packed":
            lengths = source_lengths(feats, lengths)
        outs = []
        with nvtx_range("alarm/adapter"):
            for spec in self.config.encoders:
                layers, cu = feats[spec.name]
                adapter = self.audio.adapters[spec.name]
                if layout == "packed":
                    outs.append(adapter(Packed(layers, cu, lengths[spec.name])))
                else:
                    y = adapter(Padded([pad_packed(x, cu)[0] for x in layers], cu[1:] - cu[:-1]))
                    outs.append(Padded(y.data, y.lengths.long()))
        return outs

    def _fused_tokens(self, streams: List[Union[Packed, Padded]]):
        """Fusion of the adapter outputs -> packed ([A, H], int32 cu [B+1], B host ints) or padded (B x [A_i, H])."""
        with nvtx_range("alarm/fusion"):
            y = self.audio.fusion(streams)
            if isinstance(y, Packed):
                return y.data, y.cu_seqlens, y.lengths
            return [y.data[i, :n] for i, n in enumerate(y.lengths.tolist())]  # one host read, not one per example

    def _resolve_layout(self, layout: Optional[str], path: Optional[str]) -> str:
        """The execution layout of a call: ``layout``, else the deprecated ``path`` ("fast" / "reference",
        with a DeprecationWarning), else ``config.layout``. ValueError for an unknown name."""
        if path is not None:
            warnings.warn("path= is deprecated: use layout='packed' (was 'fast') or layout='padded' (was "
                          "'reference')", DeprecationWarning, stacklevel=3)
            if layout is not None:
                raise ValueError("give layout= or the deprecated path=, not both")
            if path not in LEGACY_PATHS:
                raise ValueError(f"path must be 'fast' or 'reference', got {path!r}")
            return LEGACY_PATHS[path]
        layout = layout or self.config.layout
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
        return layout

    def audio_embeddings(self, audio, sampling_rate, layout: Optional[str] = None, *, path: Optional[str] = None
                         ) -> List[Tensor]:
        """Audio tokens per clip (B tensors [A_i, H], fp32) in the given layout ("packed" / "padded"; default
        ``config.layout``; ``path`` is its deprecated old name)."""
        layout = self._resolve_layout(layout, path)
        waves, rates = self._check(audio, sampling_rate)
        feats = self.encode(waves, rates)
        if layout == "packed":
            y, cu = self.audio_tokens_packed(feats)
            return list(unpack(y, cu))
        return self.audio_tokens_padded(feats)

    # ---- training forward ----------------------------------------------------------------------
    def adapter_streams(self, feats: Dict[str, tuple], lengths: Optional[Dict[str, List[int]]] = None
                        ) -> Dict[str, tuple]:
        """Packed adapter outputs {name: ([total, H], int32 cu [B+1])} (what a stage-B cache stores);
        ``lengths``: host frames per clip of each encoder, as in ``audio_tokens_packed``."""
        outs = self._adapter_outputs(feats, "packed", lengths)
        return {spec.name: (y.data, y.cu_seqlens) for spec, y in zip(self.config.encoders, outs, strict=True)}

    def _audio_tokens(self, batch: ModelBatch, layout: str):
        """Audio tokens of a batch from its audio source: packed ([A, H], cu, host tokens per clip) or padded
        (B x [A_i, H])."""
        if batch.streams is None:
            if batch.features is not None:
                feats = batch.features
            elif batch.waves is not None:  # with ``prepared``: the other encoders' front ends run here
                feats = self.encode(batch.waves, batch.rates, batch.prepared)
            else:
                feats = self.encode_prepared(batch.prepared)
            return self._fused_tokens(self._adapter_outputs(feats, layout, batch.lengths))
        names = [spec.name for spec in self.config.encoders]
        # cached adapter outputs (a bf16 cache) enter as the fp32 adapters' outputs would (autocast recasts them)
        cached = {n: (x.float(), cu) for n, (x, cu) in batch.streams.items()}
        if layout == "packed":
            lengths = source_lengths(cached, batch.lengths)
            streams = [Packed(*cached[n], lengths[n]) for n in names]
        else:
            streams = [Padded(pad_packed(x, cu)[0], (cu[1:] - cu[:-1]).long())
                       for x, cu in (cached[n] for n in names)]
        return self._fused_tokens(streams)

    def forward_batch(self, batch: ModelBatch, layout: Optional[str] = None, reduction: str = "mean", *,
                      path: Optional[str] = None) -> ALARMOutput:
        """Cross-entropy of the batch's targets: their mean (``reduction="mean"``) or sum (``"sum"``), computed in
        ``layout`` ("packed" / "padded"; default ``config.layout``; ``path`` is its deprecated old name).

        The batch's tensors must already be on the model's device (``batch.to(device)``).
        """
        layout = self._resolve_layout(layout, path)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        embed, start, end = self.llm.embed(), self.audio.audio_start, self.audio.audio_end
        if layout == "packed":
            a, cu_a, a_lengths = self._audio_tokens(batch, layout)
            with nvtx_range("alarm/splice"):
                spliced = splice_packed(embed, batch.text, a, cu_a, start, end, self.config.max_length, a_lengths)
            labels, n_targets = spliced["labels"], spliced["n_targets"]
            with nvtx_range("alarm/llm"):
                loss = self.llm.loss_packed(spliced["inputs_embeds"], labels, spliced["position_ids"],
                                            spliced["cu_seqlens"], spliced["max_seqlen"], self.config.lm_head_chunk,
                                            reduction=reduction, n_targets=n_targets)
            n_tokens = labels.numel()
        else:
            a = self._audio_tokens(batch, layout)
            with nvtx_range("alarm/splice"):
                spliced = splice_padded(embed, batch.text, a, start, end, self.config.max_length)
            labels = spliced["labels"]
            with nvtx_range("alarm/llm"):
                loss = self.llm.loss_padded(spliced["inputs_embeds"], spliced["attention_mask"], labels,
                                            spliced["position_ids"])
            n_tokens = int(spliced["attention_mask"].sum())
            n_targets = int((labels != IGNORE).sum())
        if reduction == "sum" and layout == "padded":
            loss = loss * n_targets
        return ALARMOutput(loss, n_tokens, n_targets)

    @torch.no_grad()
    def score_targets(self, batch: ModelBatch) -> Tensor:
        """Summed log-probability of each example's target given its audio and prompt (fp32 [B], packed layout)."""
        a, cu_a, a_lengths = self._audio_tokens(batch, "packed")
        spliced = splice_packed(self.llm.embed(), batch.text, a, cu_a, self.audio.audio_start, self.audio.audio_end,
                                self.config.max_length, a_lengths)
        return self.llm.target_logprob_packed(spliced["inputs_embeds"], spliced["labels"], spliced["position_ids"],
                                              spliced["cu_seqlens"], spliced["max_seqlen"])

    def forward(self, audio: Sequence, sampling_rate, prompts: Sequence[str], targets: Sequence,
                layout: Optional[str] = None, *, path: Optional[str] = None) -> ALARMOutput:
        """Mean CE of ``targets`` (strings or token-id lists) given audio + prompts, computed in ``layout``
        ("packed" / "padded"; default ``config.layout``; ``path`` is its deprecated old name).

        audio: B waveforms (1-D, or [channels, samples]); sampling_rate: int or B ints (Hz).
        """
        waves, rates = self._check(audio, sampling_rate, ("prompts", prompts), ("targets", targets))
        text = tokenize_batch(self.tokenizer, prompts, targets, device=self.audio.audio_start.device)
        layout = self._resolve_layout(layout, path)
        return self.forward_batch(ModelBatch(text, waves=waves, rates=rates), layout)

    # ---- inference -----------------------------------------------------------------------------
    def prompt_embeddings(self, audio, sampling_rate, prompts, system_prompt: Optional[str] = SYSTEM_PROMPT) -> dict:
        """Left-padded generation inputs: inputs_embeds [B, L, H] (LLM dtype) and attention_mask [B, L].

        Each row: [system turn (``system_prompt``; None: no system turn)] ``<|im_start|>user\\n`` audio_start
        | audio tokens | audio_end, the prompt, then ``<|im_end|>\\n<|im_start|>assistant\\n<think>\\n``
        (never truncated)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        waves, rates = self._check(audio, sampling_rate, ("prompts", prompts))
        a = self.audio_embeddings(waves, rates)
        text = tokenize_batch(self.tokenizer, prompts, None, device=self.audio.audio_start.device,
                              system=system_prompt)
        # no truncation: config.max_length bounds training sequences, not prompts
        batch = splice_padded(self.llm.embed(), text, a, self.audio.audio_start, self.audio.audio_end,
                              1 << 62, left_pad=True)
        return dict(inputs_embeds=batch["inputs_embeds"].to(self.llm.dtype), attention_mask=batch["attention_mask"])

    @torch.no_grad()
    def generate(self, audio, prompt, sampling_rate: int | Sequence[int] = 16000,
                 max_thinking_tokens: Optional[int] = 1024, max_new_tokens: int = 8192,
                 system_prompt: Optional[str] = SYSTEM_PROMPT, **kwargs) -> dict:
        """Answer ``prompt`` (str or B strs) about ``audio`` (one clip or B clips) with the published protocol.

        Defaults: the published system prompt, a 1024-token thinking budget then up to 8192 answer tokens
        (``alarm.generation``), Qwen3's recommended sampling with seed 0 (``SAMPLING_DEFAULTS``); pass
        ``do_sample=False`` for greedy decoding, ``seed=...`` for another seed. Extra keyword arguments go to
        ``alarm.generation.generate_with_thinking_budget``.
        Returns dict(text: B decoded strings, generation: ``alarm.generation.ThinkingGeneration``).
        """
        return _generate(self.llm, self.tokenizer,
                         self.prompt_embeddings(audio, sampling_rate, prompt, system_prompt=system_prompt),
                         max_thinking_tokens, max_new_tokens, **kwargs)

    # ---- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, folder: str) -> None:
        """Write ``folder`` with ``alarm_config.json``, ``audio_side.safetensors`` (adapters, fusion, separators,
        BN buffers) and ``SHA256SUMS`` (the weights' checksum, verified by ``from_pretrained``) as a whole
        (``write_saved_model``): a reader or a killed save leaves the old model or the new one, never a mix.
        Other files kept in ``folder`` are carried over.
        Encoders and the LLM are not saved: they are rebuilt from their ``path`` (or, when randomly
        initialised, from their config and ``init_seed``, deterministically)."""
        if any(ad.folded for ad in self.audio.adapters.values() if ad.kind == "conv"):
            raise ValueError("this model's BatchNorms were folded (inference only); save before folding")
        write_saved_model(folder, self.audio.state_dict(), self.config)

    def load_adapter(self, name: str, folder: str, source_name: Optional[str] = None) -> None:
        """Stage B: copy the adapter ``source_name`` (default ``name``) of a saved (stage-A) model in
        ``folder`` into this model's adapter ``name`` (strict: every tensor must match)."""
        if name not in self.audio.adapters:
            raise ValueError(f"this model has no encoder {name!r}; it has {list(self.audio.adapters)}")
        load_saved_config(folder)  # checks the folder is a saved model
        prefix = f"adapters.{source_name or name}."
        state = {k[len(prefix):]: v for k, v in _load_weights(folder).items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{folder} holds no adapter {source_name or name!r}")
        try:
            self.audio.adapters[name].load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"adapter {name!r} from {folder} does not fit this model: {e}") from e

    @classmethod
    def from_pretrained(cls, folder: str, tokenizer=None, llm: Optional[FrozenLLM] = None, **overrides
                        ) -> "ALARMModel":
        """Rebuild a saved model (``overrides`` replace config fields, e.g. ``layout="padded"``).

        Raises ValueError naming the file for a missing folder or file, bad JSON or config, a file that differs
        from its checksum in ``SHA256SUMS`` (``alarm.fileio.CorruptFileError``), or an unreadable weights file
        (all checked before the frozen encoders and LLM are loaded). A folder saved before checksums existed
        (no ``SHA256SUMS``) is loaded unverified, with a warning."""
        cfg = load_saved_config(folder, **overrides)
        w_path = os.path.join(folder, WEIGHTS_NAME)
        state = _load_weights(folder)
        model = cls(cfg, tokenizer=tokenizer, llm=llm)
        missing, unexpected = model.audio.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights in {w_path} do not match the config: missing {missing}, unexpected {unexpected}")
        return model


def load_saved_config(folder: str, **overrides) -> ALARMConfig:
    """The ``ALARMConfig`` of a folder written by ``save_pretrained`` (cheap: nothing is built).

    Raises ValueError naming the folder or file when the folder or one of its two files is missing, or
    the config is not valid UTF-8 JSON of known ``ALARMConfig`` fields."""
    if not os.path.isdir(folder):
        raise ValueError(f"model folder not found: {folder}" if not os.path.exists(folder)
                         else f"model path is not a folder: {folder}")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not os.path.isfile(os.path.join(folder, name)):
            raise ValueError(f"{folder} is not a saved ALARM model: {name} is missing")
    cfg_path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(cfg_path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{cfg_path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(raw).__name__}")
    try:
        return ALARMConfig.from_dict({**ALARMConfig.upgrade_legacy_fields(raw),
                                      **ALARMConfig.upgrade_legacy_fields(overrides)})
    except (ValueError, TypeError) as e:
        raise ValueError(f"{cfg_path}: {e}") from None


def write_saved_model(folder: str, state: Dict[str, Tensor], config: ALARMConfig) -> None:
    """Write a model folder as a whole (``alarm.fileio.atomic_write_folder``): the audio side's ``state`` in
    ``audio_side.safetensors`` (its sha256 in ``SHA256SUMS``) and ``config`` in ``alarm_config.json``. Other
    files already in ``folder`` are carried over."""
    weights = save_safetensors({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata={"format": "pt"})
    config_json = config.to_json()

    def write(tmp: str) -> None:
        digest = atomic_write_bytes(os.path.join(tmp, WEIGHTS_NAME), weights)
        atomic_write_text(os.path.join(tmp, CONFIG_NAME), config_json)
        atomic_write_text(os.path.join(tmp, CHECKSUMS_NAME), format_checksums({WEIGHTS_NAME: digest}))

    atomic_write_folder(folder, write, owned=(CONFIG_NAME, WEIGHTS_NAME, CHECKSUMS_NAME))


def _weights_digest(folder: str) -> Optional[str]:
    """The weights' sha256 recorded in a model folder's ``SHA256SUMS`` (None: saved before checksums existed)."""
    sums = os.path.join(folder, CHECKSUMS_NAME)
    if not os.path.isfile(sums):
        return None
    with open(sums, encoding="utf-8", errors="replace") as fh:
        digests = parse_checksums(fh.read(), sums)
    if WEIGHTS_NAME not in digests:
        raise CorruptFileError(f"{sums}: no checksum for {WEIGHTS_NAME}: the checksum list is damaged")
    return digests[WEIGHTS_NAME]


def verify_saved_model(folder: str) -> bool:
    """Check a model folder's weights against its ``SHA256SUMS``: True when verified, False for a folder saved
    before checksums existed; CorruptFileError naming the file when they differ or are missing."""
    load_saved_config(folder)
    digest = _weights_digest(folder)
    if digest is not None:
        verify_files(folder, {WEIGHTS_NAME: digest})
    return digest is not None


def _load_weights(folder: str) -> Dict[str, Tensor]:
    """The weights of a model folder, checked against its ``SHA256SUMS``; ValueError (``CorruptFileError``)
    naming the file when they differ or are unreadable. A folder saved before checksums existed is read
    unchecked, with a warning."""
    path = os.path.join(folder, WEIGHTS_NAME)
    digest = _weights_digest(folder)
    if digest is not None:
        data = read_verified(path, digest)
    else:
        warnings.warn(f"{folder}: saved before checksums existed (no {CHECKSUMS_NAME}): its weights are loaded "
                      "unverified; save the model again (save_pretrained) to add them", stacklevel=3)
        with open(path, "rb") as fh:
            data = fh.read()
    try:
        return load_safetensors(data)
    except (SafetensorError, RuntimeError, ValueError) as e:
        raise CorruptFileError(f"cannot read weights {path}: {e} (corrupt or truncated file?)") from None


class ALARMEnsemble:
    """ALARM-E (inference only): the prompt holds the audio once per model, as the published evaluation builds it.

    The models must share one frozen LLM and tokenizer (build the second with ``llm=first.llm,
    tokenizer=first.tokenizer``). Sequence for N models: [system turn] ``<|im_start|>user\\n``, the
    introduction ``ensemble_intro(N)``, then for model i: ``ensemble_header(i, N)`` | audio_start_i |
    tokens_i | audio_end_i | ``"\\n"``, then the prompt and ``<|im_end|>\\n<|im_start|>assistant\\n<think>\\n``
    (texts in ``alarm.prompts``; each piece is tokenized on its own, as published).
    """

    def __init__(self, models: Sequence[ALARMModel]):
        if len(models) < 2:
            raise ValueError("an ensemble needs at least two models")
        if any(m.llm is not models[0].llm for m in models[1:]):
            raise ValueError("ensemble members must share one LLM (pass llm=first.llm when building them)")
        self.models = list(models)
        self.llm, self.tokenizer = models[0].llm, models[0].tokenizer

    def _ids(self, text: str, dev) -> Tensor:
        return torch.tensor(self.tokenizer.encode(text, add_special_tokens=False), dtype=torch.long, device=dev)

    @torch.no_grad()
    def prompt_embeddings(self, audio, sampling_rate, prompts, system_prompt: Optional[str] = SYSTEM_PROMPT) -> dict:
        """Left-padded inputs_embeds [B, L, H] and attention_mask [B, L] holding every model's audio."""
        if isinstance(prompts, str):
            prompts = [prompts]
        first = self.models[0]
        waves, rates = first._check(audio, sampling_rate, ("prompts", prompts))
        per_model = [m.audio_embeddings(waves, rates) for m in self.models]
        embed, dev, n = self.llm.embed(), first.audio.audio_start.device, len(self.models)
        head = [self._ids(system_turn(system_prompt), dev), self._ids(USER_PREFIX, dev),
                self._ids(ensemble_intro(n), dev)]
        rows = []
        for b, prompt in enumerate(prompts):
            parts = [embed(torch.cat(head))]
            for i, (m, toks) in enumerate(zip(self.models, per_model, strict=True), start=1):
                parts += [embed(self._ids(ensemble_header(i, n), dev)), m.audio.audio_start[None], toks[b],
                          m.audio.audio_end[None], embed(self._ids("\n", dev))]
            parts.append(embed(self._ids(prompt + ASSISTANT_SUFFIX, dev)))
            rows.append(torch.cat([p.to(self.llm.dtype) for p in parts]))
        longest = max(r.shape[0] for r in rows)
        x = rows[0].new_zeros(len(rows), longest, rows[0].shape[1])
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=dev)
        for b, r in enumerate(rows):
            x[b, longest - r.shape[0]:], mask[b, longest - r.shape[0]:] = r, 1
        return dict(inputs_embeds=x, attention_mask=mask)

    @torch.no_grad()
    def generate(self, audio, prompt, sampling_rate=16000, max_thinking_tokens: Optional[int] = 1024,
                 max_new_tokens: int = 8192, system_prompt: Optional[str] = SYSTEM_PROMPT, **kwargs) -> dict:
        """Same contract and defaults as ``ALARMModel.generate``."""
        return _generate(self.llm, self.tokenizer,
                         self.prompt_embeddings(audio, sampling_rate, prompt, system_prompt=system_prompt),
                         max_thinking_tokens, max_new_tokens, **kwargs)

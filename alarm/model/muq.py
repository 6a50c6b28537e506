"""MuQ (``OpenMuQ/MuQ-large-msd-iter``) through the ``muq`` package (optional extra ``muq``, imported lazily).

The published ALARM computation (``Blinorot/ALARM`` src/model/audio/*_implementations/muq.py): each clip at
24 kHz is cut into 30 s pieces, each zero-padded to 30 s with an attention mask over its own samples; MuQ
computes its log-mel (``MelSTFT``: n_fft 2048, hop 240, 128 mels, dB; last frame dropped), normalises it with
its statistics, subsamples it 4x in time (``Conv2dSubsampling``: 25 Hz, 750 frames per piece) and runs its 12
conformer blocks (transformers' ``Wav2Vec2ConformerEncoder``) with the mask taken every 960 samples; a piece of
``n`` samples keeps ``n // 960`` frames (the mask covers ``ceil(n / 960)``). Layers ``[4, 8, 12]`` index
MuQ's ``hidden_states``: 4 and 8 are block outputs, 12 the last block's output after the conformer's final
LayerNorm.

How it runs here: the model, its front end (``preprocessing``, ``normalize``), ``conv`` and ``conformer`` are
the package's own modules, but this wrapper calls them itself instead of ``MuQ.forward``: muq 0.1.0 reads
``hidden_states`` from the conformer's output and gives the conformer a config without
``_attn_implementation``, and transformers >= 5 (which this project needs) returns no ``hidden_states`` from a
bare encoder and requires that attribute. The selected block outputs are captured by hooks (as for every
``HiddenStatesEncoder``). The log-mel is computed in float32 on the encoder's device, as published (muq's
``preprocessing`` would cast a bfloat16 waveform to float16), then cast to the encoder's dtype.

Tests and CPU demos use ``alarm.model.tiny.TinyMuQ``, a random module of the same structure
(``hf_config={"tiny_stand_in": True, ...}``); the ``muq`` package is not needed for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .config import EncoderSpec
from .encoders import _DTYPES, FrontEnd, HiddenStatesEncoder, _cut, register_encoder
from ..extras import require
from ..hf import checkpoint_folder

__all__ = ["MuQAudioEncoder", "MuQFrontEnd", "load_muq", "MUQ_FEATURE"]

MUQ_FEATURE = "melspec_2048"  # MuQ's only input feature


def _import_muq():
    muq = require("muq", "the MuQ encoder", "muq", extra="muq")  # see docs/model.md
    return muq.MuQ, muq.MuQConfig


def load_muq(spec: EncoderSpec) -> nn.Module:
    """The MuQ module for ``spec``: pretrained from ``spec.path`` (a folder with ``config.json`` and
    ``model.safetensors``, or a hub id), random from ``spec.hf_config`` (MuQConfig fields), or the tiny
    stand-in (``hf_config["tiny_stand_in"]``); in ``spec.dtype``."""
    dtype = _DTYPES[spec.dtype]
    if spec.path is None and spec.hf_config is not None and spec.hf_config.get("tiny_stand_in"):
        from .tiny import TinyMuQ
        return TinyMuQ(**{k: v for k, v in spec.hf_config.items() if k != "tiny_stand_in"}).to(dtype)
    MuQ, MuQConfig = _import_muq()
    if spec.path is not None:
        folder = checkpoint_folder(spec.path, ["config.json", "model.safetensors"])
        file = os.path.join(folder, "model.safetensors")
        if not os.path.isfile(file):
            raise ValueError(f"{folder}: no model.safetensors (expected the MuQ-large-msd-iter files)")
        model = MuQ.from_pretrained(folder)
        _check_encoder_weights(model, file)
    elif spec.hf_config is not None:
        model = MuQ(MuQConfig(**spec.hf_config))
    else:
        raise ValueError(f"encoder {spec.name}: give a path (pretrained) or hf_config (random init)")
    return model.to(dtype)


def _check_encoder_weights(model: nn.Module, file: str) -> None:
    """ValueError unless the checkpoint ``file`` holds every tensor of the conv front end and the conformer (the
    hub mixin loads non-strictly, so a missing tensor would otherwise stay random)."""
    from safetensors import safe_open

    with safe_open(file, framework="pt") as f:
        present = set(f.keys())
    needed = [k for k in model.state_dict() if k.startswith(("model.conv.", "model.conformer."))]
    missing = [k for k in needed if k not in present]
    if missing:
        raise ValueError(f"{file}: missing MuQ encoder tensors {missing[:8]} ({len(missing)} in all)")


def _use_attention_backend(conformer: nn.Module) -> None:
    """transformers >= 5 picks the attention kernel from ``config._attn_implementation``, which muq's plain-dict
    config lacks: SDPA, or eager for relative position embeddings (SDPA would drop their bias)."""
    cfg = conformer.config
    if getattr(cfg, "_attn_implementation", None) is None:
        relative = getattr(cfg, "position_embeddings_type", None) == "relative"
        cfg._attn_implementation = "eager" if relative else "sdpa"


@dataclass(frozen=True)
class MuQFrontEnd(FrontEnd):
    """MuQ's published front end, no weights: clips cut into ``window``-sample pieces, each zero-padded to the
    window (``wav [C, window]`` float32) with an int64 ``mask`` over its own samples; ``n // frame_samples`` frames
    per piece. (MuQ's log-mel needs its module, so it is computed with the network, in ``run``.)"""

    window: int
    frame_samples: int

    def chunk_inputs(self, waves):
        pieces, per_clip = _cut(waves, self.window)
        n = torch.tensor([len(c) for c in pieces], dtype=torch.int64)
        wav = torch.stack([nn.functional.pad(c.float(), (0, self.window - len(c))) for c in pieces])
        mask = (torch.arange(self.window, device=wav.device)[None, :] < n.to(wav.device)[:, None]).to(torch.int64)
        return {"wav": wav, "mask": mask}, n // self.frame_samples, per_clip


class MuQAudioEncoder(HiddenStatesEncoder):
    """MuQ as published (module docstring): :class:`MuQFrontEnd` (``spec.chunk_seconds`` = 30 s pieces), then
    MuQ's log-mel, subsampling and conformer; ``n // (sample_rate / 25)`` frames kept per piece (25 Hz), layer
    ``n_blocks`` after the final LayerNorm. ``model``: an already built MuQ-structured module (tests)."""

    FRAME_RATE = 25

    def __init__(self, spec: EncoderSpec, model: nn.Module | None = None):
        model = load_muq(spec) if model is None else model
        if spec.sample_rate % self.FRAME_RATE:
            raise ValueError(f"encoder {spec.name}: sample_rate {spec.sample_rate} is not a multiple of 25 Hz")
        frame_samples = spec.sample_rate // self.FRAME_RATE
        window = int(round(spec.chunk_seconds * spec.sample_rate))
        if window % frame_samples:
            raise ValueError(f"encoder {spec.name}: chunk_seconds {spec.chunk_seconds} is not a whole number of "
                             f"25 Hz frames")
        _use_attention_backend(model.model.conformer)
        super().__init__(spec, model, blocks="model.conformer.layers", final_norm="model.conformer.layer_norm",
                         call=self._encode)
        self.front = MuQFrontEnd(window, frame_samples)

    def chunk_inputs(self, waves):
        return self.front.chunk_inputs(waves)

    def front_end(self) -> MuQFrontEnd:
        return self.front

    def hidden(self, inputs, lengths):
        """MuQ's log-mel of the padded pieces in float32 on the encoder's device (its own ``preprocessing`` and
        ``normalize``), then the network in the encoder's dtype."""
        core = self.model.model
        wav = inputs["wav"].to(next(self.model.parameters()).device, torch.float32)
        mel = core.normalize(core.preprocessing(wav, features=[MUQ_FEATURE]))[MUQ_FEATURE]
        return super().hidden({"mel": mel, "mask": inputs["mask"]}, lengths)

    @staticmethod
    def _encode(model: nn.Module, inputs) -> None:
        core = model.model
        x = core.conv(inputs["mel"])
        mask = inputs["mask"].bool()
        skip = int(mask.shape[-1] / x.shape[1])  # as MuQ: the mask sampled every 960 samples
        core.conformer(x, attention_mask=mask[:, ::skip][:, : x.shape[1]])


register_encoder("muq", MuQAudioEncoder)

"""SSLAM, natively: the EAT / data2vec 2.0 audio ViT-B that ``ta012/SSLAM_AS2M_Finetuned`` holds, its published
front end, and a loader that reads the published tensors by an explicit key map (never the checkpoint's own
code: upstream ships it only as remote code, which this project never runs).

The model (``SSLAMViT``), as the published code computes it (``ta012/SSLAM``, models/images.py, modules.py;
ALARM's ``SSLAMEncoder.get_hidden_states``):

- input: a normalised 128-bin Kaldi fbank piece ``[C, T, 128]`` (time, mel), ``T`` a multiple of 16;
- patch embedding: ``Conv2d(1, 768, 16, stride=16)`` over the ``[T, 128]`` image, flattened time-major:
  token ``t * 8 + f`` is time patch ``t``, mel patch ``f`` (a 1024-frame piece: a 64 x 8 grid, 512 tokens);
- fixed 2-D sin-cos positions (MAE's ``get_2d_sincos_pos_embed_flexible`` over a ``max_length x 8`` grid: the
  first half of the channels encodes the *mel* patch index, the second half the time patch index, each as
  ``[sin, cos]`` of ``index / 10000 ** (i / (D / 4))``), the first ``T / 16 * 8`` rows added to the patches;
- a learned CLS token prepended, then ``pre_norm`` (LayerNorm, eps 1e-6), then 12 *post-norm* blocks
  (``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``, 12 heads, MLP 3072 with GELU, qkv with bias);
- no mask: every piece is a full 1024-frame image (the frames past the clip are zero fbank, normalised).

The fine-tuned checkpoint's AudioSet head (``fc_norm``, ``head``) is not part of the encoder and is skipped.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alarm_kernels.frontend import kaldi_fbank
from alarm_kernels.varlen import seqlens_to_cu_seqlens

from .config import EncoderSpec
from .encoders import _DTYPES, FrontEnd, HiddenStatesEncoder, register_encoder
from ..hf import checkpoint_folder

__all__ = ["SSLAMConfig", "SSLAMViT", "SSLAMFrontEnd", "SSLAMAudioEncoder", "sincos_positions", "map_sslam_state",
           "load_sslam", "SSLAM_NORM_MEAN", "SSLAM_NORM_STD"]

SSLAM_NORM_MEAN = -4.268  # the published fbank statistics (ALARM's SSLAMFeatureExtractor, the model card)
SSLAM_NORM_STD = 4.569
CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class SSLAMConfig:
    """The ViT's shape, in the published ``config.json``'s names (its other keys, such as ``num_classes`` or
    dropout rates, do not change the frozen encoder and are ignored). ``max_length``: time patches of the
    fixed position table (768 = 12 288 frames; one 1024-frame piece uses 64)."""
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 16
    mel_bins: int = 128
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    max_length: int = 768

    @classmethod
    def from_published(cls, config: Dict, where: str = "config") -> "SSLAMConfig":
        """The shape from a published EAT/SSLAM ``config.json`` dict; ValueError (naming ``where``) for a variant
        this module does not compute (pre-norm blocks, several input channels, overlapping patches, learned
        positions)."""
        unsupported = {"layer_norm_first": False, "in_chans": 1, "fixed_positions": True}
        for key, value in unsupported.items():
            if key in config and config[key] != value:
                raise ValueError(f"{where}: {key}={config[key]!r} is not supported (SSLAM has {key}={value!r})")
        if "stride" in config and config["stride"] != config.get("patch_size", cls.patch_size):
            raise ValueError(f"{where}: stride {config['stride']} != patch_size (overlapping patches unsupported)")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    def __post_init__(self):
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError(f"SSLAM: embed_dim {self.embed_dim} must divide by num_heads {self.num_heads} and by 4")
        if self.mel_bins % self.patch_size:
            raise ValueError(f"SSLAM: mel_bins {self.mel_bins} must be a multiple of patch_size {self.patch_size}")


def sincos_positions(dim: int, time_patches: int, mel_patches: int) -> Tensor:
    """The fixed position table ``[time_patches * mel_patches, dim]`` (float32), row ``t * mel_patches + f``:
    channels ``[0, dim/2)`` encode ``f``, ``[dim/2, dim)`` encode ``t``, each ``[sin, cos]`` of
    ``index * 10000 ** (-i / (dim / 4))``, ``i < dim / 4`` (computed in float64)."""
    quarter = dim // 4
    freq = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)

    def encode(index: Tensor) -> Tensor:
        angle = index.to(torch.float64)[:, None] * freq[None, :]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    t = torch.arange(time_patches).repeat_interleave(mel_patches)
    f = torch.arange(mel_patches).repeat(time_patches)
    return torch.cat([encode(f), encode(t)], dim=1).float()


class SSLAMAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection, no mask."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class SSLAMMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SSLAMBlock(nn.Module):
    """Post-norm transformer block: ``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``."""

    def __init__(self, cfg: SSLAMConfig):
        super().__init__()
        d = cfg.embed_dim
        self.attn = SSLAMAttention(d, cfg.num_heads, cfg.qkv_bias)
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = SSLAMMlp(d, int(d * cfg.mlp_ratio))
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class SSLAMViT(nn.Module):
    """The SSLAM audio ViT (module docstring). ``forward(fbank [C, T, mel_bins]) -> [C, 1 + T/p * mel_bins/p, D]``
    (the last block's output, CLS token first)."""

    def __init__(self, cfg: SSLAMConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.embed_dim, cfg.patch_size
        self.patch_embed = nn.Conv2d(1, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        # fixed, not trained: a buffer (the checkpoint's copy replaces it on loading)
        self.register_buffer("positions", sincos_positions(d, cfg.max_length, cfg.mel_bins // p), persistent=False)
        self.pre_norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.blocks = nn.ModuleList(SSLAMBlock(cfg) for _ in range(cfg.depth))

    @property
    def max_frames(self) -> int:
        """The longest piece (fbank frames) the position table covers."""
        return self.cfg.max_length * self.cfg.patch_size

    def forward(self, fbank: Tensor) -> Tensor:
        c, t, m = fbank.shape
        p = self.cfg.patch_size
        if t % p or t > self.max_frames or m != self.cfg.mel_bins:
            raise ValueError(f"SSLAM: fbank pieces must be [C, T, {self.cfg.mel_bins}] with T a multiple of {p} "
                             f"and at most {self.max_frames}, got {list(fbank.shape)}")
        x = self.patch_embed(fbank.unsqueeze(1)).flatten(2).transpose(1, 2)  # time-major patch order
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        x = torch.cat([self.cls_token.expand(c, -1, -1).to(x.dtype), x], dim=1)
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        return x


# ---- the published checkpoint's tensors --------------------------------------------------------------------
# ta012/SSLAM_AS2M_Finetuned (transformers layout, EAT's remote code: a wrapper whose ``model`` is the ViT)
_TOP_KEYS = {
    "model.local_encoder.proj.weight": "patch_embed.weight",
    "model.local_encoder.proj.bias": "patch_embed.bias",
    "model.extra_tokens": "cls_token",
    "model.pre_norm.weight": "pre_norm.weight",
    "model.pre_norm.bias": "pre_norm.bias",
}
_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
               "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
               "mlp.fc2.bias")
_POSITIONS_KEY = "model.fixed_positional_encoder.positions"  # [1, max_length * 8, D]; optional (it is computable)
_SKIPPED_PREFIXES = ("model.fc_norm.", "model.head.")  # the AudioSet classifier of the fine-tuned model


def _published_names(cfg: SSLAMConfig) -> Dict[str, str]:
    names = dict(_TOP_KEYS)
    for i in range(cfg.depth):
        for key in _BLOCK_KEYS:
            if key == "attn.qkv.bias" and not cfg.qkv_bias:
                continue
            names[f"model.blocks.{i}.{key}"] = f"blocks.{i}.{key}"
    return names


def map_sslam_state(state: Dict[str, Tensor], cfg: SSLAMConfig, where: str = "checkpoint") -> Dict[str, Tensor]:
    """The published state dict -> ``SSLAMViT`` state (incl. ``positions`` when the checkpoint has them).

    ValueError naming ``where`` and every missing or unexpected key, or a tensor of the wrong shape.
    """
    names = _published_names(cfg)
    missing = sorted(k for k in names if k not in state)
    unexpected = sorted(k for k in state if k not in names and k != _POSITIONS_KEY
                        and not k.startswith(_SKIPPED_PREFIXES))
    if missing or unexpected:
        raise ValueError(f"{where}: not an SSLAM/EAT checkpoint of this shape (depth {cfg.depth}): "
                         f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)}), "
                         f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})")
    with torch.device("meta"):
        expected = SSLAMViT(cfg)
    shapes = {k: v.shape for k, v in expected.state_dict().items()}
    out = {ours: state[theirs] for theirs, ours in names.items()}
    if _POSITIONS_KEY in state:
        out["positions"] = state[_POSITIONS_KEY].reshape(-1, cfg.embed_dim)
        shapes["positions"] = expected.positions.shape
    for name, value in out.items():
        if value.shape != shapes[name]:
            key = next((k for k, v in names.items() if v == name), _POSITIONS_KEY)
            raise ValueError(f"{where}: {key} has shape {list(value.shape)}, expected {list(shapes[name])}")
    return out


def _read_state(file: str) -> Dict[str, Tensor]:
    if file.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(file)
    return torch.load(file, map_location="cpu", weights_only=True)  # never unpickle objects


def load_sslam(path: str, dtype: torch.dtype = torch.float32) -> SSLAMViT:
    """``SSLAMViT`` with the published weights: ``path`` is a folder holding ``config.json`` and
    ``model.safetensors`` (or ``pytorch_model.bin``, read with ``weights_only=True``), or a hub id."""
    folder = checkpoint_folder(path, ["config.json", "model.safetensors"])
    cfg_file = os.path.join(folder, "config.json")
    if os.path.isfile(cfg_file):
        with open(cfg_file, encoding="utf-8") as f:
            cfg = SSLAMConfig.from_published(json.load(f), where=cfg_file)
    else:
        cfg = SSLAMConfig()
    file = next((os.path.join(folder, n) for n in CHECKPOINT_FILES if os.path.isfile(os.path.join(folder, n))), None)
    if file is None:
        raise ValueError(f"{folder}: no {' or '.join(CHECKPOINT_FILES)} (expected the SSLAM_AS2M_Finetuned files)")
    state = map_sslam_state(_read_state(file), cfg, where=file)
    model = SSLAMViT(cfg)
    model.load_state_dict({k: v for k, v in state.items() if k != "positions"})
    if "positions" in state:
        model.positions.copy_(state["positions"])
    return model.to(dtype)


def _run_vit(model: SSLAMViT, inputs: Dict[str, Tensor]) -> Tensor:
    return model(inputs["fbank"])


@dataclass(frozen=True)
class SSLAMFrontEnd(FrontEnd):
    """SSLAM's published front end (ALARM's ``SSLAMFeatureExtractor``), no weights: per clip the mean removed,
    160 zero samples on each side, a ``mel_bins``-bin Kaldi fbank (``alarm_kernels.kaldi_fbank``: Hanning window,
    25 ms, 10 ms shift, no dither, no energy), ``F = 1 + (n - 80) // 160`` frames, zero frames appended up to a
    multiple of ``piece_frames`` (1024), then ``(fbank + 4.268) / (2 * 4.569)``; the pieces ``[C, piece_frames,
    mel_bins]`` each keep ``valid_frames // 2`` tokens, so a clip gives ``F // 2``. ``name``: the encoder's."""

    name: str
    piece_frames: int
    mel_bins: int = 128
    EDGE_SAMPLES = 160
    MIN_SAMPLES = 80  # fewer gives no fbank frame

    def fbank(self, waves: List[Tensor]) -> Tuple[Tensor, List[int]]:
        """B 1-D 16 kHz clips -> (their fbanks packed ``[sum F_i, mel_bins]`` on the clips' device (float32;
        float64 for float64 clips), ``F_i`` per clip)."""
        for w in waves:
            if w.numel() < self.MIN_SAMPLES:
                raise ValueError(f"encoder {self.name}: a clip of {w.numel()} samples is too short "
                                 f"(needs >= {self.MIN_SAMPLES})")
        waves = [w if w.dtype == torch.float64 else w.float() for w in waves]  # float64 stays (tests)
        padded = [F.pad(w - w.mean(), (self.EDGE_SAMPLES, self.EDGE_SAMPLES)) for w in waves]
        x = torch.cat(padded)
        cu = seqlens_to_cu_seqlens([p.numel() for p in padded]).to(x.device)
        feats, cu_frames = kaldi_fbank(x, cu, num_mel_bins=self.mel_bins, window="hanning", sample_rate=16000.0,
                                       frame_length_ms=25.0, frame_shift_ms=10.0)
        return feats, (cu_frames[1:] - cu_frames[:-1]).tolist()

    def chunk_inputs(self, waves):
        feats, frames = self.fbank(waves)
        pieces, lengths, per_clip = [], [], []
        for clip, n in zip(feats.split(frames), frames, strict=True):
            whole = -(-n // self.piece_frames) * self.piece_frames
            image = (F.pad(clip, (0, 0, 0, whole - n)) - SSLAM_NORM_MEAN) / (SSLAM_NORM_STD * 2)  # zeros, then scaled
            parts = image.split(self.piece_frames)
            pieces.extend(parts)
            lengths.extend(min(self.piece_frames, n - i * self.piece_frames) // 2 for i in range(len(parts)))
            per_clip.append(len(parts))
        return {"fbank": torch.stack(pieces)}, torch.tensor(lengths, dtype=torch.int64), per_clip


class SSLAMAudioEncoder(HiddenStatesEncoder):
    """SSLAM with the published front end (:class:`SSLAMFrontEnd`, ``spec.chunk_seconds * 100`` = 1024-frame
    pieces): the pieces run whole through :class:`SSLAMViT`; the selected block outputs keep ``valid_frames // 2``
    tokens each (all 512 of a full piece), in the patch order (time-major), the CLS token dropped: ``F // 2``
    tokens per clip at 50 Hz.

    Weights: ``spec.path`` (the published checkpoint, ``load_sslam``) or, without a path, random from
    ``spec.hf_config`` (``SSLAMConfig`` fields)."""

    FRAMES_PER_SECOND = 100
    KERNEL_FRONT_END = True

    def __init__(self, spec: EncoderSpec):
        if spec.path is not None:
            model = load_sslam(spec.path, _DTYPES[spec.dtype])
        elif spec.hf_config is not None:
            model = SSLAMViT(SSLAMConfig(**spec.hf_config)).to(_DTYPES[spec.dtype])
        else:
            raise ValueError(f"encoder {spec.name}: give a path (pretrained) or hf_config (random init)")
        piece_frames = int(round(spec.chunk_seconds * self.FRAMES_PER_SECOND))
        p = model.cfg.patch_size
        if piece_frames % p or piece_frames > model.max_frames:
            raise ValueError(f"encoder {spec.name}: chunk_seconds {spec.chunk_seconds} gives {piece_frames}-frame "
                             f"pieces; SSLAM needs a multiple of {p} frames, at most {model.max_frames} (published "
                             "10.24 s = 1024)")
        super().__init__(spec, model, blocks="blocks", drop_tokens=1, call=_run_vit)
        self.front = SSLAMFrontEnd(spec.name, piece_frames, model.cfg.mel_bins)

    def chunk_inputs(self, waves):
        return self.front.chunk_inputs(waves)

    def front_end(self) -> SSLAMFrontEnd:
        return self.front


register_encoder("sslam", SSLAMAudioEncoder)

"""Frozen audio encoders and their registry.

Every encoder is an :class:`AudioEncoder`: given 1-D float32 waveforms at ``spec.sample_rate`` it returns
the *selected* hidden states only, packed: ``k`` tensors ``[total_frames, D]`` plus int32 ``cu_seqlens``
``[B+1]`` (``k = len(spec.layers)``; index 0 = the input of the first block, i = the output of block i).
Encoders always run frozen, in eval mode, under ``torch.no_grad()`` and outside autocast (in their own dtype,
so features computed online under mixed precision equal cached ones). Blocks above the highest selected
index are dropped at construction and the selected states are captured by forward hooks, so the full
stack of hidden states never exists. Clips longer than ``spec.chunk_seconds`` are cut into chunks and all
chunks of a batch run as one batch; each chunk's result does not depend on the other chunks.

Built-in kinds, each computing what the published ALARM computes: ``"whisper"`` (transformers
``WhisperEncoder``), ``"w2v-bert"`` (``Wav2Vec2BertModel``), ``"muq"`` (the ``muq`` package, optional extra;
``alarm.model.muq``) and ``"sslam"`` (this project's ViT reading the published tensors; ``alarm.model.sslam``);
the last two register themselves when the package ``alarm.model`` is imported:

- Whisper (default, ``spec.clip_length=False``): every clip is cut into 30 s pieces; each piece is
  zero-padded to 30 s (3000 mel frames, log-mel clamped per piece as transformers'
  ``WhisperFeatureExtractor`` does) and encoded whole, without a mask. Frames kept per piece:
  ``ceil(samples / 160) // 2`` (floor division, as published), so a clip gives
  ``sum_pieces(ceil(n_i / 160)) // 2`` frames at 50 Hz. ``spec.clip_length=True`` (opt-in, faster for short
  clips, *not* the published features): each piece runs at its own length (the first ``T`` rows of the
  positional embedding, padded keys masked), ``ceil(mel_frames / 2)`` frames; adapters trained on one
  setting do not transfer to the other.
- w2v-BERT 2.0: each whole clip gets 160 zero samples on each side and its fbank features are normalized
  over the whole clip (``SeamlessM4TFeatureExtractor``: 100 frames/s stacked by 2, so
  ``(1 + (n - 80) // 160) // 2`` frames at 50 Hz); the feature frames are then cut into 30 s (1500-frame)
  chunks that run as one padded batch with an attention mask.
- MuQ (``muq_large()``): 30 s pieces at 24 kHz, each zero-padded with a mask over its samples; ``n // 960``
  frames per piece (25 Hz); layers ``[4, 8, 12]`` of MuQ's ``hidden_states``, 12 = the last block after the
  conformer's final LayerNorm (``final_norm``). Details in ``alarm/model/muq.py``.
- SSLAM (``sslam()``): mean removed, 160 zero samples on each side, 128-bin Kaldi fbank (Hanning, 10 ms shift),
  zero frames up to a multiple of 1024, ``(fbank + 4.268) / (2 * 4.569)``; 1024-frame (10.24 s) pieces run
  whole, ``valid_frames // 2`` tokens kept per piece (512 of a full one, patch order), CLS dropped: ``F // 2``
  per clip (50 Hz). Layers ``[4, 8, 12]`` = the published ``[3, 7, 11]`` of its block-output list (index 0 =
  block 1). Details in ``alarm/model/sslam.py``.

Adding another encoder (any module with a list of blocks)::

    import torch
    from alarm.model.encoders import HiddenStatesEncoder, register_encoder

    def build_mine(spec):                                 # spec: alarm.model.config.EncoderSpec
        model = MyEncoder.from_pretrained(spec.path)      # the encoder's own package

        def features(chunks):                             # list of 1-D float32 tensors at spec.sample_rate
            lengths = torch.tensor([len(c) for c in chunks])
            wav = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True)
            mask = (torch.arange(wav.shape[1])[None] < lengths[:, None]).long()
            return {"x": wav, "attention_mask": mask}, lengths // 320   # output frames per chunk

        return HiddenStatesEncoder(spec, model, blocks="encoder.layers", features=features,
                                   final_norm="encoder.layer_norm")

    register_encoder("mine", build_mine)                  # then EncoderSpec(kind="mine", ...)

``blocks`` names the ``nn.ModuleList`` of transformer blocks (dotted path); each block's output (a tensor,
or a tuple whose first item is the hidden states ``[C, T, D]``) is captured for the selected indices.
``final_norm`` names a module applied to the output of the stack's last block when that index is selected,
``drop_tokens`` removes leading tokens (a CLS token) from every captured state; the model is called as
``model(**inputs)`` unless ``call(model, inputs)`` is given.
"""
from __future__ import annotations

import abc
import functools
import itertools
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alarm_kernels.varlen import seqlens_to_cu_seqlens

from .config import EncoderSpec

__all__ = ["AudioEncoder", "WhisperAudioEncoder", "HiddenStatesEncoder", "W2VBertAudioEncoder", "ENCODERS",
           "register_encoder", "build_encoder"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class AudioEncoder(nn.Module, abc.ABC):
    """Base class: subclasses implement ``features`` (chunks -> model inputs, lengths) and ``hidden``."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec

    @abc.abstractmethod
    def features(self, chunks: List[Tensor]) -> Tuple[Dict[str, Tensor], Tensor]:
        """1-D waveforms -> (batched model inputs, int64 output frames per chunk [C])."""

    @abc.abstractmethod
    def hidden(self, inputs: Dict[str, Tensor], lengths: Tensor) -> List[Tensor]:
        """Batched inputs -> the selected hidden states, k tensors [C, T >= max(lengths), D]."""

    def train(self, mode: bool = True):
        """Frozen: always stays in eval mode."""
        return super().train(False)

    def chunk_inputs(self, waves: List[Tensor]) -> Tuple[Dict[str, Tensor], Tensor, List[int]]:
        """B clips -> (batched model inputs for C chunks, int64 output frames per chunk [C], chunks per clip).

        Default: cut each waveform into ``spec.chunk_seconds`` pieces and call ``features`` on the pieces.
        """
        chunk = max(1, int(round(self.spec.chunk_seconds * self.spec.sample_rate)))
        pieces, per_clip = [], []
        for w in waves:
            parts = list(torch.split(w, chunk))
            pieces.extend(parts)
            per_clip.append(len(parts))
        with torch.autocast("cpu", enabled=False):  # host-side feature extraction stays fp32
            inputs, lengths = self.features(pieces)
        return inputs, lengths, per_clip

    def _device_type(self) -> str:
        """"cuda" / "cpu" / ...: where this encoder's weights live ("cpu" for one without tensors)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device.type
        return "cpu"

    @torch.no_grad()
    def forward(self, waves: List[Tensor]) -> Tuple[List[Tensor], Tensor]:
        """B waveforms (1-D float32, ``spec.sample_rate`` Hz) -> (k x [total, D] packed, cu_seqlens [B+1])."""
        inputs, lengths, per_clip = self.chunk_inputs(waves)
        # the frozen encoder runs in its own dtype whatever autocast the caller is under: autocast would mix
        # dtypes across the selected layers (float32 norms, bf16 matmuls) and make online features differ from
        # cached ones
        with torch.autocast(self._device_type(), enabled=False):
            states = self.hidden(inputs, lengths)
        t = states[0].shape[1]
        valid = torch.arange(t, device=states[0].device)[None, :] < lengths.to(states[0].device)[:, None]
        packed = [s[valid] for s in states]  # chunks are contiguous per clip: packed per chunk == per clip
        clip_of_chunk = torch.repeat_interleave(torch.arange(len(waves)), torch.tensor(per_clip))
        clip_len = torch.zeros(len(waves), dtype=torch.int64).index_add_(0, clip_of_chunk, lengths.cpu())
        return packed, seqlens_to_cu_seqlens(clip_len, device=packed[0].device)


def _load_hf(spec: EncoderSpec, model_cls, config_cls):
    dtype = _DTYPES[spec.dtype]
    if spec.path is not None:
        return model_cls.from_pretrained(spec.path, dtype=dtype)
    if spec.hf_config is None:
        raise ValueError(f"encoder {spec.name}: give a path (pretrained) or hf_config (random init)")
    return model_cls._from_config(config_cls(**spec.hf_config), dtype=dtype)


class WhisperAudioEncoder(AudioEncoder):
    """Whisper encoder on 30 s windows as published, or at the clip's length with ``spec.clip_length`` (see the
    module docstring); log-mel from transformers' ``WhisperFeatureExtractor``, ``num_mel_bins`` bins,
    100 frames/s, 50 Hz output."""

    def __init__(self, spec: EncoderSpec):
        super().__init__(spec)
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if spec.path is not None:
            full = WhisperModel.from_pretrained(spec.path, dtype=_DTYPES[spec.dtype])
            enc = full.get_encoder()
            del full
        else:
            enc = _load_hf(spec, WhisperEncoder, WhisperConfig)
        n_blocks = len(enc.layers)
        if max(spec.layers) > n_blocks or min(spec.layers) < 0:
            raise ValueError(f"encoder {spec.name}: layers {spec.layers} outside 0..{n_blocks}")
        window_seconds = enc.config.max_source_positions * 2 * 160 / 16000
        if spec.chunk_seconds > window_seconds or (not spec.clip_length and spec.chunk_seconds != window_seconds):
            raise ValueError(f"encoder {spec.name}: chunk_seconds {spec.chunk_seconds} must be Whisper's window "
                             f"({window_seconds} s) unless clip_length=True (then at most that)")
        self.n_blocks = n_blocks
        enc.layers = nn.ModuleList(list(enc.layers)[: max(spec.layers)])
        self.encoder = enc.requires_grad_(False).eval()
        self.extractor = WhisperFeatureExtractor(feature_size=enc.config.num_mel_bins, sampling_rate=16000,
                                                 chunk_length=int(window_seconds))

    def features(self, chunks):
        hop = self.extractor.hop_length
        n = torch.tensor([len(c) for c in chunks])
        if not self.spec.clip_length:  # published: every piece zero-padded to the full window, no mask
            mel = self.extractor([c.numpy() for c in chunks], sampling_rate=16000, return_tensors="pt")
            return {"mel": mel["input_features"]}, (-(-n // hop)) // 2
        n_fft = self.extractor.n_fft
        longest = int(n.max()) + n_fft  # every chunk gets >= n_fft trailing zeros: batch-independent frames
        batch = torch.zeros(len(chunks), longest)
        for i, c in enumerate(chunks):
            batch[i, : len(c)] = c
        mel_frames = (n // hop).clamp(min=1)
        mel = torch.from_numpy(self.extractor._torch_extract_fbank_features(batch.numpy()))
        # the last valid output frame's receptive field reaches mel frame n + 1; at most Whisper's 3000 frames
        t = min(int(mel_frames.max()) + 2, 2 * self.encoder.config.max_source_positions)
        t += t % 2
        return {"mel": mel[..., :t]}, (mel_frames + 1) // 2

    def hidden(self, inputs, lengths):
        enc = self.encoder
        p = next(enc.parameters())
        x = inputs["mel"].to(p.device, p.dtype)
        x = nn.functional.gelu(enc.conv1(x))
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
        t = x.shape[1]
        x = x + enc.embed_positions.weight[:t]
        mask = None
        if self.spec.clip_length:
            keep = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
            mask = mask[:, None, None, :].expand(-1, 1, t, -1)
        want = set(self.spec.layers)
        got = {0: x} if 0 in want else {}
        for i, block in enumerate(enc.layers, start=1):
            out = block(x, mask)
            x = out[0] if isinstance(out, tuple) else out
            if i in want:
                got[i] = enc.layer_norm(x) if i == self.n_blocks else x
        return [got[i] for i in self.spec.layers]


class HiddenStatesEncoder(AudioEncoder):
    """Any encoder module with a list of blocks: keeps blocks up to ``max(spec.layers)`` and captures the
    selected indices with hooks. ``features(chunks) -> (model kwargs, int64 frames [C])`` (not needed by a
    subclass that overrides ``chunk_inputs``); the model is called as ``model(**kwargs)`` unless
    ``call(model, kwargs)`` is given."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, blocks: str,
                 features: Callable[[List[Tensor]], Tuple[Dict[str, Tensor], Tensor]] | None = None,
                 call: Callable[[nn.Module, Dict[str, Tensor]], object] | None = None,
                 final_norm: str | None = None, drop_tokens: int = 0):
        super().__init__(spec)
        owner_path, _, attr = blocks.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        all_blocks = getattr(owner, attr)
        if max(spec.layers) > len(all_blocks) or min(spec.layers) < 0:
            raise ValueError(f"encoder {spec.name}: layers {spec.layers} outside 0..{len(all_blocks)}")
        self.n_blocks, self.drop_tokens = len(all_blocks), drop_tokens
        self.final_norm = model.get_submodule(final_norm) if final_norm else None
        kept = nn.ModuleList(list(all_blocks)[: max(1, max(spec.layers))])
        setattr(owner, attr, kept)
        self.model = model.requires_grad_(False).eval()
        self._features, self._call = features, call
        self._captured: Dict[int, Tensor] = {}
        want = set(spec.layers)
        if 0 in want:
            kept[0].register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        for i, block in enumerate(kept, start=1):
            if i in want:
                # bound methods (not closures), so copy.deepcopy rebinds the hooks to the copy
                block.register_forward_hook(functools.partial(self._store_output, i))

    def _pre_hook(self, module, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        self._captured[0] = x

    def _store_output(self, index: int, module, args, output):
        x = output[0] if isinstance(output, tuple) else output
        if index == self.n_blocks and self.final_norm is not None:
            x = self.final_norm(x)
        self._captured[index] = x

    def features(self, chunks):
        if self._features is None:
            raise ValueError(f"encoder {self.spec.name}: give features= or override chunk_inputs")
        return self._features(chunks)

    def hidden(self, inputs, lengths):
        p = next(self.model.parameters())
        inputs = {k: (v.to(p.device, p.dtype) if v.is_floating_point() else v.to(p.device)) for k, v in inputs.items()}
        self._captured = {}
        try:
            if self._call is not None:
                self._call(self.model, inputs)
            else:
                self.model(**inputs)
            return [self._captured[i][:, self.drop_tokens:] for i in self.spec.layers]
        finally:
            self._captured = {}


class W2VBertAudioEncoder(HiddenStatesEncoder):
    """w2v-BERT 2.0 with the published front end: 160 zero samples on each side of the whole clip, fbank
    features normalized over the whole clip, then cut into ``chunk_seconds`` x 50-frame chunks that run as
    one padded batch with an attention mask (see the module docstring)."""

    FRAMES_PER_SECOND = 50
    EDGE_SAMPLES = 160

    def __init__(self, spec: EncoderSpec):
        from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

        super().__init__(spec, _load_hf(spec, Wav2Vec2BertModel, Wav2Vec2BertConfig), "encoder.layers")
        self.extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, stride=2, sampling_rate=16000)

    def clip_features(self, wave: Tensor) -> Tensor:
        """One 1-D 16 kHz clip -> its valid feature frames [F, 160] (float32), ``(1 + (n - 80) // 160) // 2``."""
        if wave.numel() + 2 * self.EDGE_SAMPLES < 400:
            raise ValueError(f"encoder {self.spec.name}: a clip of {wave.numel()} samples is too short (needs >= 80)")
        padded = F.pad(wave, (self.EDGE_SAMPLES, self.EDGE_SAMPLES)).numpy()
        out = self.extractor(padded, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        return out["input_features"][0, : int(out["attention_mask"].sum())]

    def chunk_inputs(self, waves):
        chunk = max(1, int(round(self.spec.chunk_seconds * self.FRAMES_PER_SECOND)))
        with torch.autocast("cpu", enabled=False):
            clips = [list(torch.split(self.clip_features(w), chunk)) for w in waves]
        pieces = [p for parts in clips for p in parts]
        lengths = torch.tensor([len(p) for p in pieces], dtype=torch.int64)
        batch = nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        mask = (torch.arange(batch.shape[1])[None, :] < lengths[:, None]).to(torch.int64)
        return {"input_features": batch, "attention_mask": mask}, lengths, [len(parts) for parts in clips]


# "muq" and "sslam" are registered by their modules (alarm.model.muq, alarm.model.sslam), which the package
# alarm.model imports: they build on HiddenStatesEncoder, so this module cannot import them
ENCODERS: Dict[str, Callable[[EncoderSpec], AudioEncoder]] = {
    "whisper": WhisperAudioEncoder,
    "w2v-bert": W2VBertAudioEncoder,
}


def register_encoder(kind: str, factory: Callable[[EncoderSpec], AudioEncoder]) -> None:
    """Make ``EncoderSpec(kind=kind)`` build its encoder with ``factory(spec)``."""
    ENCODERS[kind] = factory


def build_encoder(spec: EncoderSpec) -> AudioEncoder:
    """The frozen encoder for ``spec`` (ValueError for an unregistered kind)."""
    if spec.kind not in ENCODERS:
        raise ValueError(f"no encoder registered for kind {spec.kind!r}; known: {sorted(ENCODERS)} "
                         "(see alarm.model.encoders.register_encoder)")
    enc = ENCODERS[spec.kind](spec)
    return enc.requires_grad_(False).eval()

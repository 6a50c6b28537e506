"""``ALARMConfig``: everything needed to rebuild an ALARM model (JSON-serialisable dataclasses).

Real dimensions are the defaults (the published ALARM's): adapters 1024 wide, Qwen3-4B hidden 2560, CA d=1024
with 16 heads and FFN 4096, perceivers 20 x 768 with FFN 1x. ``ALARMConfig.tiny()`` gives random tiny
encoders and LLM that run on CPU in seconds. Frozen pretrained parts (encoders, LLM) are referenced by
``path`` (a local folder or hub id for ``from_pretrained``); with ``path=None`` they are built randomly from
``hf_config`` (a dict of transformers config kwargs) and ``init_seed``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

FUSIONS = ("sum", "concat", "CA", "P")
STAGES = ("A", "B")
LAYOUTS = ("packed", "padded")
LEGACY_PATHS = {"fast": "packed", "reference": "padded"}  # the execution mode's name before it was ``layout``
ADAPTERS = ("conv", "mlp", "pool", "identity")
LLM_KERNELS = ("none", "liger", "compile")  # fused RMSNorm / RoPE / SwiGLU of the frozen LLM (alarm.model.llm_kernels)
LLM_FP8 = ("off", "on", "emulate")  # FP8 linear layers of the frozen LLM (torchao float8)
POOL_MODES = ("mean", "max")

QWEN3_4B = "Qwen/Qwen3-4B-Thinking-2507"
QWEN3_4B_CONFIG = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                       rope_theta=5000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def _check_ratio(name: str, value) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= 1 (a pooling window in frames)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass
class EncoderSpec:
    """One frozen audio encoder and its adapter.

    name: unique key ("whisper", "w2v-bert", ...); kind: encoder registry key (see ``encoders.ENCODERS``);
    layers: hidden-state indices kept (0 = embeddings, i = output of block i); dim: encoder width;
    adapter: "conv" (downsample x2), "mlp", "pool" (below) or "identity" (the layer mix alone, at the
    encoder's width and rate: ALARM-P's auxiliary streams); norm: "batch" or "layer" (conv adapters);
    sample_rate: Hz the encoder expects; chunk_seconds: longest piece run at once (clips are split).
    adapter "pool": the layer mix is pooled over windows of ``pool_ratio`` frames (``pool_mode`` "mean" or
    "max", ``alarm_kernels.varlen_pool``), then the MLP and ``llm_proj``: ``ceil(frames / pool_ratio)`` tokens
    (a 50 Hz encoder with ratio 2 gives 25 Hz, like the conv adapter). Other adapters ignore both fields.
    clip_length (Whisper only): False (default, published) pads every 30 s piece to the full window;
    True runs each piece at its own length with masked keys (faster, different features; opt-in).
    """
    name: str
    kind: str
    layers: List[int]
    dim: int
    adapter: str = "conv"
    norm: str = "layer"
    sample_rate: int = 16000
    chunk_seconds: float = 30.0
    clip_length: bool = False
    path: Optional[str] = None
    hf_config: Optional[Dict[str, Any]] = None
    dtype: str = "float32"
    pool_ratio: int = 2
    pool_mode: str = "mean"

    def __post_init__(self):
        if self.adapter not in ADAPTERS:
            raise ValueError(f"encoder {self.name}: adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        _check_ratio(f"encoder {self.name}: pool_ratio", self.pool_ratio)
        if self.pool_mode not in POOL_MODES:
            raise ValueError(f"encoder {self.name}: pool_mode must be one of {POOL_MODES}, got {self.pool_mode!r}")
        if self.norm not in ("batch", "layer"):
            raise ValueError(f"encoder {self.name}: norm must be 'batch' or 'layer', got {self.norm!r}")
        if not self.layers:
            raise ValueError(f"encoder {self.name}: select at least one layer")


def whisper_large_v3(**kw) -> EncoderSpec:
    """Whisper-large-v3 encoder spec (layers 7, 15, 23, 31; BatchNorm conv adapter)."""
    return EncoderSpec(**{**dict(name="whisper", kind="whisper", layers=[7, 15, 23, 31], dim=1280, norm="batch",
                                 path="openai/whisper-large-v3", dtype="bfloat16"), **kw})


def w2v_bert_2(**kw) -> EncoderSpec:
    """w2v-BERT 2.0 spec (layers 6, 10, 15, 20, 24; LayerNorm conv adapter)."""
    return EncoderSpec(**{**dict(name="w2v-bert", kind="w2v-bert", layers=[6, 10, 15, 20, 24], dim=1024,
                                 path="facebook/w2v-bert-2.0", dtype="bfloat16"), **kw})


def muq_large(**kw) -> EncoderSpec:
    """MuQ-large spec (24 kHz, 30 s pieces, 25 Hz, layers 4, 8, 12 with 12 after the conformer's final
    LayerNorm, as published; MLP adapter); runs through the optional ``muq`` package (``alarm.model.muq``)."""
    return EncoderSpec(**{**dict(name="muq", kind="muq", layers=[4, 8, 12], dim=1024, adapter="mlp",
                                 sample_rate=24000, path="OpenMuQ/MuQ-large-msd-iter", dtype="bfloat16"), **kw})


def sslam(**kw) -> EncoderSpec:
    """SSLAM spec (outputs of blocks 4, 8, 12 without the CLS token = the published indices 3, 7, 11 of its
    block-output list; 10.24 s (1024-frame) pieces, 50 Hz; LayerNorm conv adapter); native (``alarm.model.sslam``)."""
    return EncoderSpec(**{**dict(name="sslam", kind="sslam", layers=[4, 8, 12], dim=768, chunk_seconds=10.24,
                                 path="ta012/SSLAM_AS2M_Finetuned", dtype="bfloat16"), **kw})


@dataclass
class ALARMConfig:
    """Model configuration. ``encoders[0]`` is the base stream (CA queries, P's appended tokens).

    fusion: "sum" (single-encoder AL-<enc>-R), "concat", "CA" or "P". stage: "A" trains adapters (+ fusion
    and separators), "B" freezes the conv/MLP adapters and trains fusion + separators (+ the layer mix of
    identity adapters, as published for ALARM-P). layout: default execution mode ("packed": varlen batches
    through the fused kernels, or "padded": padded batches as the published code). CA: ``dropout`` on
    residual branches and FFN, ``ca_attention_dropout`` on the attention probabilities (published: 0.1 for
    both). P (published): perceivers with FFN ``p_ffn_mult`` x width, dropout ``p_dropout``, LayerNorm on the
    cross-attention's key/value input.
    token_rate_ratio: audio token rate divisor. Every adapter's output is pooled once more over windows of
    this many tokens (``token_rate_mode`` "mean" or "max"), so each stream yields ``ceil(n / ratio)``
    tokens: 1 keeps the adapters' 25 Hz, 2 gives 12.5 Hz, 4 gives 6.25 Hz. It adds no parameters, so a
    trained model can be reloaded at another rate (``ALARMModel.from_pretrained(folder, token_rate_ratio=2)``);
    CA queries and P's base-stream tokens follow the pooled stream (identity streams are not pooled).
    separator_std: the two learned separators start as N(0, separator_std^2) vectors (published: 1, for
    Qwen3-4B; a small LM whose token embeddings are much shorter needs less, e.g. the demo's 0.02).
    weight_init: "published" (Linear/Conv1d N(0, 0.02), zero bias) or "torch" (PyTorch's layer defaults; the
    demo's tiny audio side learns several times faster with it).
    llm_kernels (execution only, no effect on the weights): "none" (transformers' Qwen3 modules), "liger"
    (Liger-Kernel's fused RMSNorm, RoPE and SwiGLU; CUDA, ``pip install liger-kernel``) or "compile" (regional
    ``torch.compile`` of each decoder layer). llm_fp8: "off", "on" (the decoder layers' linear layers in FP8
    through torchao float8 with dynamic tensorwise scales; CUDA compute capability >= 8.9, ``pip install
    torchao``) or "emulate" (the same casts computed in high precision: a numerics check that runs anywhere).
    See ``alarm.model.llm_kernels``.
    """
    encoders: List[EncoderSpec]
    fusion: str = "sum"
    stage: str = "A"
    llm_path: Optional[str] = QWEN3_4B
    llm_config: Optional[Dict[str, Any]] = None
    llm_dtype: str = "bfloat16"
    tokenizer_path: Optional[str] = None
    llm_hidden: int = 2560
    adapter_dim: int = 1024
    adapter_hidden: int = 2048
    mlp_hidden: int = 1024
    ca_dim: int = 1024
    ca_heads: int = 16
    ca_ffn: int = 4096
    dropout: float = 0.1
    ca_attention_dropout: float = 0.1
    p_latents: int = 20
    p_width: int = 768
    p_heads: int = 4
    p_self_layers: int = 6
    p_repeats: int = 3
    p_ffn_mult: int = 1
    p_dropout: float = 0.0
    max_length: int = 4096
    max_audio_seconds: float = 60.0
    lm_head_chunk: int = 1024
    layout: str = "packed"
    init_seed: int = 0
    separator_std: float = 1.0
    weight_init: str = "published"
    tiny_tokenizer_vocab: Optional[int] = None
    token_rate_ratio: int = 1
    token_rate_mode: str = "mean"
    llm_kernels: str = "none"
    llm_fp8: str = "off"

    def __post_init__(self):
        self.encoders = [e if isinstance(e, EncoderSpec) else EncoderSpec(**e) for e in self.encoders]
        if not self.encoders:
            raise ValueError("ALARMConfig needs at least one encoder")
        if len({e.name for e in self.encoders}) != len(self.encoders):
            raise ValueError("encoder names must be unique")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.fusion in ("CA", "P") and len(self.encoders) < 2:
            raise ValueError(f"fusion {self.fusion} needs at least two encoders")
        identity = [e.name for e in self.encoders if e.adapter == "identity"]
        if identity and (self.fusion != "P" or self.encoders[0].adapter == "identity"):
            raise ValueError(f"identity adapters ({identity}) only feed P's perceivers (not the base stream, not "
                             f"fusion {self.fusion!r}): the LLM needs {self.llm_hidden}-d tokens")
        if self.weight_init not in ("published", "torch"):
            raise ValueError(f"weight_init must be 'published' or 'torch', got {self.weight_init!r}")
        if not self.separator_std > 0:
            raise ValueError(f"separator_std must be > 0, got {self.separator_std!r}")
        if self.llm_path is None and self.llm_config is None:
            raise ValueError("give llm_path (pretrained) or llm_config (random init)")
        _check_ratio("token_rate_ratio", self.token_rate_ratio)
        if self.token_rate_mode not in POOL_MODES:
            raise ValueError(f"token_rate_mode must be one of {POOL_MODES}, got {self.token_rate_mode!r}")
        if self.llm_kernels not in LLM_KERNELS:
            raise ValueError(f"llm_kernels must be one of {LLM_KERNELS}, got {self.llm_kernels!r}")
        if isinstance(self.llm_fp8, bool):  # YAML 1.1 reads an unquoted on / off as a boolean
            self.llm_fp8 = "on" if self.llm_fp8 else "off"
        if self.llm_fp8 not in LLM_FP8:
            raise ValueError(f"llm_fp8 must be one of {LLM_FP8}, got {self.llm_fp8!r}")

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @staticmethod
    def upgrade_legacy_fields(d: Dict[str, Any]) -> Dict[str, Any]:
        """A copy of config dict ``d`` with the old ``"path": "fast" | "reference"`` (saved before the field
        was renamed) written as ``"layout": "packed" | "padded"``; ValueError for an unknown old value or
        for both keys at once."""
        if "path" not in d:
            return dict(d)
        d = dict(d)
        old = d.pop("path")
        if "layout" in d:
            raise ValueError("give 'layout' or the old 'path', not both")
        if old not in LEGACY_PATHS:
            raise ValueError(f"path must be one of {tuple(LEGACY_PATHS)}, got {old!r}")
        d["layout"] = LEGACY_PATHS[old]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ALARMConfig":
        """Config from a dict of its fields (as ``to_dict`` writes them; an old ``path`` key is accepted).
        ValueError for unknown fields."""
        d = cls.upgrade_legacy_fields(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ALARMConfig fields: {sorted(unknown)}")
        return cls(**d)

    # ---- variants at full size -----------------------------------------------------------------
    @classmethod
    def single(cls, spec: EncoderSpec, **kw) -> "ALARMConfig":
        """AL-<encoder>-R: one encoder, stage A (adapter trained), fusion "sum"."""
        return cls(encoders=[spec], fusion="sum", stage="A", **kw)

    @classmethod
    def full(cls, fusion: str, **kw) -> "ALARMConfig":
        """Four-encoder model (Whisper, w2v-BERT, MuQ, SSLAM), stage B, with the given fusion. P (as published):
        the auxiliary encoders feed their perceivers through identity adapters (layer mix only)."""
        aux = dict(adapter="identity") if fusion == "P" else {}
        return cls(encoders=[whisper_large_v3(), w2v_bert_2(**aux), muq_large(**aux), sslam(**aux)], fusion=fusion,
                   stage="B", **kw)

    @classmethod
    def tiny(cls, fusion: Optional[str] = None, stage: Optional[str] = None, n_encoders: int = 2,
             encoder: Optional[str] = None, **kw) -> "ALARMConfig":
        """Random tiny encoders and a tiny Qwen3 (head dims 32, widths 64); CPU in seconds, no download.

        Encoders, in order: Whisper (3 s window), w2v-BERT, MuQ (``alarm.model.tiny.TinyMuQ``, the stand-in of
        MuQ's structure, 3 s pieces at 24 kHz) and SSLAM (a 2-block ViT, 1.28 s pieces), each 32 wide with the
        adapter of its full-size spec (identity for P's auxiliary streams). ``n_encoders`` takes the first n (1-4);
        ``encoder`` (a name) takes that one alone, as the single-encoder recipes do. ``fusion`` defaults to "sum"
        for one encoder and "CA" for more; ``stage`` to "A" for sum/concat and "B" for CA/P.
        """
        if fusion is None:
            fusion = "sum" if encoder is not None or n_encoders == 1 else "CA"
        aux = "identity" if fusion == "P" else None
        whisper = EncoderSpec(  # a 3 s window (150 positions) keeps CPU tests fast; real Whisper's is 30 s
            name="whisper", kind="whisper", layers=[1, 2], dim=32, norm="batch", chunk_seconds=3.0,
            hf_config=dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           num_mel_bins=128, max_source_positions=150, decoder_layers=1,
                           decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64, pad_token_id=0,
                           bos_token_id=0, eos_token_id=0, decoder_start_token_id=0))
        w2v = EncoderSpec(
            name="w2v-bert", kind="w2v-bert", layers=[0, 2], dim=32, norm="layer", adapter=aux or "conv",
            hf_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           output_hidden_size=32, conv_depthwise_kernel_size=5, left_max_position_embeddings=16,
                           right_max_position_embeddings=4, feature_projection_input_dim=160))
        muq = EncoderSpec(
            name="muq", kind="muq", layers=[1, 2], dim=32, adapter=aux or "mlp", sample_rate=24000, chunk_seconds=3.0,
            hf_config=dict(tiny_stand_in=True, dim=32, layers=2, heads=2))
        ssl = EncoderSpec(
            name="sslam", kind="sslam", layers=[1, 2], dim=32, norm="layer", adapter=aux or "conv", chunk_seconds=1.28,
            hf_config=dict(embed_dim=32, depth=2, num_heads=2, max_length=8))
        specs = [whisper, w2v, muq, ssl]
        if encoder is not None:
            by_name = {e.name: e for e in specs}
            if encoder not in by_name:
                raise ValueError(f"encoder {encoder!r}: the tiny preset knows {sorted(by_name)}")
            encoders = [by_name[encoder]]
        elif not 1 <= n_encoders <= len(specs):
            raise ValueError(f"n_encoders must be 1 to {len(specs)}, got {n_encoders!r}")
        else:
            encoders = specs[:n_encoders]
        base = dict(encoders=encoders, fusion=fusion, stage=stage or ("A" if fusion in ("sum", "concat") else "B"),
                    llm_path=None, llm_dtype="float32", tiny_tokenizer_vocab=384, llm_hidden=64,
                    llm_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                    max_position_embeddings=4096),
                    adapter_dim=48, adapter_hidden=64, mlp_hidden=48, ca_dim=64, ca_heads=2, ca_ffn=128,
                    dropout=0.0, ca_attention_dropout=0.0, p_latents=4, p_width=64, p_heads=2, p_self_layers=2,
                    p_repeats=2, max_length=512, max_audio_seconds=60.0, lm_head_chunk=16)
        base.update(kw)
        return cls(**base)

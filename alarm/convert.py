"""Convert a published ALARM checkpoint (the public Blinorot/ALARM code's ``Qwen3AudioWrappedForCausalLM``
saved by transformers: ``config.json`` + ``*.safetensors`` shards) into a folder that
``ALARMModel.from_pretrained`` loads (``alarm_config.json`` + ``audio_side.safetensors``).

Only the audio side is copied. Every tensor of the checkpoint is either mapped or explicitly ignored; an
unknown key, a missing key or a shape that does not fit is a ``ValueError`` naming it.

Ignored (frozen, rebuilt from their own checkpoints): ``model.audio_encoder.*`` (the encoders),
``model.embed_tokens.*``, ``model.layers.*``, ``model.norm.*``, ``model.rotary_emb.*``, ``lm_head.*`` (the LLM).

Encoder names: published ``whisper``, ``w2vbert``, ``muq``, ``sslam`` -> ``whisper``, ``w2v-bert``, ``muq``,
``sslam``. Layer indices: the same, except SSLAM's (published index i = output of block i + 1, so +1).
Below, ``A = model.audio_adapter.adapters.<enc>`` and ``F = model.audio_fusion.fusion_model``; ``<e>``
is our encoder name, ``<i>`` its position in the config (0 = the main encoder), ``<j> = <i> - 1``.

====================================================  ===============================================
published key                                         ``AudioSide`` key
====================================================  ===============================================
model.audio_start_emb / model.audio_end_emb [1, H]     audio_start / audio_end [H]
A.layer_fusion.layer_weights                           adapters.<e>.layer_logits (zeros with one layer)
A.adapter.input_proj.{weight,bias}                     adapters.<e>.in_proj.*
A.adapter.downsampler.0.0.* / .1.0.* (Conv1d)          adapters.<e>.conv1.* / conv2.*
A.adapter.downsampler.0.2.* / .1.2.* (BatchNorm1d:     adapters.<e>.norm1.* / norm2.* (weight, bias,
weight, bias, running stats; LayerNorm: norm.*)        running_mean, running_var, num_batches_tracked)
A.adapter.model.0.* / .2.* (MLP adapter)               adapters.<e>.fc1.* / fc2.*
A.llm_proj.*                                           adapters.<e>.llm_proj.*
F.in_proj.<enc>.* (CA)                                 fusion.in_proj.<i>.*
F.condition_modules.<enc>.0.self_attn.in_proj_weight   fusion.layers.<j>.sa.{q,k,v}.weight (row thirds;
[3d, d] and .in_proj_bias [3d]                         bias thirds)
F.condition_modules.<enc>.0.self_attn.out_proj.*       fusion.layers.<j>.sa.o.*
F.condition_modules.<enc>.0.multihead_attn.*           fusion.layers.<j>.ca.* (split the same way)
F.condition_modules.<enc>.0.norm1 / norm2 / norm3      fusion.layers.<j>.ln_sa / ln_ca / ln_ff
F.condition_modules.<enc>.0.linear1 / linear2          fusion.layers.<j>.ff.0 / ff.3
F.out_proj.* (CA)                                      fusion.out_proj.*
F.perceiver.<enc>.latent_provider._query (P)           fusion.perceivers.<j>.latents
F.perceiver.<enc>.cross_attn_1.0.module.q_norm         fusion.perceivers.<j>.cross.ln_ca
F.perceiver.<enc>.cross_attn_1.0.module.kv_norm        fusion.perceivers.<j>.cross.ln_mem
F.perceiver.<enc>.cross_attn_1.0.module.attention.     fusion.perceivers.<j>.cross.ca.{q,k,v,o}
{q,k,v,o}_proj
F.perceiver.<enc>.cross_attn_1.1.module.{0,1,3}        fusion.perceivers.<j>.cross.{ln_ff,ff.0,ff.3}
F.perceiver.<enc>.self_attn_1.<l>.0.module.norm        fusion.perceivers.<j>.block.<l>.ln1
F.perceiver.<enc>.self_attn_1.<l>.0.module.attention.  fusion.perceivers.<j>.block.<l>.attn.{q,k,v,o}
{q,k,v,o}_proj
F.perceiver.<enc>.self_attn_1.<l>.1.module.{0,1,3}     fusion.perceivers.<j>.block.<l>.{ln2,ff.0,ff.3}
F.out_proj.<enc>.* (P)                                 fusion.perceivers.<j>.out_proj.*
F.cond_start_emb / F.cond_end_emb [1, H] (P)           fusion.cond_start / cond_end [H]
====================================================  ===============================================

The model configuration comes from the checkpoint's ``config.json`` (adapter, fusion and LLM widths);
the frozen parts (encoder checkpoints, the LLM, the tokenizer) from ``like`` (a saved ``alarm_config.json``
whose encoders are matched by name) or, without it, the full-size recipes (``whisper_large_v3()``, ...)
and Qwen3-4B-Thinking-2507.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Dict, List, Optional, Tuple

import torch
from safetensors import safe_open
from torch import Tensor

from .model.config import ALARMConfig, EncoderSpec, muq_large, sslam, w2v_bert_2, whisper_large_v3
from .hf import checkpoint_folder

__all__ = ["convert_published", "published_config", "map_published_key", "IGNORED_PREFIXES"]

IGNORED_PREFIXES = ("model.audio_encoder.", "model.embed_tokens.", "model.layers.", "model.norm.",
                    "model.rotary_emb.", "lm_head.")
NAMES = {"whisper": "whisper", "w2vbert": "w2v-bert", "muq": "muq", "sslam": "sslam"}
RECIPES = {"whisper": whisper_large_v3, "w2v-bert": w2v_bert_2, "muq": muq_large, "sslam": sslam}
LAYER_SHIFT = {"sslam": 1}  # published SSLAM index i = output of block i + 1
FUSIONS = {"sum": "sum", "crossattention": "CA", "multiperceiver": "P"}

_ADAPTER = {"adapter.input_proj": "in_proj", "adapter.downsampler.0.0": "conv1", "adapter.downsampler.1.0": "conv2",
            "adapter.downsampler.0.2.norm": "norm1", "adapter.downsampler.1.2.norm": "norm2",
            "adapter.downsampler.0.2": "norm1", "adapter.downsampler.1.2": "norm2", "adapter.model.0": "fc1",
            "adapter.model.2": "fc2", "llm_proj": "llm_proj"}
_CA_LAYER = {"norm1": "ln_sa", "norm2": "ln_ca", "norm3": "ln_ff", "linear1": "ff.0", "linear2": "ff.3",
             "self_attn.out_proj": "sa.o", "multihead_attn.out_proj": "ca.o"}
_P_CROSS = {"0.module.q_norm": "ln_ca", "0.module.kv_norm": "ln_mem", "1.module.0": "ln_ff", "1.module.1": "ff.0",
            "1.module.3": "ff.3", **{f"0.module.attention.{x}_proj": f"ca.{x}" for x in "qkvo"}}
_P_SELF = {"0.module.norm": "ln1", "1.module.0": "ln2", "1.module.1": "ff.0", "1.module.3": "ff.3",
           **{f"0.module.attention.{x}_proj": f"attn.{x}" for x in "qkvo"}}


def _cfg_get(d: dict, key: str, where: str):
    if key not in d:
        raise ValueError(f"published config: {where} has no {key!r}")
    return d[key]


def _one(values, name: str):
    """The single value of a per-encoder list (this project uses one value for all perceivers)."""
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(set(map(str, values))) != 1:
        raise ValueError(f"published config: {name} = {values} differ between encoders (not supported)")
    return values[0]


def published_config(pub: dict, like: Optional[ALARMConfig] = None, llm_path: Optional[str] = None) -> ALARMConfig:
    """This project's ``ALARMConfig`` for a published ``config.json`` dict (see the module docstring)."""
    adapters = {a["encoder_name"]: a for a in _cfg_get(pub, "audio_adapter_configs", "config.json")}
    fusion_cfg = _cfg_get(pub, "audio_fusion_config", "config.json")
    kind = _cfg_get(fusion_cfg, "fusion_type", "audio_fusion_config")
    if kind not in FUSIONS:
        raise ValueError(f"published config: fusion_type {kind!r} is not convertible (known: {sorted(FUSIONS)})")
    fusion = FUSIONS[kind]
    if fusion == "sum":
        order = sorted(adapters)
    else:
        order = [fusion_cfg.get("main_encoder", "whisper")] + list(fusion_cfg.get("conditional_encoders", []))
        if sorted(order) != sorted(adapters):
            raise ValueError(f"published config: fusion encoders {order} differ from the adapters {sorted(adapters)}")
    unknown = [n for n in order if n not in NAMES]
    if unknown:
        raise ValueError(f"published config: unknown encoder(s) {unknown} (known: {sorted(NAMES)})")
    base = {e.name: e for e in (like.encoders if like is not None else [])}
    fields: Dict[str, object] = {}
    encoders: List[EncoderSpec] = []
    cond_dims = dict(zip(fusion_cfg.get("conditional_encoders", []), fusion_cfg.get("conditional_embedding_dim", []),
                         strict=False))
    for pub_name in order:
        a, ours = adapters[pub_name], NAMES[pub_name]
        spec = dataclasses.replace(base[ours]) if ours in base else RECIPES[ours]()
        layers = [i + LAYER_SHIFT.get(ours, 0) for i in _cfg_get(a, "audio_encoder_layers", pub_name)]
        name = a["adapter_name"]
        if name == "downsampler_conformer":
            for key, want in (("use_conformer", False), ("downsampler_depth", 1), ("use_downsampler", True),
                              ("pre_average", True)):
                if a.get(key, want) != want:
                    raise ValueError(f"published adapter {pub_name}: {key}={a.get(key)} is not supported")
            dim, adapter, norm = a.get("encoder_embedding_dim", 1024), "conv", a.get("norm_type", "layer")
            width = a.get("adapter_embedding_dim", 1024)
            fields.update(adapter_dim=width, adapter_hidden=2 * width)
        elif name == "mlp":
            dim, adapter, norm = a.get("encoder_embedding_dim", 1024), "mlp", spec.norm
            fields["mlp_hidden"] = a.get("hidden_dim", 1024)
            if a.get("adapter_embedding_dim", 1024) != fields["mlp_hidden"]:
                raise ValueError(f"published adapter {pub_name}: adapter_embedding_dim != hidden_dim is not supported")
        elif name == "identity":
            if a.get("use_llm_proj", True):
                raise ValueError(f"published adapter {pub_name}: an identity adapter with llm_proj is not supported")
            dim, adapter, norm = cond_dims.get(pub_name, spec.dim), "identity", spec.norm
        else:
            raise ValueError(f"published adapter {pub_name}: adapter_name {name!r} is not supported")
        if ours in base and base[ours].dim != dim:
            raise ValueError(f"encoder {ours}: the checkpoint expects width {dim}, --like has {base[ours].dim}")
        encoders.append(dataclasses.replace(spec, layers=layers, dim=dim, adapter=adapter, norm=norm))
    hidden = int(pub.get("audio_sep_d_embed") or _cfg_get(pub, "hidden_size", "config.json"))
    if fusion == "CA":
        if any(n != 1 for n in fusion_cfg.get("num_hidden_layers", [1])) or fusion_cfg.get("use_skip_connection"):
            raise ValueError("published CA: only one decoder layer per encoder and no skip connection are supported")
        fields.update(ca_dim=fusion_cfg.get("hidden_dim", 1024), ca_heads=fusion_cfg.get("num_attention_heads", 16),
                      ca_ffn=fusion_cfg.get("ffn_dims", 4096), dropout=fusion_cfg.get("dropout", 0.1),
                      ca_attention_dropout=fusion_cfg.get("dropout", 0.1))
    elif fusion == "P":
        g = fusion_cfg.get
        if _one(g("num_cross_attention_layers", [1]), "num_cross_attention_layers") != 1 or \
                not _one(g("first_self_attention_block_shared", [True]), "first_self_attention_block_shared"):
            raise ValueError("published P: one cross-attention layer and a shared self-attention block are supported")
        heads = _one(list(g("num_cross_attention_heads", [4])) + list(g("num_self_attention_heads", [4])), "heads")
        mult = _one(list(g("cross_attention_widening_factor", [1])) + list(g("self_attention_widening_factor", [1])),
                    "widening factors")
        fields.update(p_latents=_one(g("num_latents", [20]), "num_latents"),
                      p_width=_one(g("num_latent_channels", [768]), "num_latent_channels"), p_heads=heads,
                      p_self_layers=_one(g("num_self_attention_layers_per_block", [6]), "layers per block"),
                      p_repeats=_one(g("num_self_attention_blocks", [1]), "num_self_attention_blocks"),
                      p_ffn_mult=mult, p_dropout=_one(g("dropout", [0.0]), "dropout"))
    frozen = {}
    if like is not None:
        frozen = {k: getattr(like, k) for k in ("llm_path", "llm_config", "llm_dtype", "tokenizer_path",
                                                 "tiny_tokenizer_vocab", "max_length", "max_audio_seconds",
                                                 "lm_head_chunk", "init_seed")}
    if llm_path is not None:
        frozen.update(llm_path=llm_path, llm_config=None)
    return ALARMConfig(encoders=encoders, fusion=fusion, stage="A" if fusion == "sum" else "B", llm_hidden=hidden,
                       **fields, **frozen)


def map_published_key(key: str, cfg: ALARMConfig) -> Optional[List[Tuple[str, Optional[int]]]]:
    """Published key -> [(AudioSide key, third of a packed q/k/v tensor or None)], or None when ignored.

    Raises ValueError for a key that is neither mapped nor ignored."""
    if key.startswith(IGNORED_PREFIXES):
        return None
    index = {e.name: i for i, e in enumerate(cfg.encoders)}
    pub_of = {v: k for k, v in NAMES.items()}
    if key in ("model.audio_start_emb", "model.audio_end_emb"):
        return [(key[len("model."):-len("_emb")], None)]
    m = re.fullmatch(r"model\.audio_adapter\.adapters\.(\w+)\.(.+)\.(weight|bias|running_mean|running_var|"
                     r"num_batches_tracked|layer_weights)", key)
    if m and NAMES.get(m[1]) in index:
        ours = NAMES[m[1]]
        if m[2] == "layer_fusion" and m[3] == "layer_weights":
            return [(f"adapters.{ours}.layer_logits", None)]
        if m[2] in _ADAPTER:
            return [(f"adapters.{ours}.{_ADAPTER[m[2]]}.{m[3]}", None)]
    f = "model.audio_fusion.fusion_model."
    if key.startswith(f):
        rest = key[len(f):]
        names = "|".join(re.escape(pub_of[e.name]) for e in cfg.encoders)
        if cfg.fusion == "CA":
            m = re.fullmatch(rf"in_proj\.({names})\.(weight|bias)", rest)
            if m:
                return [(f"fusion.in_proj.{index[NAMES[m[1]]]}.{m[2]}", None)]
            if rest in ("out_proj.weight", "out_proj.bias"):
                return [(f"fusion.{rest}", None)]
            m = re.fullmatch(rf"condition_modules\.({names})\.0\.(self_attn|multihead_attn)\.in_proj_(weight|bias)",
                             rest)
            if m and index[NAMES[m[1]]] > 0:  # torch's packed [3d, ...] q/k/v tensor -> its three row blocks
                att = "sa" if m[2] == "self_attn" else "ca"
                return [(f"fusion.layers.{index[NAMES[m[1]]] - 1}.{att}.{x}.{m[3]}", t) for t, x in enumerate("qkv")]
            m = re.fullmatch(rf"condition_modules\.({names})\.0\.(.+)\.(weight|bias)", rest)
            if m and index[NAMES[m[1]]] > 0 and m[2] in _CA_LAYER:
                return [(f"fusion.layers.{index[NAMES[m[1]]] - 1}.{_CA_LAYER[m[2]]}.{m[3]}", None)]
        if cfg.fusion == "P":
            if rest in ("cond_start_emb", "cond_end_emb"):
                return [(f"fusion.{rest[:-len('_emb')]}", None)]
            m = re.fullmatch(rf"out_proj\.({names})\.(weight|bias)", rest)
            if m and index[NAMES[m[1]]] > 0:
                return [(f"fusion.perceivers.{index[NAMES[m[1]]] - 1}.out_proj.{m[2]}", None)]
            m = re.fullmatch(rf"perceiver\.({names})\.(.+)", rest)
            if m and index[NAMES[m[1]]] > 0:
                p, sub = f"fusion.perceivers.{index[NAMES[m[1]]] - 1}", m[2]
                if sub == "latent_provider._query":
                    return [(f"{p}.latents", None)]
                m = re.fullmatch(r"cross_attn_1\.(.+)\.(weight|bias)", sub)
                if m and m[1] in _P_CROSS:
                    return [(f"{p}.cross.{_P_CROSS[m[1]]}.{m[2]}", None)]
                m = re.fullmatch(r"self_attn_1\.(\d+)\.(.+)\.(weight|bias)", sub)
                if m and m[2] in _P_SELF:
                    return [(f"{p}.block.{m[1]}.{_P_SELF[m[2]]}.{m[3]}", None)]
    raise ValueError(f"published checkpoint: key {key!r} is neither mapped nor ignored (unknown for fusion "
                     f"{cfg.fusion} with encoders {[e.name for e in cfg.encoders]})")


def _shards(folder: str) -> List[str]:
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise ValueError(f"{folder}: no *.safetensors files (expected a transformers model folder)")
    return files


def convert_published(path: str, out: str, like: Optional[str] = None, llm_path: Optional[str] = None) -> dict:
    """Convert the published checkpoint at ``path`` (folder or hub id) into ``out`` (see the module docstring).

    like: optional ``alarm_config.json`` (or a folder holding one) giving the frozen parts. Returns a
    summary dict(mapped=int tensors read, ignored=int, config=ALARMConfig).
    """
    from .model.alarm_model import CONFIG_NAME, WEIGHTS_NAME, AudioSide, write_saved_model

    folder = checkpoint_folder(path, ["config.json", "*.safetensors", "*.safetensors.index.json"])
    if os.path.exists(os.path.join(out, CONFIG_NAME)) or os.path.exists(os.path.join(out, WEIGHTS_NAME)):
        raise ValueError(f"--out {out} already holds a saved model; choose an empty folder")
    cfg_file = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_file):
        raise ValueError(f"{folder}: config.json is missing")
    with open(cfg_file) as f:
        pub = json.load(f)
    like_cfg = None
    if like is not None:
        like_file = os.path.join(like, CONFIG_NAME) if os.path.isdir(like) else like
        if not os.path.isfile(like_file):
            raise ValueError(f"--like {like}: no {CONFIG_NAME} there")
        with open(like_file) as f:
            like_cfg = ALARMConfig.from_dict(json.load(f))
    cfg = published_config(pub, like_cfg, llm_path)
    with torch.device("meta"):
        expected = AudioSide(cfg).state_dict()
    state: Dict[str, Tensor] = {}
    n_ignored = 0
    for shard in _shards(folder):
        with safe_open(shard, framework="pt") as f:
            for key in f.keys():
                targets = map_published_key(key, cfg)
                if targets is None:
                    n_ignored += 1
                    continue
                value = f.get_tensor(key)
                for name, third in targets:
                    if name not in expected:
                        raise ValueError(f"published key {key!r} maps to {name!r}, which this model does not have")
                    if third is None:  # separators and conditioning vectors: published [1, H], ours [H]
                        squeeze = value.dim() == expected[name].dim() + 1 and value.shape[0] == 1
                        state[name] = value[0] if squeeze else value
                    else:  # one row block of a packed q/k/v tensor
                        state[name] = value.chunk(3)[third]
    for e in cfg.encoders:  # one selected layer: the published adapter has no layer weights
        key = f"adapters.{e.name}.layer_logits"
        if key not in state and len(e.layers) == 1:
            state[key] = torch.zeros(1)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"published checkpoint {path}: no tensor for {missing}")
    for name, value in state.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ValueError(f"published checkpoint {path}: {name} has shape {tuple(value.shape)}, this model needs "
                             f"{tuple(expected[name].shape)}")
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    write_saved_model(out, state, cfg)
    return dict(mapped=len(state), ignored=n_ignored, config=cfg)

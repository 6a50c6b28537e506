"""Parameter counts at full size, without downloads: modules are instantiated on the meta device.

``variant_table()`` lists, per ALARM variant, the trainable parameters (adapters/fusion/separators of
``AudioSide`` with ``requires_grad``) and the audio tokens for 30 s of audio at token rates 1, 2 and 4.
``write_params_md(path)`` writes it as Markdown (python -m alarm.model.params [PATH]).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Dict, List

import torch

from ..fileio import atomic_write_text
from .adapters import Adapter
from .config import QWEN3_4B_CONFIG, ALARMConfig, muq_large, sslam, w2v_bert_2, whisper_large_v3

__all__ = ["trainable_params", "audio_tokens", "llm_params", "variant_table", "write_params_md", "VARIANTS"]


def trainable_params(cfg: ALARMConfig) -> int:
    """Trainable parameters of ``cfg`` (the frozen encoders and LLM never count), built on the meta device."""
    from .alarm_model import AudioSide
    with torch.device("meta"):
        side = AudioSide(cfg)
    return sum(p.numel() for p in side.parameters() if p.requires_grad)


RATES = (1, 2, 4)
ENCODER_FRAME_RATE = {"muq": 25}  # frames/s of each encoder kind; the others run at 50


def audio_tokens(cfg: ALARMConfig, seconds: float) -> int:
    """Audio tokens between the separators for one clip at ``cfg.token_rate_ratio``: encoder frames (MuQ
    25/s, the others 50/s) through ``Adapter.out_lengths`` (conv ``frames // 2``, MLP ``frames``, pool
    ``ceil(frames / pool_ratio)``, then ``ceil(n / token_rate_ratio)``), combined as the fusion does."""
    per = [int(Adapter.out_lengths(torch.tensor(round(ENCODER_FRAME_RATE.get(e.kind, 50) * seconds)), e.adapter,
                                   e.pool_ratio, cfg.token_rate_ratio)) for e in cfg.encoders]
    if cfg.fusion == "CA":
        return per[0]
    if cfg.fusion == "P":
        return per[0] + 2 + cfg.p_latents * (len(cfg.encoders) - 1)
    return max(per)


def llm_params() -> int:
    """Parameters of Qwen3-4B (tied embeddings counted once), on the meta device."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(**QWEN3_4B_CONFIG))
    return sum(p.numel() for p in model.parameters())


VARIANTS = {
    "AL-Whisper-R": lambda: ALARMConfig.single(whisper_large_v3()),
    "AL-W2VBERT2-R": lambda: ALARMConfig.single(w2v_bert_2()),
    "AL-MuQ-R": lambda: ALARMConfig.single(muq_large()),
    "AL-SSLAM-R": lambda: ALARMConfig.single(sslam()),
    "AL-Whisper-R, pool adapter (mean, x2)": lambda: ALARMConfig.single(whisper_large_v3(adapter="pool")),
    "ALARM-concat": lambda: ALARMConfig.full("concat"),
    "ALARM-CA": lambda: ALARMConfig.full("CA"),
    "ALARM-P": lambda: ALARMConfig.full("P"),
}


def _tokens_by_rate(cfgs: List[ALARMConfig], seconds: float) -> Dict[int, int]:
    """{token_rate_ratio: audio tokens of all ``cfgs`` together} for each rate in ``RATES``."""
    return {r: sum(audio_tokens(dataclasses.replace(c, token_rate_ratio=r), seconds) for c in cfgs) for r in RATES}


def variant_table(seconds: float = 30.0) -> List[Dict]:
    """Rows: variant, encoders, fusion, stage, trainable, audio_tokens, llm_audio_tokens (incl. separators),
    tokens_by_rate ({token_rate_ratio: audio tokens} for 1, 2, 4)."""
    rows = []
    for name, make in VARIANTS.items():
        cfg = make()
        by_rate = _tokens_by_rate([cfg], seconds)
        n = audio_tokens(cfg, seconds)
        rows.append(dict(variant=name, encoders="+".join(e.name for e in cfg.encoders), fusion=cfg.fusion,
                         stage=cfg.stage, trainable=trainable_params(cfg), audio_tokens=n, llm_audio_tokens=n + 2,
                         tokens_by_rate=by_rate))
    ca, r = VARIANTS["ALARM-CA"](), VARIANTS["AL-Whisper-R"]()
    n_e = audio_tokens(ca, seconds) + audio_tokens(r, seconds)
    rows.append(dict(variant="ALARM-E (CA + AL-Whisper-Instruct-R)", encoders="as its members", fusion="E",
                     stage="inference", trainable=0, audio_tokens=n_e, llm_audio_tokens=n_e + 4,
                     tokens_by_rate=_tokens_by_rate([ca, r], seconds)))
    return rows


def write_params_md(path: str, seconds: float = 30.0) -> str:
    """Write the table as Markdown to ``path`` (returns the text)."""
    rows = variant_table(seconds)
    lines = [
        "# ALARM parameter counts (full size, computed on the meta device)",
        "",
        f"Frozen LLM Qwen3-4B-Thinking-2507: {llm_params() / 1e9:.3f} B parameters (hidden 2560, 36 layers, "
        "32 q / 8 kv heads, head_dim 128, FFN 9728, vocab 151936, tied embeddings). Encoders are frozen and "
        "not counted. Trainable = adapters (stage A) or fusion (stage B) + the two 2560-d separators "
        "(+ P's cond_start/cond_end and layer weights).",
        f"Audio tokens for {seconds:g} s of audio, between the separators (LLM tokens add 2 separators per "
        "audio block; E also adds its text headers), at token_rate_ratio 1 (25 Hz), 2 (12.5 Hz) and 4 (6.25 Hz).",
        "",
        "| variant | encoders | fusion | stage | trainable params | audio tokens x1 | x2 | x4 | with separators (x1) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        by_rate = " | ".join(str(r["tokens_by_rate"][k]) for k in RATES)
        lines.append(f"| {r['variant']} | {r['encoders']} | {r['fusion']} | {r['stage']} | "
                     f"{r['trainable'] / 1e6:.2f} M | {by_rate} | {r['llm_audio_tokens']} |")
    lines += [
        "",
        "Notes: CA = per-stream in_proj 2560->1024 (4 x 2.62 M) + 3 decoder layers (16.80 M each) + out_proj "
        "(2.62 M) + separators (~63.5 M). P (as published) = 3 perceivers (20 x 768 latents; 1 cross-attention "
        "layer with 4 heads and LayerNorm on its key/value input, reading the layer-mixed encoder features at "
        "their own width: w2v-BERT 1024, MuQ 1024, SSLAM 768; 6 self-attention layers with 4 heads shared over "
        "3 passes; FFN 1 x 768; no dropout; 768->2560 out_proj) + the identity adapters' layer weights + "
        "cond_start/cond_end + separators; the Whisper adapter is frozen. P's 814 LLM tokens = 750 + 62 + the 2 "
        "separators.",
        "",
    ]
    text = "\n".join(lines)
    atomic_write_text(path, text)
    return text


if __name__ == "__main__":
    print(write_params_md(sys.argv[1] if len(sys.argv) > 1 else "PARAMS.md"))

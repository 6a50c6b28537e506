"""Test helper: small plain-torch re-expressions of the published ALARM's audio-side modules (public repository
Blinorot/ALARM, ``src/model/audio``), written from reading its source. Submodule names follow the
published ones, so ``state_dict()`` keys (with ``PREFIX``) are those of a published checkpoint, and each
``forward`` follows the published computation on a padded batch."""
import torch
import torch.nn.functional as F
from torch import nn

ADAPTERS = "model.audio_adapter.adapters."
FUSION = "model.audio_fusion.fusion_model."


class LayerFusion(nn.Module):
    """``WeightedAverageLayerFusion``: softmax-weighted sum over the stacked layers [L, ...]."""

    def __init__(self, n):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.randn(n))

    def forward(self, stacked):
        w = torch.softmax(self.layer_weights, 0)
        return (stacked * w.view(-1, *[1] * (stacked.dim() - 1))).sum(0)


class TransposeLayerNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):  # [B, C, T]
        return self.norm(x.transpose(-1, -2)).transpose(-1, -2)


class _Body(nn.Module):
    pass


class ConvAdapter(nn.Module):
    """``DownsamplerConformerAdapter`` (pre_average, depth 1, no conformer) + ``llm_proj``."""

    def __init__(self, n_layers, enc_dim, width, llm_dim, norm_type):
        super().__init__()
        self.layer_fusion = LayerFusion(n_layers)
        self.adapter = _Body()
        self.adapter.input_proj = nn.Linear(enc_dim, width) if enc_dim != width else nn.Identity()
        norm = nn.BatchNorm1d if norm_type == "batch" else TransposeLayerNorm
        self.adapter.downsampler = nn.Sequential(
            nn.Sequential(nn.Conv1d(width, 2 * width, 3, 1, 1), nn.GELU(), norm(2 * width)),
            nn.Sequential(nn.Conv1d(2 * width, width, 4, 2, 1), nn.GELU(), norm(width)))
        self.llm_proj = nn.Linear(width, llm_dim)

    def forward(self, stacked):  # [L, B, T, D] -> [B, ceil(T / 2), H]; valid tokens: lengths // 2
        x = self.adapter.input_proj(self.layer_fusion(stacked))
        if x.shape[1] % 2:
            x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], 1)
        return self.llm_proj(self.adapter.downsampler(x.transpose(1, 2)).transpose(1, 2))


class MLPAdapter(nn.Module):
    def __init__(self, n_layers, enc_dim, hidden, llm_dim):
        super().__init__()
        self.layer_fusion = LayerFusion(n_layers)
        self.adapter = _Body()
        self.adapter.model = nn.Sequential(nn.Linear(enc_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.llm_proj = nn.Linear(hidden, llm_dim)

    def forward(self, stacked):
        return self.llm_proj(self.adapter.model(self.layer_fusion(stacked)))


class IdentityAdapter(nn.Module):
    def __init__(self, n_layers):
        super().__init__()
        self.layer_fusion = LayerFusion(n_layers)

    def forward(self, stacked):
        return self.layer_fusion(stacked)


def _pad_mask(x, lengths):  # True = padding
    return torch.arange(x.shape[1])[None, :] >= lengths[:, None]


class CrossAttentionFusion(nn.Module):
    """Published CA: in_proj per encoder, one ``nn.TransformerDecoderLayer`` (pre-norm, GELU) per conditional
    encoder, out_proj; memories masked with the *main* encoder's lengths, as published."""

    def __init__(self, llm_dim, d, heads, ffn, main, conditional):
        super().__init__()
        self.main, self.conditional = main, conditional
        self.condition_modules = nn.ModuleDict({e: nn.ModuleList([nn.TransformerDecoderLayer(
            d, heads, ffn, 0.1, activation=F.gelu, norm_first=True, batch_first=True)]) for e in conditional})
        self.in_proj = nn.ModuleDict({e: nn.Linear(llm_dim, d) for e in [main] + conditional})
        self.out_proj = nn.Linear(d, llm_dim)

    def forward(self, outputs, lengths):
        x = self.in_proj[self.main](outputs[self.main])
        mask = _pad_mask(x, lengths[self.main])
        for e in self.conditional:
            mem = self.in_proj[e](outputs[e])
            for layer in self.condition_modules[e]:
                x = layer(x, mem, tgt_key_padding_mask=mask, memory_key_padding_mask=_pad_mask(mem, lengths[self.main]))
        return self.out_proj(x)


class Attention(nn.Module):
    """Perceiver ``MultiHeadAttention``: q/k/v/o projections, scaled scores, padded keys filled with -max."""

    def __init__(self, heads, d_q, d_kv):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d_q, d_q), nn.Linear(d_kv, d_q), nn.Linear(d_kv, d_q)
        self.o_proj = nn.Linear(d_q, d_q)

    def forward(self, xq, xkv, pad_mask=None):
        def split(t):
            return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)
        q, k, v = split(self.q_proj(xq)), split(self.k_proj(xkv)), split(self.v_proj(xkv))
        q = q * q.shape[-1] ** -0.5
        att = torch.einsum("bhic,bhjc->bhij", q, k)
        if pad_mask is not None:
            att = att.masked_fill(pad_mask[:, None, None, :], -torch.finfo(att.dtype).max)
        o = torch.einsum("bhij,bhjc->bhic", att.softmax(-1), v).transpose(1, 2).reshape(xq.shape[0], xq.shape[1], -1)
        return self.o_proj(o)


class CrossAttention(nn.Module):
    def __init__(self, heads, d_q, d_kv):
        super().__init__()
        self.q_norm, self.kv_norm = nn.LayerNorm(d_q), nn.LayerNorm(d_kv)
        self.attention = Attention(heads, d_q, d_kv)

    def forward(self, xq, xkv, pad_mask):
        return self.attention(self.q_norm(xq), self.kv_norm(xkv), pad_mask)


class SelfAttention(nn.Module):
    def __init__(self, heads, d):
        super().__init__()
        self.norm, self.attention = nn.LayerNorm(d), Attention(heads, d, d)

    def forward(self, x):
        y = self.norm(x)
        return self.attention(y, y)


class Residual(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x, *args):
        return self.module(x, *args) + x


def _mlp(d, mult):
    return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, mult * d), nn.GELU(), nn.Linear(mult * d, d))


class _Latents(nn.Module):
    def __init__(self, n, w):
        super().__init__()
        self._query = nn.Parameter(torch.randn(n, w) * 0.02)


class PerceiverEncoder(nn.Module):
    """One cross-attention layer, a self-attention block shared over ``blocks`` passes (published defaults)."""

    def __init__(self, d_in, n, w, heads, layers, blocks, mult):
        super().__init__()
        self.latent_provider = _Latents(n, w)
        self.cross_attn_1 = nn.Sequential(Residual(CrossAttention(heads, w, d_in)), Residual(_mlp(w, mult)))
        self.self_attn_1 = nn.Sequential(*[nn.Sequential(Residual(SelfAttention(heads, w)), Residual(_mlp(w, mult)))
                                           for _ in range(layers)])
        self.blocks = blocks

    def forward(self, x, pad_mask):
        lat = self.latent_provider._query[None].expand(x.shape[0], -1, -1)
        lat = self.cross_attn_1[1](self.cross_attn_1[0](lat, x, pad_mask))
        for _ in range(self.blocks):
            for layer in self.self_attn_1:
                lat = layer[1](layer[0](lat))
        return lat


class MultiPerceiverFusion(nn.Module):
    def __init__(self, llm_dim, dims, n, w, heads, layers, blocks, mult, main, conditional):
        super().__init__()
        self.main, self.conditional = main, conditional
        self.perceiver = nn.ModuleDict({e: PerceiverEncoder(d, n, w, heads, layers, blocks, mult)
                                        for e, d in zip(conditional, dims, strict=True)})
        self.out_proj = nn.ModuleDict({e: nn.Linear(w, llm_dim) for e in conditional})
        self.cond_start_emb = nn.Parameter(torch.randn(1, llm_dim))
        self.cond_end_emb = nn.Parameter(torch.randn(1, llm_dim))

    def forward(self, outputs, lengths):
        lat = [self.out_proj[e](self.perceiver[e](outputs[e], _pad_mask(outputs[e], lengths[e])))
               for e in self.conditional]
        lat = torch.cat(lat, 1)
        b, _, d = lat.shape
        return torch.cat([self.cond_start_emb[None].expand(b, 1, d), lat, self.cond_end_emb[None].expand(b, 1, d),
                          outputs[self.main]], 1)


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter and BatchNorm statistic random (so a wrong mapping cannot pass by symmetry)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * (0.5 if t.dim() < 2 else t.shape[-1] ** -0.5))
    return module.eval()


def checkpoint_state(adapters: dict, fusion: nn.Module | None, llm_dim: int) -> dict:
    """A published checkpoint's state dict: audio side under its prefixes, plus a few frozen-LLM and encoder
    tensors that the converter must ignore."""
    g = torch.Generator().manual_seed(99)
    state = {"model.audio_start_emb": torch.randn(1, llm_dim, generator=g),
             "model.audio_end_emb": torch.randn(1, llm_dim, generator=g),
             "model.embed_tokens.weight": torch.zeros(8, llm_dim),
             "model.layers.0.mlp.up_proj.weight": torch.zeros(2, 2),
             "model.norm.weight": torch.ones(llm_dim), "lm_head.weight": torch.zeros(8, llm_dim),
             "model.audio_encoder.encoders.whisper.encoder.conv1.weight": torch.zeros(2, 2, 3)}
    for name, ad in adapters.items():
        state.update({ADAPTERS + f"{name}.{k}": v for k, v in ad.state_dict().items()})
    if fusion is not None:
        state.update({FUSION + k: v for k, v in fusion.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def write_checkpoint(folder, state: dict, config: dict) -> None:
    """config.json + the state split over two safetensors shards with an index, as transformers saves it."""
    import json

    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    half = len(keys) // 2
    index = {}
    for i, part in enumerate((keys[:half], keys[half:]), start=1):
        fname = f"model-{i:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(folder / fname), metadata={"format": "pt"})
        index.update({k: fname for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    (folder / "config.json").write_text(json.dumps(config))


def whisper_extractor(encoder):
    """transformers' ``WhisperFeatureExtractor`` with a ``WhisperAudioEncoder``'s parameters: the published front end
    (30 s windows, the encoder's mel bins), which the kernels' log-mel is checked against."""
    from transformers import WhisperFeatureExtractor

    conf = encoder.encoder.config
    window_seconds = conf.max_source_positions * 2 * 160 // 16000
    return WhisperFeatureExtractor(feature_size=conf.num_mel_bins, sampling_rate=16000, chunk_length=window_seconds)

"""Test helper: a small plain-torch re-expression of the published SSLAM as ALARM runs it, written from reading
the public code (``ta012/SSLAM`` models/images.py, modules.py, mae.py; ``Blinorot/ALARM``
src/model/audio/{encoder,feature_extractor}_implementations/sslam.py and encoder_implementations/base.py).

Submodule names follow the published checkpoint (``model.local_encoder.proj``, ``model.extra_tokens``,
``model.fixed_positional_encoder.positions``, ``model.pre_norm``, ``model.blocks.i.*``, plus the fine-tuned
model's ``model.fc_norm`` / ``model.head``), so ``state_dict()`` has the published keys; ``hidden_states``
follows ALARM's ``get_hidden_states`` (a list of block outputs, CLS removed) and ``published_sslam_tokens`` its
feature extractor + chunked encode + ``lengths // 2``."""
import numpy as np
import torch
from torch import nn

D, HEADS, DEPTH, MAX_LENGTH = 48, 4, 3, 80  # small; the real model: 768, 12, 12, 768


def published_positions(dim, max_length, width):
    """MAE's ``get_2d_sincos_pos_embed_flexible`` (numpy, as published: meshgrid with w first)."""
    def one_d(d, pos):
        omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(max_length, dtype=np.float64))
    grid = np.stack(grid, axis=0).reshape([2, 1, max_length, width])
    emb = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float()[None]  # [1, max_length * width, dim]


class _Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class AltBlock(nn.Module):
    """``AltBlock`` with ``layer_norm_first=False`` (data2vec 2.0's post-norm); returns ``(x, ffn target)``."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), _Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), _Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(x)
        r = x = self.norm1(x)
        x = self.mlp(x)
        t = x
        x = self.norm2(r + x)
        return x, t


class _PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _Fixed(nn.Module):
    def __init__(self, positions):
        super().__init__()
        self.positions = nn.Parameter(positions, requires_grad=False)

    def forward(self, x, padding_mask):
        return self.positions


class _EAT(nn.Module):
    def __init__(self, dim, heads, depth, max_length, patch=16, mel_bins=128, classes=5):
        super().__init__()
        self.local_encoder = _PatchEmbed(dim, patch)
        self.extra_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.fixed_positional_encoder = _Fixed(published_positions(dim, max_length, mel_bins // patch))
        self.pre_norm = nn.LayerNorm(dim, eps=1e-6)
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList(AltBlock(dim, heads) for _ in range(depth))
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)


class PublishedSSLAM(nn.Module):
    """The transformers wrapper around EAT (``AutoModel`` of ``ta012/SSLAM_AS2M_Finetuned``): ``.model``."""

    def __init__(self, dim=D, heads=HEADS, depth=DEPTH, max_length=MAX_LENGTH):
        super().__init__()
        self.model = _EAT(dim, heads, depth, max_length)
        self.config = dict(embed_dim=dim, depth=depth, num_heads=heads, patch_size=16, stride=16, in_chans=1,
                           mel_bins=128, max_length=max_length, num_classes=5, model_variant="finetune",
                           mlp_ratio=4.0, qkv_bias=True, layer_norm_first=False, norm_eps=1e-6, norm_affine=True,
                           fixed_positions=True, img_size=[1024, 128])

    def hidden_states(self, x):
        """ALARM's ``SSLAMEncoder.get_hidden_states`` on ``x [B, 1, T, 128]``: block outputs, CLS removed."""
        m = self.model
        b = x.shape[0]
        x = m.local_encoder(x)
        x = x + m.fixed_positional_encoder(x, None)[:, : x.size(1), :]
        x = torch.cat((m.extra_tokens.expand(b, -1, -1), x), dim=1)
        x = m.pre_norm(x)
        x = m.pos_drop(x)
        states = []
        for blk in m.blocks:
            x, _ = blk(x)
            states.append(x[:, 1:])
        return states


def published_features(audio, fbank, max_frames=1024, mean=-4.268, std=4.569):
    """``SSLAMFeatureExtractor.__call__`` for one 16 kHz clip ``[1, n]``; ``fbank(wave [1, m]) -> [frames, 128]``
    stands for ``torchaudio.compliance.kaldi.fbank`` with the published arguments. -> (``[T, 128]``, frames)."""
    audio = audio - audio.mean()
    audio = nn.functional.pad(audio, (160, 160))
    feats = fbank(audio).unsqueeze(0)
    n_frames = feats.shape[1]
    target = n_frames if n_frames % max_frames == 0 else (n_frames // max_frames + 1) * max_frames
    if n_frames < target:
        feats = nn.functional.pad(feats, (0, 0, 0, target - n_frames))
    feats = (feats - mean) / (std * 2)
    return feats[0], n_frames


def published_tokens(model, clips, fbank, layers=(0, 1, 2), max_frames=1024):
    """ALARM's batch path: features per clip, zero-padded to the batch's longest, split into ``max_frames``
    pieces that each run through ``hidden_states``, outputs concatenated in time, ``lengths // 2`` kept.
    -> list per clip of ``[len(layers)] x [tokens, D]``."""
    feats, frames = zip(*(published_features(c[None], fbank, max_frames) for c in clips), strict=True)
    longest = max(f.shape[0] for f in feats)
    batch = torch.stack([nn.functional.pad(f, (0, 0, 0, longest - f.shape[0])) for f in feats])
    outs = []
    for piece in batch.split(max_frames, dim=-2):
        outs.append(torch.stack(model.hidden_states(piece.unsqueeze(1))))
    encoded = torch.cat(outs, dim=-2)  # [L, B, tokens, D]
    return [[encoded[i, b, : n // 2] for i in layers] for b, n in enumerate(frames)]


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Every floating tensor random (norms included), so that a wrong mapping cannot pass by symmetry; the
    fixed positions are kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("positions") or not t.is_floating_point():
                continue
            t.copy_(torch.randn(t.shape, generator=g) * (0.5 if t.dim() < 2 else t[0].numel() ** -0.5)
                    + (1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") else 0.0))
    return module.eval()

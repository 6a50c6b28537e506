"""Per-encoder adapters: softmax layer mix -> conv downsampler (x2) or MLP -> ``llm_proj``, or the layer mix
alone (``identity``: native width and rate, what ALARM-P's perceivers read).

One ``forward`` on either layout (``alarm.model.layout``), with the same parameters:
- ``Packed`` (k layers ``[total, D]``) in, ``Packed`` (``[total_out, H]``) out, using
  ``alarm_kernels.weighted_layer_sum`` and ``alarm_kernels.varlen_conv1d`` (GELU fused).
- ``Padded`` (k layers ``[B, T, D]``) in, ``Padded`` (``[B, T_out, H]``, zeros past each length) out,
  ``nn.Conv1d`` on the padded batch as the published code does; padded frames are zeroed
  between the convolutions and BatchNorm statistics (train mode) use valid frames only, so both layouts
  compute the same function.
Output lengths: identity and MLP ``len``; conv ``len // 2`` (floor, as published: with an odd length the
last input frame only feeds the dropped half-frame). The conv adapter sees zeros past each sequence's end, which
is what the published code computes for the longest clip of its batch (so for every clip at batch size 1).

Token compression: the "pool" kind pools the layer mix over windows of ``spec.pool_ratio`` frames (mean or
max) before its MLP, giving ``ceil(len / pool_ratio)`` tokens. Any kind may pool its output once more by the
model's ``token_rate_ratio`` (mean or max over that many tokens, after ``llm_proj``): ``ceil(n / ratio)``
tokens. Both poolings run ``alarm_kernels.varlen_pool`` on a packed batch and ``pool_padded`` (the same
function on a padded batch) on a padded one; a ratio of 1 skips the stage.

``fold_batchnorm()`` (frozen inference): BatchNorm is applied after GELU, so each one folds into the next
linear op: norm2 into ``llm_proj`` (exact) and norm1 into ``conv2``, whose zero padding at the sequence
edges then needs a bias correction on each sequence's first output frame and, for even lengths (whose
last output frame reads the right zero pad), on its last output frame (exact too).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import alarm_kernels as ak
from alarm_kernels.varlen import cu_seqlens_to_seqlens

from .config import EncoderSpec
from .layout import Packed, Padded

__all__ = ["Adapter", "valid_mask", "pool_padded", "normal_init_"]


def normal_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Published initialization (transformers' ``post_init`` convention): every ``nn.Linear`` and
    ``nn.Conv1d`` inside ``module`` gets weights N(0, std) and zero bias; norms keep ones / zeros."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def valid_mask(lengths: Tensor, t: int) -> Tensor:
    """bool [B, t]: True where the frame index is below the example's length."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def pool_padded(x: Tensor, lengths: Tensor, ratio: int, mode: str) -> Tuple[Tensor, Tensor]:
    """Padded twin of ``alarm_kernels.varlen_pool``: pool each row's first ``lengths[b]`` frames over windows
    of ``ratio`` (mode "mean": average of the frames present; "max": their maximum, gradient split evenly
    among ties). x [B, T, D] (frames past ``lengths`` are ignored) -> ([B, ceil(T / ratio), D] with zeros
    past the out lengths, out lengths ``ceil(lengths / ratio)`` in ``lengths``' dtype)."""
    out_len = (lengths + ratio - 1) // ratio
    b, t, d = x.shape
    windows = -(-t // ratio)
    valid = F.pad(valid_mask(lengths, t), (0, windows * ratio - t)).view(b, windows, ratio)
    x = F.pad(x, (0, 0, 0, windows * ratio - t)).view(b, windows, ratio, d)
    count = valid.sum(-1, keepdim=True)
    if mode == "mean":
        return (x * valid[..., None]).sum(2) / count.clamp(min=1), out_len
    y = x.masked_fill(~valid[..., None], float("-inf")).amax(2)
    return torch.where(count > 0, y, torch.zeros((), dtype=y.dtype, device=y.device)), out_len


class Adapter(nn.Module):
    """Layer mix + conv/MLP/pool adapter + ``llm_proj`` for one encoder (dims from the spec and ALARMConfig),
    then pooling by ``token_rate_ratio`` (``ALARMConfig.token_rate_ratio``; 1 = none), or the layer mix
    alone (identity). Initialized as published: layer logits 0, Linear/Conv1d N(0, 0.02) with zero bias."""

    def __init__(self, spec: EncoderSpec, adapter_dim: int, adapter_hidden: int, mlp_hidden: int, llm_hidden: int,
                 token_rate_ratio: int = 1, token_rate_mode: str = "mean"):
        super().__init__()
        self.kind = spec.adapter
        self.pool_ratio, self.pool_mode = spec.pool_ratio, spec.pool_mode
        self.token_rate_ratio, self.token_rate_mode = token_rate_ratio, token_rate_mode
        self.layer_logits = nn.Parameter(torch.zeros(len(spec.layers), dtype=torch.float32))
        self.folded = False
        if spec.adapter == "identity":
            self.out_dim = spec.dim
            return
        if spec.adapter == "conv":
            self.in_proj = nn.Linear(spec.dim, adapter_dim) if spec.dim != adapter_dim else None
            self.conv1 = nn.Conv1d(adapter_dim, adapter_hidden, 3, stride=1, padding=1)
            self.conv2 = nn.Conv1d(adapter_hidden, adapter_dim, 4, stride=2, padding=1)
            norm = nn.BatchNorm1d if spec.norm == "batch" else nn.LayerNorm
            self.norm1, self.norm2 = norm(adapter_hidden), norm(adapter_dim)
            out_dim = adapter_dim
        else:
            self.fc1, self.fc2 = nn.Linear(spec.dim, mlp_hidden), nn.Linear(mlp_hidden, mlp_hidden)
            out_dim = mlp_hidden
        self.llm_proj = nn.Linear(out_dim, llm_hidden)
        self.out_dim = llm_hidden
        normal_init_(self)

    @torch.no_grad()
    def fold_batchnorm(self) -> "Adapter":
        """Fold eval-mode BatchNorms into conv2 / llm_proj (inference only; the result cannot train)."""
        if self.kind != "conv" or not isinstance(self.norm1, nn.BatchNorm1d) or self.folded:
            raise ValueError("fold_batchnorm needs an unfolded conv adapter with BatchNorm")
        def affine(bn):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            return scale, bn.bias - bn.running_mean * scale
        s1, t1 = affine(self.norm1)
        s2, t2 = affine(self.norm2)
        w2 = self.conv2.weight  # [C_out, C_in, 4]
        taps = torch.einsum("oik,i->ok", w2, t1)  # contribution of the BN1 shift through each tap [C_out, 4]
        self.conv2.bias += taps.sum(1)
        self.register_buffer("edge_first", taps[:, 0].clone())  # tap 0 reads the left zero pad
        self.register_buffer("edge_last", taps[:, -1].clone())  # tap 3 reads the right zero pad
        self.conv2.weight.mul_(s1[None, :, None])
        self.llm_proj.bias += self.llm_proj.weight @ t2
        self.llm_proj.weight.mul_(s2[None, :])
        self.norm1, self.norm2 = nn.Identity(), nn.Identity()
        self.folded = True
        return self.requires_grad_(False).eval()

    @staticmethod
    def out_lengths(lengths: Tensor, kind: str, pool_ratio: int = 1, token_rate_ratio: int = 1) -> Tensor:
        """Output tokens per example: conv ``len // 2``, mlp and identity ``len``, pool
        ``ceil(len / pool_ratio)``; then ``ceil(n / token_rate_ratio)`` (identity streams are not pooled).
        ``lengths``: an int64 tensor, or one Python int (host-side sizes)."""
        if kind == "identity":
            return lengths
        if kind == "pool":
            lengths = (lengths + pool_ratio - 1) // pool_ratio
        n = lengths // 2 if kind == "conv" else lengths
        return (n + token_rate_ratio - 1) // token_rate_ratio

    def forward(self, x: Union[Packed, Padded]) -> Union[Packed, Padded]:
        """Selected encoder layers -> audio tokens at the token rate, in the input's layout.

        ``Packed``: data k x [total, D], int32 ``cu_seqlens`` [B+1], optional host lengths -> data
        [total_out, H], int32 offsets [B+1], host output lengths (None when none came in).
        ``Padded``: data k x [B, T, D] (zeros past ``lengths``) -> data [B, T_out, H] (zeros past the output
        lengths), output lengths [B]. Identity adapters return the layer mix (width D) itself."""
        if isinstance(x, Packed):
            y, cu = self._packed(x.data, x.cu_seqlens, x.lengths)
            return Packed(y, cu, None if x.lengths is None else self.host_out_lengths(x.lengths))
        if isinstance(x, Padded):
            return Padded(*self._padded(x.data, x.lengths))
        raise TypeError(f"Adapter.forward takes Packed or Padded, got {type(x).__name__}")

    # ---- packed layout -------------------------------------------------------------------------
    def _packed(self, layers: List[Tensor], cu_seqlens: Tensor, lengths: Optional[Sequence[int]] = None
                ) -> Tuple[Tensor, Tensor]:
        """k x [total, D] selected hidden states -> ([total_out, H], int32 cu_out [B+1]) at the token rate
        (identity: the layer mix [total, D] itself).

        ``lengths``: the B sequence lengths as host ints, already checked against ``cu_seqlens`` by the caller
        (once per batch). With them every op gets its sizes from the host and reads nothing back from the
        device; without them each op validates ``cu_seqlens`` itself (device reads)."""
        y, cu_y = self._adapt_packed(layers, cu_seqlens, lengths)
        if self.token_rate_ratio == 1 or self.kind == "identity":
            return y, cu_y
        sizes = {} if lengths is None else dict(total_out=sum(self.host_out_lengths(lengths)), validate=False)
        return ak.varlen_pool(y, cu_y, self.token_rate_ratio, self.token_rate_mode, **sizes)

    def host_out_lengths(self, lengths: Sequence[int]) -> List[int]:
        """:meth:`out_lengths` of this adapter on host ints: B input lengths -> B output token counts."""
        return [self.out_lengths(n, self.kind, self.pool_ratio, self.token_rate_ratio) for n in lengths]

    def _adapt_packed(self, layers: List[Tensor], cu_seqlens: Tensor, lengths: Optional[Sequence[int]] = None
                      ) -> Tuple[Tensor, Tensor]:
        """``_packed`` before the token-rate pooling."""
        x = ak.weighted_layer_sum(layers, self.layer_logits).to(self.layer_logits.dtype)
        if self.kind == "identity":
            return x, cu_seqlens
        if self.kind in ("mlp", "pool"):
            if self.kind == "pool":
                pooled = sum(self.out_lengths(n, "pool", self.pool_ratio) for n in lengths or ())
                sizes = {} if lengths is None else dict(total_out=pooled, validate=False)
                x, cu_seqlens = ak.varlen_pool(x, cu_seqlens, self.pool_ratio, self.pool_mode, **sizes)
            return self.llm_proj(F.gelu(self.fc2(F.gelu(self.fc1(x))))), cu_seqlens
        if self.in_proj is not None:
            x = self.in_proj(x)
        # conv1 (k 3, stride 1, pad 1) keeps every length; conv2 (k 4, stride 2, pad 1) gives len // 2
        conv1_sizes = conv2_sizes = {}
        if lengths is not None:
            longest = max(lengths, default=0)
            conv1_sizes = dict(total_out=sum(lengths), max_seqlen=longest, validate=False)
            conv2_sizes = dict(total_out=sum(n // 2 for n in lengths), max_seqlen=longest, validate=False)
        h, cu_h = ak.varlen_conv1d(x, cu_seqlens, self.conv1.weight.to(x.dtype), self.conv1.bias.to(x.dtype),
                                   stride=1, padding=1, activation="gelu", **conv1_sizes)
        h = self.norm1(h)
        w2, b2 = self.conv2.weight.to(h.dtype), self.conv2.bias.to(h.dtype)
        if self.folded:
            y, cu_y = ak.varlen_conv1d(h, cu_h, w2, b2, stride=2, padding=1, **conv2_sizes)
            n_out, even = cu_y[1:] - cu_y[:-1], cu_seqlens_to_seqlens(cu_seqlens) % 2 == 0
            seq = torch.nonzero(n_out > 0).squeeze(1)  # tap 0 of the first output frame reads the left zero pad
            y = y.index_add(0, cu_y[seq].long(), -self.edge_first.to(y.dtype).expand(seq.numel(), -1))
            seq = torch.nonzero((n_out > 0) & even).squeeze(1)  # tap 3 of the last one reads the right pad
            y = y.index_add(0, cu_y[seq + 1].long() - 1, -self.edge_last.to(y.dtype).expand(seq.numel(), -1))
            y = F.gelu(y)
        else:
            y, cu_y = ak.varlen_conv1d(h, cu_h, w2, b2, stride=2, padding=1, activation="gelu", **conv2_sizes)
        return self.llm_proj(self.norm2(y)), cu_y

    # ---- padded layout -------------------------------------------------------------------------
    def _norm_valid(self, norm: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
        """Norm over channels of [B, T, C] using valid frames only; padded frames set to 0. The result has the
        norm's output dtype (under CUDA autocast LayerNorm gives float32 whatever ``x`` is)."""
        normed = norm(x[mask])
        out = normed.new_zeros(x.shape)
        out[mask] = normed
        return out

    def _padded(self, layers: List[Tensor], lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """k x [B, T, D] (zeros past ``lengths``) -> ([B, T_out, H] zeros past the out lengths, lengths_out),
        at the token rate (identity: the layer mix itself)."""
        y, n = self._adapt_padded(layers, lengths)
        if self.token_rate_ratio == 1 or self.kind == "identity":
            return y, n
        return pool_padded(y, n, self.token_rate_ratio, self.token_rate_mode)

    def _adapt_padded(self, layers: List[Tensor], lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """``_padded`` before the token-rate pooling."""
        x = ak.weighted_layer_sum(layers, self.layer_logits, backend="reference").to(self.layer_logits.dtype)
        out_len = self.out_lengths(lengths, self.kind, self.pool_ratio)
        if self.kind == "identity":
            return x * valid_mask(lengths, x.shape[1])[..., None], out_len
        if self.kind in ("mlp", "pool"):
            if self.kind == "pool":
                x = pool_padded(x, lengths, self.pool_ratio, self.pool_mode)[0]
            y = self.llm_proj(F.gelu(self.fc2(F.gelu(self.fc1(x)))))
            return y * valid_mask(out_len, y.shape[1])[..., None], out_len
        if self.in_proj is not None:
            x = self.in_proj(x)
        x = x * valid_mask(lengths, x.shape[1])[..., None]
        if x.shape[1] < 2:  # nn.Conv1d refuses an empty output: no example has an output token
            return x.new_zeros(x.shape[0], 0, self.llm_proj.out_features), out_len
        h = F.gelu(self.conv1(x.transpose(1, 2))).transpose(1, 2)
        h = self._norm_valid(self.norm1, h, valid_mask(lengths, h.shape[1]))
        y = self.conv2(h.transpose(1, 2)).transpose(1, 2)
        if self.folded:
            rows = torch.nonzero(out_len > 0).squeeze(1)
            y = y.index_put((rows, torch.zeros_like(rows)), -self.edge_first.to(y.dtype).expand(rows.numel(), -1),
                            accumulate=True)
            rows = torch.nonzero((out_len > 0) & (lengths % 2 == 0)).squeeze(1)
            y = y.index_put((rows, out_len[rows] - 1), -self.edge_last.to(y.dtype).expand(rows.numel(), -1),
                            accumulate=True)
        y = F.gelu(y)
        m = valid_mask(out_len, y.shape[1])
        y = self._norm_valid(self.norm2, y, m)
        return self.llm_proj(y) * m[..., None], out_len

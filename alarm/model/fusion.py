"""Multi-encoder fusion: ``sum``, ``concat``, ``CA`` (cross-attention) and ``P`` (perceivers).

Every fusion takes the adapter outputs of all encoders (``encoders[0]`` is the base/Whisper stream), one
``Packed`` or one ``Padded`` per stream (``alarm.model.layout``), and has one ``forward`` on either layout
with the same parameters:
- E x ``Packed`` (``[total_e, H]`` + int32 ``cu_seqlens``) -> ``Packed`` (``[total_out, H]``, ``cu_out``);
  attention through ``alarm_kernels.packed_attention``.
- E x ``Padded`` (``[B, T_e, H]``, zeros past ``lengths[e]``) -> ``Padded`` (``[B, T_out, H]``,
  ``lengths_out``); attention through SDPA with boolean key masks.
Output lengths: sum/concat ``max_e len_e`` (pad-at-end alignment); CA the base stream's length (queries);
P ``2 + n_aux * p_latents + len_base`` (``out_lengths`` computes them on the host).

Host-side sizes: when every packed stream carries its B lengths as host ints (``Packed.lengths``, already
checked against the offsets once for the batch), every op gets its sizes (totals, longest sequences) from the
host instead of reading the offsets back from the device, and the output carries its host lengths too.
"""
from __future__ import annotations

import itertools
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import alarm_kernels as ak
from alarm_kernels.varlen import INT32_MAX, cu_seqlens_to_seqlens, max_seqlen, seqlens_to_cu_seqlens

from .adapters import normal_init_, valid_mask
from .layout import Packed, Padded

__all__ = ["SumFusion", "ConcatFusion", "CrossAttentionFusion", "PerceiverFusion", "build_fusion",
           "segment_gather_index", "host_cu_seqlens"]


def host_cu_seqlens(lengths: Sequence[int], device) -> Tensor:
    """Host int lengths [B] -> int32 offsets [B+1] on ``device``, summed on the host (a host-to-device copy,
    never a device read). ValueError for a negative length or a total int32 offsets cannot hold."""
    offsets = [0, *itertools.accumulate(lengths)]
    if any(n < 0 for n in lengths) or offsets[-1] > INT32_MAX:
        raise ValueError(f"lengths must be non-negative with a total of at most {INT32_MAX}, got {list(lengths)}")
    return torch.tensor(offsets, dtype=torch.int32, device=device)


def segment_gather_index(seg_len: Tensor, seg_base: Tensor, seg_step: Tensor, keep: Tensor | None = None,
                         out_lengths: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Vectorised layout of B sequences built from S segments each (no per-example loop).

    Args: seg_len [B, S] int64 segment lengths; seg_base [B, S] index of each segment's first row in a
    source table; seg_step [S] 1 (contiguous rows) or 0 (one row repeated); keep [B] optional truncation
    (rows kept per example, <= sum of seg_len); out_lengths: the B output lengths (after ``keep``) as host
    ints when the caller knows them (then nothing is read back from the device).
    Returns (index [total] into the table, segment id [total], offset within the segment [total],
    int32 cu_seqlens [B+1] of the output).
    """
    full = seg_len.sum(1)
    out_len = full if keep is None else torch.minimum(full, keep)
    if out_lengths is None:
        cu = seqlens_to_cu_seqlens(out_len, device=seg_len.device)
        total = int(cu[-1])
    else:
        cu, total = host_cu_seqlens(out_lengths, seg_len.device), sum(out_lengths)
    ex = torch.repeat_interleave(torch.arange(seg_len.shape[0], device=seg_len.device), out_len, output_size=total)
    pos = torch.arange(total, device=seg_len.device) - cu[:-1].long()[ex]
    starts = torch.cumsum(seg_len, 1) - seg_len  # [B, S]
    seg = (pos[:, None] >= (starts + seg_len)[ex]).sum(1)
    off = pos - starts[ex, seg]
    return seg_base[ex, seg] + off * seg_step[seg], seg, off, cu


def _aligned_lengths(lengths: Sequence[Sequence[int]]) -> List[int]:
    """Pad-at-end alignment on the host: each example's longest stream."""
    return [max(col) for col in zip(*lengths, strict=True)]


def _align_index(cus: List[Tensor], lengths: Optional[Sequence[Sequence[int]]] = None
                 ) -> Tuple[List[Tensor], int, Tensor]:
    """Pad-at-end alignment: per stream, destination rows in the aligned packed output; total rows, cu.
    ``lengths``: each stream's B lengths as host ints, when known (then no device read)."""
    lens = torch.stack([cu_seqlens_to_seqlens(c) for c in cus])
    if lengths is None:
        out_len = lens.max(0).values
        cu_out = seqlens_to_cu_seqlens(out_len, device=cus[0].device)
        total, stream_totals = int(out_len.sum()), [int(cu[-1]) for cu in cus]
    else:
        out_host = _aligned_lengths(lengths)
        cu_out, total = host_cu_seqlens(out_host, cus[0].device), sum(out_host)
        stream_totals = [sum(n) for n in lengths]
    dests = []
    for cu, ln, n in zip(cus, lens, stream_totals, strict=True):
        ex = torch.repeat_interleave(torch.arange(ln.numel(), device=cu.device), ln, output_size=n)
        dests.append(torch.arange(n, device=cu.device) + (cu_out[:-1] - cu[:-1]).long()[ex])
    return dests, total, cu_out


class _Fusion(nn.Module):
    """One ``forward`` over the stream layouts; subclasses give ``_packed``, ``_padded`` and ``out_lengths``."""

    def forward(self, streams: Sequence[Union[Packed, Padded]]) -> Union[Packed, Padded]:
        """E streams (all ``Packed`` or all ``Padded``, base stream first) -> the fused tokens, same layout.

        ``Packed``: data [total_e, H] each -> data [total_out, H], int32 offsets [B+1], host output lengths
        when every stream has host lengths (else None). ``Padded``: data [B, T_e, H] each, int64 lengths [B]
        -> data [B, T_out, H] (zeros past the output lengths), int64 output lengths [B]."""
        if streams and all(isinstance(s, Packed) for s in streams):
            host = [s.lengths for s in streams]
            host = None if any(n is None for n in host) else host
            y, cu = self._packed([s.data for s in streams], [s.cu_seqlens for s in streams], host)
            return Packed(y, cu, None if host is None else self.out_lengths(host))
        if streams and all(isinstance(s, Padded) for s in streams):
            return Padded(*self._padded([s.data for s in streams], [s.lengths for s in streams]))
        raise TypeError("a fusion takes a non-empty list of streams, all Packed or all Padded, got "
                        f"{[type(s).__name__ for s in streams]}")


def _pad_streams(streams: List[Tensor], t: int) -> List[Tensor]:
    return [F.pad(s, (0, 0, 0, t - s.shape[1])) for s in streams]


class SumFusion(_Fusion):
    """Adds the (pad-at-end aligned) streams; no parameters (AL-<encoder>-R uses one stream)."""

    def out_lengths(self, lengths: Sequence[Sequence[int]]) -> List[int]:
        """Host output lengths [B] from each stream's host lengths [E][B]."""
        return _aligned_lengths(lengths)

    def _packed(self, streams, cus, lengths=None):
        if len(streams) == 1:
            return streams[0], cus[0]
        dests, total, cu_out = _align_index(cus, lengths)
        out = streams[0].new_zeros(total, streams[0].shape[1])
        for s, d in zip(streams, dests, strict=True):
            out = out.index_add(0, d, s)
        return out, cu_out

    def _padded(self, streams, lengths):
        t = max(s.shape[1] for s in streams)
        return sum(_pad_streams(streams, t)), torch.stack(lengths).max(0).values


class ConcatFusion(_Fusion):
    """Streams concatenated along features (pad-at-end aligned) and projected ``sum H_e -> H``."""

    def __init__(self, n_streams: int, hidden: int):
        super().__init__()
        self.proj = normal_init_(nn.Linear(n_streams * hidden, hidden))

    def out_lengths(self, lengths: Sequence[Sequence[int]]) -> List[int]:
        """Host output lengths [B] from each stream's host lengths [E][B]."""
        return _aligned_lengths(lengths)

    def _packed(self, streams, cus, lengths=None):
        dt = streams[0].dtype
        sizes = {} if lengths is None else dict(total_out=sum(_aligned_lengths(lengths)), validate=False)
        return ak.multi_encoder_concat(streams, cus, weight=self.proj.weight.to(dt), bias=self.proj.bias.to(dt),
                                       **sizes)

    def _padded(self, streams, lengths):
        t = max(s.shape[1] for s in streams)
        out_len = torch.stack(lengths).max(0).values
        y = self.proj(torch.cat(_pad_streams(streams, t), -1))
        return y * valid_mask(out_len, t)[..., None], out_len


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections (``d_kv`` may differ from ``d``); ``dropout_p``
    on the attention probabilities in training (both layouts; the packed layout's mask is ``packed_attention``'s
    seeded Philox mask, the padded layout's SDPA's own, so the two layouts agree only without dropout)."""

    def __init__(self, d: int, heads: int, d_kv: int | None = None, dropout_p: float = 0.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.dropout_p = heads, d // heads, dropout_p
        self.q, self.o = nn.Linear(d, d), nn.Linear(d, d)
        self.k, self.v = nn.Linear(d_kv or d, d), nn.Linear(d_kv or d, d)

    @torch.no_grad()
    def init_like_torch_mha_(self) -> None:
        """``nn.MultiheadAttention``'s own init (kept by the published CA): q/k/v weights drawn as one
        xavier-uniform ``[3d, d]`` matrix, zero q/k/v and output biases (the output weight is left alone)."""
        w = torch.empty(3 * self.q.out_features, self.q.in_features, device=self.q.weight.device)
        nn.init.xavier_uniform_(w)
        for lin, part in zip((self.q, self.k, self.v), w.chunk(3), strict=True):
            lin.weight.copy_(part)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.o.bias)

    def packed(self, x: Tensor, mem: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int) -> Tensor:
        """x [tq, d], mem [tk, d_kv] packed -> [tq, d]."""
        h, dh = self.heads, self.head_dim
        q, k, v = self.q(x).view(-1, h, dh), self.k(mem).view(-1, h, dh), self.v(mem).view(-1, h, dh)
        p = self.dropout_p if self.training else 0.0
        # the offsets come from host-side lengths (checked once per batch): no per-call device reads
        y = ak.packed_attention(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=p, validate=False)
        return self.o(y.reshape(x.shape[0], -1))

    def padded(self, x: Tensor, mem: Tensor, key_valid: Tensor | None) -> Tensor:
        """x [B, Tq, d], mem [B, Tk, d_kv], key_valid bool [B, Tk] or None -> [B, Tq, d]."""
        b, h, dh = x.shape[0], self.heads, self.head_dim
        q = self.q(x).view(b, -1, h, dh).transpose(1, 2)
        k = self.k(mem).view(b, -1, h, dh).transpose(1, 2)
        v = self.v(mem).view(b, -1, h, dh).transpose(1, 2)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        p = self.dropout_p if self.training else 0.0  # dropout on the attention probabilities
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.o(y.transpose(1, 2).reshape(b, -1, h * dh))


class FeedForward(nn.Sequential):
    """Linear d -> ffn, GELU, dropout, Linear ffn -> d."""

    def __init__(self, d: int, ffn: int, dropout: float):
        super().__init__(nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: x += SA(LN x); x += CA(LN x, memory); x += FFN(LN x) (dropout on each residual
    branch and inside the FFN). The memory is normalised by its own LayerNorm only with ``mem_norm``."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float, d_mem: int | None = None, self_attn=True,
                 mem_norm: bool = False, attention_dropout: float = 0.0):
        super().__init__()
        self.ln_sa = nn.LayerNorm(d) if self_attn else None
        self.sa = Attention(d, heads, dropout_p=attention_dropout) if self_attn else None
        self.ln_ca, self.ca = nn.LayerNorm(d), Attention(d, heads, d_mem, dropout_p=attention_dropout)
        self.ln_mem = nn.LayerNorm(d_mem or d) if mem_norm else None
        self.ln_ff, self.ff = nn.LayerNorm(d), FeedForward(d, ffn, dropout)
        self.drop = nn.Dropout(dropout)

    def packed(self, x, mem, cu_q, cu_k, max_q, max_k):
        if self.sa is not None:
            y = self.ln_sa(x)
            x = x + self.drop(self.sa.packed(y, y, cu_q, cu_q, max_q, max_q))
        if self.ln_mem is not None:
            mem = self.ln_mem(mem)
        x = x + self.drop(self.ca.packed(self.ln_ca(x), mem, cu_q, cu_k, max_q, max_k))
        return x + self.drop(self.ff(self.ln_ff(x)))

    def padded(self, x, mem, q_valid, k_valid):
        if self.sa is not None:
            y = self.ln_sa(x)
            x = x + self.drop(self.sa.padded(y, y, q_valid))
        if self.ln_mem is not None:
            mem = self.ln_mem(mem)
        x = x + self.drop(self.ca.padded(self.ln_ca(x), mem, k_valid))
        return x + self.drop(self.ff(self.ln_ff(x)))


class CrossAttentionFusion(_Fusion):
    """ALARM-CA: per-stream in_proj H -> d; base-stream queries; one decoder layer per other stream, each
    attending to that stream with its own lengths; out_proj d -> H. Output on the base stream's time axis."""

    def __init__(self, n_streams: int, hidden: int, d: int, heads: int, ffn: int, dropout: float,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.in_proj = nn.ModuleList(nn.Linear(hidden, d) for _ in range(n_streams))
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ffn, dropout, attention_dropout=attention_dropout)
                                    for _ in range(n_streams - 1))
        self.out_proj = nn.Linear(d, hidden)
        normal_init_(self)
        for layer in self.layers:  # published: torch's TransformerDecoderLayer, whose attentions keep their init
            layer.sa.init_like_torch_mha_()
            layer.ca.init_like_torch_mha_()

    def out_lengths(self, lengths: Sequence[Sequence[int]]) -> List[int]:
        """Host output lengths [B] (the base stream's) from each stream's host lengths [E][B]."""
        return list(lengths[0])

    def _packed(self, streams, cus, lengths=None):
        longest = [max_seqlen(cu) for cu in cus] if lengths is None else [max(n, default=0) for n in lengths]
        x = self.in_proj[0](streams[0])
        for e, layer in enumerate(self.layers, start=1):
            mem = self.in_proj[e](streams[e])
            x = layer.packed(x, mem, cus[0], cus[e], longest[0], longest[e])
        return self.out_proj(x), cus[0]

    def _padded(self, streams, lengths):
        x = self.in_proj[0](streams[0])
        q_valid = valid_mask(lengths[0], x.shape[1])
        for e, layer in enumerate(self.layers, start=1):
            mem = self.in_proj[e](streams[e])
            x = layer.padded(x, mem, q_valid, valid_mask(lengths[e], mem.shape[1]))
        return self.out_proj(x) * q_valid[..., None], lengths[0]


class Perceiver(nn.Module):
    """``n`` learned latents (width w) read one stream of width ``d_in`` with one cross-attention layer
    (LayerNorm on latents and on the stream), then a block of self-attention layers applied ``repeats`` times
    with shared weights; out_proj w -> H (the published ``PerceiverEncoder`` + ``out_proj``)."""

    def __init__(self, d_in: int, hidden: int, n: int, w: int, heads: int, self_layers: int, repeats: int,
                 ffn_mult: int, dropout: float):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n, w) * 0.02)
        self.cross = DecoderLayer(w, heads, ffn_mult * w, dropout, d_mem=d_in, self_attn=False, mem_norm=True)
        self.block = nn.ModuleList(_SelfLayer(w, heads, ffn_mult * w, dropout) for _ in range(self_layers))
        self.repeats = repeats
        self.out_proj = nn.Linear(w, hidden)

    def _self_block(self, lat: Tensor) -> Tensor:
        for _ in range(self.repeats):
            for layer in self.block:
                lat = layer(lat)
        return self.out_proj(lat)

    def packed(self, mem: Tensor, cu: Tensor, longest: Optional[int] = None) -> Tensor:
        """mem [total, H] packed, cu [B+1] (``longest``: its longest sequence, when known on the host) ->
        [B, n, H]."""
        b, n = cu.numel() - 1, self.latents.shape[0]
        lat = self.latents.repeat(b, 1)
        cu_q = torch.arange(b + 1, device=cu.device, dtype=torch.int32) * n
        lat = self.cross.packed(lat, mem, cu_q, cu, n, max_seqlen(cu) if longest is None else longest)
        return self._self_block(lat.view(b, n, -1))

    def padded(self, mem: Tensor, lengths: Tensor) -> Tensor:
        """mem [B, T, H], lengths [B] -> [B, n, H]."""
        lat = self.latents.expand(mem.shape[0], -1, -1)
        lat = self.cross.padded(lat, mem, None, valid_mask(lengths, mem.shape[1]))
        return self._self_block(lat)


class _SelfLayer(nn.Module):
    """Pre-norm self-attention layer over a fixed number of latents (dense, no mask) [B, n, w]."""

    def __init__(self, w, heads, ffn, dropout):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(w), Attention(w, heads)
        self.ln2, self.ff = nn.LayerNorm(w), FeedForward(w, ffn, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.drop(self.attn.padded(y, y, None))
        return x + self.drop(self.ff(self.ln2(x)))


class PerceiverFusion(_Fusion):
    """ALARM-P: one perceiver per auxiliary stream (of width ``widths[e]``); sequence
    ``[cond_start, latents..., cond_end, base]``."""

    def __init__(self, widths: List[int], hidden: int, n: int, w: int, heads: int, self_layers: int, repeats: int,
                 ffn_mult: int, dropout: float):
        super().__init__()
        self.perceivers = nn.ModuleList(Perceiver(d, hidden, n, w, heads, self_layers, repeats, ffn_mult, dropout)
                                        for d in widths[1:])
        normal_init_(self)
        self.cond_start = nn.Parameter(torch.randn(hidden))  # published: standard normal
        self.cond_end = nn.Parameter(torch.randn(hidden))

    def out_lengths(self, lengths: Sequence[Sequence[int]]) -> List[int]:
        """Host output lengths [B] (separators, every perceiver's latents, the base stream) from each stream's
        host lengths [E][B]."""
        m = sum(p.latents.shape[0] for p in self.perceivers)
        return [2 + m + n for n in lengths[0]]

    def _packed(self, streams, cus, lengths=None):
        longest = [None] * len(cus) if lengths is None else [max(n, default=0) for n in lengths]
        pairs = zip(self.perceivers, streams[1:], cus[1:], longest[1:], strict=True)
        lat = torch.cat([p.packed(s, c, n) for p, s, c, n in pairs], 1)  # [B, m, H]
        b, m, hdim = lat.shape
        base = streams[0]
        n_base = int(cus[0][-1]) if lengths is None else sum(lengths[0])
        table = torch.cat([base, lat.reshape(b * m, hdim), self.cond_start[None].to(base.dtype),
                           self.cond_end[None].to(base.dtype)])
        dev = base.device
        seg_len = torch.stack([torch.ones(b, dtype=torch.int64, device=dev), torch.full((b,), m, device=dev),
                               torch.ones(b, dtype=torch.int64, device=dev), cu_seqlens_to_seqlens(cus[0])], 1)
        seg_base = torch.stack([torch.full((b,), n_base + b * m, device=dev),
                                n_base + torch.arange(b, device=dev) * m,
                                torch.full((b,), n_base + b * m + 1, device=dev), cus[0][:-1].long()], 1)
        idx, _, _, cu = segment_gather_index(seg_len, seg_base, torch.tensor([0, 1, 0, 1], device=dev),
                                             out_lengths=None if lengths is None else self.out_lengths(lengths))
        return table[idx], cu

    def _padded(self, streams, lengths):
        pairs = zip(self.perceivers, streams[1:], lengths[1:], strict=True)
        lat = torch.cat([p.padded(s, ln) for p, s, ln in pairs], 1)
        b = lat.shape[0]
        start = self.cond_start.to(lat.dtype).expand(b, 1, -1)
        end = self.cond_end.to(lat.dtype).expand(b, 1, -1)
        return torch.cat([start, lat, end, streams[0]], 1), lengths[0] + lat.shape[1] + 2


def build_fusion(cfg) -> nn.Module:
    """The fusion module for ``cfg.fusion`` (cfg: ALARMConfig)."""
    n = len(cfg.encoders)
    if cfg.fusion == "sum":
        return SumFusion()
    if cfg.fusion == "concat":
        return ConcatFusion(n, cfg.llm_hidden)
    if cfg.fusion == "CA":
        return CrossAttentionFusion(n, cfg.llm_hidden, cfg.ca_dim, cfg.ca_heads, cfg.ca_ffn, cfg.dropout,
                                    cfg.ca_attention_dropout)
    widths = [e.dim if e.adapter == "identity" else cfg.llm_hidden for e in cfg.encoders]
    return PerceiverFusion(widths, cfg.llm_hidden, cfg.p_latents, cfg.p_width, cfg.p_heads, cfg.p_self_layers,
                           cfg.p_repeats, cfg.p_ffn_mult, cfg.p_dropout)

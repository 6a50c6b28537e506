"""transformers integration: ``attn_implementation="alarm_packed"`` routes every attention call of a stock
model (Qwen3, Llama-style: q/k/v ``[B, H, S, D]``) to :func:`alarm_kernels.packed_attention`.

Call :func:`register_hf_attention` once (idempotent), then build the model with
``attn_implementation="alarm_packed"``. How the sequence boundaries are found, in order:

1. **Packed batch (the training path).** One row ``[1, total, ...]`` holding several documents, with
   per-document ``position_ids`` and the boundaries passed explicitly through the model's forward kwargs
   under the names transformers' flash-attention path uses: ``cu_seq_lens_q``, ``cu_seq_lens_k``
   (int32 or int64 offsets ``[N+1]``, any device) and optionally ``max_length_q``, ``max_length_k``
   (computed from the offsets when absent; ``cu_seq_lens_k`` defaults to ``cu_seq_lens_q``). This is
   exactly what ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)`` emits, so its batches work
   unchanged. Rows of a ``[B, S]`` input are flattened in order, so offsets may also span several rows.
2. **Padded batch** ``[B, S]`` with a 2-D ``attention_mask``: the mask is explicit boundary information;
   each row's valid tokens form one sequence (queries are the last ``S`` key positions, so cached
   generation with left padding works too); padded query positions output 0.
3. **Plain batch** (no boundaries, no padding mask): ordinary causal attention within each row, like SDPA.
   If the ``position_ids`` restart inside a row (a packed batch whose boundaries were not passed), this
   raises ``ValueError`` instead of guessing the boundaries from the position ids.

Attention dropout: the ``dropout`` transformers passes (the model's ``attention_dropout`` in training mode,
0 otherwise) goes to the op's seeded Philox dropout. A ``dropout_seed`` forward kwarg makes it reproducible
(each layer uses its ``layer_idx`` as the mask offset, so layers differ); without one, every call draws a
seed from torch's default generator. Sliding windows, soft-capping, attention sinks and
``output_attentions`` are not supported (ValueError). The kernel backend follows ``ALARM_KERNELS_BACKEND``
(default "auto"), or the one given to :func:`register_hf_attention`.

Host reads: every layer of one forward passes the same mask, position ids or offsets, so what the glue derives
from them (offsets, longest sequences, the packed-row check) is computed once per forward and reused by the
other layers, which then read nothing back from the device. Pass ``max_length_q`` / ``max_length_k`` as ints to
avoid even the one read of the offsets.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from .._utils import TensorMemo
from ..varlen import seqlens_to_cu_seqlens
from . import packed_attention

__all__ = ["ATTENTION_NAME", "register_hf_attention", "alarm_packed_attention_forward"]

ATTENTION_NAME = "alarm_packed"
_settings = {"backend": "auto", "deterministic": False}

# what one forward's layers derive from the same mask, position ids or offsets
_derived = TensorMemo(limit=64)


def _once_per_tensor(tensor: Tensor, key: tuple, compute: Callable[[], object]):
    """``compute()``, reused while ``tensor`` (unchanged) and ``key`` are the same: the layers of one forward
    derive their boundaries once instead of reading the device in every layer."""
    return _derived.get_or_compute(tensor, key, compute)


def _as_cu_seqlens(value, name: str, device: torch.device) -> Tensor:
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    if value.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be an int32/int64 tensor of offsets [N+1], got {value.dtype}")
    return value.to(device=device, dtype=torch.int32)


def _as_max_length(value, cu: Tensor) -> int:
    if value is None:
        return _once_per_tensor(cu, ("longest",), lambda: int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0)
    return int(value)


def _packed(query, key, value, cu_q, cu_k, max_q, max_k, causal, scaling, dropout: dict) -> Tensor:
    b, hq, s, d = query.shape
    q = query.transpose(1, 2).reshape(b * s, hq, d)
    k = key.transpose(1, 2).reshape(b * key.shape[2], key.shape[1], d)
    v = value.transpose(1, 2).reshape(b * value.shape[2], value.shape[1], d)
    out = packed_attention(
        q, k, v, cu_q, cu_k, max_q, max_k, causal=causal, softmax_scale=scaling,
        backend=_settings["backend"], deterministic=_settings["deterministic"], **dropout,
    )
    return out.view(b, s, hq, d)


def _boundaries(attention_mask: Tensor, s: int, device) -> tuple:
    """Padding mask [B, S_kv] -> (kv_valid, q_valid (the last ``s`` key positions), cu_q, cu_k, max_q, max_k)."""
    kv_valid = attention_mask.to(device=device, dtype=torch.bool)
    q_valid = kv_valid[:, -s:]
    lens_q, lens_k = q_valid.sum(1), kv_valid.sum(1)
    max_q, max_k = torch.stack([lens_q.max(), lens_k.max()]).tolist() if lens_q.numel() else (0, 0)
    return kv_valid, q_valid, seqlens_to_cu_seqlens(lens_q), seqlens_to_cu_seqlens(lens_k), max_q, max_k


def _unpadded(query, key, value, attention_mask: Tensor, causal, scaling, dropout: dict) -> Tensor:
    b, hq, s, d = query.shape
    kv_valid, q_valid, cu_q, cu_k, max_q, max_k = _once_per_tensor(
        attention_mask, (s, query.device), lambda: _boundaries(attention_mask, s, query.device))
    out_flat = packed_attention(
        query.transpose(1, 2)[q_valid], key.transpose(1, 2)[kv_valid], value.transpose(1, 2)[kv_valid],
        cu_q, cu_k, max_q, max_k, causal=causal, softmax_scale=scaling,
        backend=_settings["backend"], deterministic=_settings["deterministic"], **dropout,
    )
    out = query.new_zeros(b, s, hq, d)
    out[q_valid] = out_flat
    return out


def _check_not_packed(position_ids: Optional[Tensor]) -> None:
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return
    if not _once_per_tensor(position_ids, ("consecutive",),
                            lambda: bool((position_ids[:, 1:] - position_ids[:, :-1] == 1).all())):
        raise ValueError(
            "alarm_packed attention: position_ids restart inside a row (a packed batch?) but no sequence "
            "boundaries were given. Pass cu_seq_lens_q / cu_seq_lens_k (and max_length_q / max_length_k) to the "
            "model's forward, e.g. from DataCollatorWithFlattening(return_flash_attn_kwargs=True); boundaries are "
            "never inferred from position ids."
        )


_row_offset_cache: Dict[tuple, Tuple[Tensor, Tensor]] = {}


def _row_offsets(b: int, s: int, s_kv: int, device) -> Tuple[Tensor, Tensor]:
    """Offsets of B rows of S queries and S_kv keys: the same tensors for every layer (the op validates a new
    offsets tensor once)."""
    key = (b, s, s_kv, str(device))
    if key in _row_offset_cache and not torch.compiler.is_compiling():
        return _row_offset_cache[key]
    rows = torch.arange(b + 1, device=device, dtype=torch.int32)
    offsets = (rows * s, rows * s_kv)
    if not torch.compiler.is_compiling():
        if len(_row_offset_cache) > 64:
            _row_offset_cache.clear()
        _row_offset_cache[key] = offsets
    return offsets


def alarm_packed_attention_forward(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    is_causal: Optional[bool] = None,
    **kwargs,
) -> Tuple[Tensor, None]:
    """transformers attention function (the ``AttentionInterface`` signature).

    Args:
        module: the calling attention module (``module.is_causal`` is the default for ``is_causal``).
        query: ``[B, Hq, S, D]``; key, value: ``[B, Hkv, S_kv, D]``.
        attention_mask: None or a 2-D bool/int padding mask ``[B, S_kv]`` (what the "alarm_packed" mask
            function, transformers' flash-attention one, hands over; None when there is no padding).
        dropout: attention dropout rate (transformers passes the config's rate in training, else 0).
        scaling: softmax scale (default ``1/sqrt(D)``).
        kwargs: ``cu_seq_lens_q``, ``cu_seq_lens_k``, ``max_length_q``, ``max_length_k``, ``position_ids``,
            ``dropout_seed`` (int; with ``module.layer_idx`` as the offset).
    Returns:
        ``(out [B, S, Hq, D], None)``.
    """
    dropout_args = {"dropout_p": float(dropout)}
    if dropout:
        layer = getattr(module, "layer_idx", None)
        dropout_args.update(dropout_seed=kwargs.get("dropout_seed"), dropout_offset=layer if isinstance(layer, int)
                            else 0)
    if sliding_window is not None or softcap is not None or kwargs.get("s_aux") is not None:
        raise ValueError("alarm_packed attention supports neither sliding windows, soft-capping nor attention sinks")
    if kwargs.get("output_attentions", False):
        raise ValueError("alarm_packed attention cannot return attention weights (output_attentions=True)")
    causal = bool(module.is_causal if is_causal is None else is_causal)
    key, value = key.to(query.dtype), value.to(query.dtype)
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            f"alarm_packed attention takes a 2-D padding mask or none, got shape {tuple(attention_mask.shape)}"
        )
    if cu_q is not None or cu_k is not None:
        if attention_mask is not None:
            raise ValueError(
                "alarm_packed attention: pass either cu_seq_lens_q/k or a padding attention_mask, not both"
            )
        if cu_q is None:
            raise ValueError("alarm_packed attention: cu_seq_lens_k was given without cu_seq_lens_q")
        cu_q = _as_cu_seqlens(cu_q, "cu_seq_lens_q", query.device)
        cu_k = cu_q if cu_k is None else _as_cu_seqlens(cu_k, "cu_seq_lens_k", query.device)
        max_q = _as_max_length(kwargs.get("max_length_q"), cu_q)
        max_k = _as_max_length(kwargs.get("max_length_k"), cu_k)
        out = _packed(query, key, value, cu_q, cu_k, max_q, max_k, causal, scaling, dropout_args)
    elif attention_mask is not None:
        out = _unpadded(query, key, value, attention_mask, causal, scaling, dropout_args)
    else:
        _check_not_packed(kwargs.get("position_ids"))
        b, s, s_kv = query.shape[0], query.shape[2], key.shape[2]
        cu_q, cu_k = _row_offsets(b, s, s_kv, query.device)
        out = _packed(query, key, value, cu_q, cu_k, s, s_kv, causal, scaling, dropout_args)
    return out, None


def register_hf_attention(backend: str = "auto", deterministic: bool = False) -> str:
    """Register ``"alarm_packed"`` with transformers' ``AttentionInterface`` (and its mask function, which
    hands a 2-D padding mask or None to the attention function). Idempotent; the last call's ``backend`` and
    ``deterministic`` apply to every model using it. Returns the name to pass as ``attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    _settings["backend"] = backend
    _settings["deterministic"] = bool(deterministic)
    AttentionInterface.register(ATTENTION_NAME, alarm_packed_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, flash_attention_mask)
    return ATTENTION_NAME

"""Test helper: a small re-expression of the published MuQ computation under ALARM, written from reading the
public code (``tencent-ailab/MuQ`` src/muq/muq/{muq.py, models/muq_model.py}, as muq 0.1.0 runs with the
transformers 4.57 that ALARM pins; ``Blinorot/ALARM`` src/model/audio/{encoder,feature_extractor}_implementations/
muq.py and encoder_implementations/base.py), for any module with MuQ's structure (``.model.preprocessing /
normalize / conv / conformer``)."""
import torch
from torch import nn


def muq_hidden_states(muq, x, attention_mask):
    """``MuQ(x, attention_mask, output_hidden_states=True).hidden_states``: ``get_predictions`` -> ``encoder``, with
    the conformer's hidden states as transformers 4.x collects them (each block's input, then the final
    LayerNorm of the last block's output). -> list of ``n_blocks + 1`` tensors ``[B, T, D]``."""
    m = muq.model
    feats = m.normalize(m.preprocessing(x, features=["melspec_2048"]))["melspec_2048"]
    h = m.conv(feats.to(next(m.conv.parameters()).dtype))
    mask = attention_mask.bool()
    skip_n = int(mask.size(-1) / h.size(1))
    mask = mask[:, ::skip_n][:, : h.size(1)]
    enc = m.conformer
    h = h.clone()
    h[~mask] = 0.0
    additive = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
    additive = additive.expand(-1, 1, h.shape[1], -1)
    positions = enc.embed_positions(h) if enc.embed_positions is not None else None
    states = []
    for layer in enc.layers:
        states.append(h)
        h = layer(h, attention_mask=additive, relative_position_embeddings=positions)
    states.append(enc.layer_norm(h))
    return states


def published_muq_tokens(muq, clips, window, layers, frame=960):
    """``MuQFeatureExtractor`` per clip (zero-padded to a multiple of ``window``, mask over its samples), the
    batch padded to its longest, split into ``window`` pieces encoded one after another, outputs concatenated
    in time, ``lengths // frame`` kept. -> list per clip of ``[len(layers)] x [frames, D]``."""
    waves, masks, lengths = [], [], []
    for c in clips:
        n = c.shape[-1]
        target = n if n % window == 0 else (n // window + 1) * window
        waves.append(nn.functional.pad(c, (0, target - n)))
        mask = torch.zeros(target, dtype=torch.long)
        mask[:n] = 1
        masks.append(mask)
        lengths.append(n)
    longest = max(w.shape[-1] for w in waves)
    batch = torch.stack([nn.functional.pad(w, (0, longest - w.shape[-1])) for w in waves])
    mask = torch.stack([nn.functional.pad(m, (0, longest - m.shape[-1])) for m in masks])
    outs = [torch.stack(muq_hidden_states(muq, x, m))
            for x, m in zip(batch.split(window, dim=-1), mask.split(window, dim=-1), strict=True)]
    encoded = torch.cat(outs, dim=-2)
    return [[encoded[i, b, : n // frame] for i in layers] for b, n in enumerate(lengths)]

"""The audio-side modules compute and initialize what the published ALARM does: plain-torch re-expressions
of the published modules (written from its source: ``BaseAudioAdapter``, ``DownsamplerConformer``,
``MLPAdapter``, ``WeightedAverageLayerFusion``, ``CrossAttentionFusion`` on ``nn.TransformerDecoderLayer``,
``MultiPerceiverFusion`` on ``PerceiverEncoder``) give this project's outputs with the same weights."""
import torch
from torch import nn

from alarm.model import ALARMConfig, AudioSide


def _std_ok(t, std, rel=0.15):
    return abs(t.float().std().item() - std) < rel * std


def test_initialization_as_published():
    """Linear/Conv1d N(0, 0.02) with zero bias, layer logits 0, separators and P's conditioning vectors
    N(0, 1), CA attention q/k/v xavier-uniform (torch's MultiheadAttention init), latents N(0, 0.02)."""
    torch.manual_seed(0)
    big = dict(llm_hidden=512, adapter_dim=256, adapter_hidden=512, mlp_hidden=256, ca_dim=256, ca_ffn=512,
               p_width=128)
    ca = AudioSide(ALARMConfig.tiny("CA", **big))
    ad = ca.adapters["whisper"]
    for m in (ad.conv1, ad.conv2, ad.in_proj, ad.llm_proj, ca.fusion.in_proj[0], ca.fusion.out_proj,
              ca.fusion.layers[0].ff[0], ca.fusion.layers[0].sa.o):
        assert _std_ok(m.weight, 0.02) and abs(m.weight.mean().item()) < 2e-3, m
        assert torch.count_nonzero(m.bias) == 0
    assert torch.count_nonzero(ad.layer_logits) == 0
    d = 256
    for att in (ca.fusion.layers[0].sa, ca.fusion.layers[0].ca):
        qkv = torch.cat([att.q.weight, att.k.weight, att.v.weight])
        bound = (6 / (d + 3 * d)) ** 0.5
        assert qkv.abs().max() <= bound and _std_ok(qkv, bound / 3 ** 0.5)
        assert torch.count_nonzero(att.q.bias) == torch.count_nonzero(att.o.bias) == 0
    for sep in (ca.audio_start, ca.audio_end):
        assert _std_ok(sep, 1.0, rel=0.2)
    p = AudioSide(ALARMConfig.tiny("P", **big))
    assert _std_ok(p.fusion.cond_start, 1.0, rel=0.2) and _std_ok(p.fusion.cond_end, 1.0, rel=0.2)
    per = p.fusion.perceivers[0]
    assert _std_ok(per.latents, 0.02, rel=0.3) and _std_ok(per.out_proj.weight, 0.02)
    assert all(torch.count_nonzero(m.bias) == 0 for m in p.fusion.modules() if isinstance(m, nn.Linear))


def test_ca_attention_dropout_on_reference_path():
    """Published CA drops attention probabilities (p = 0.1) in training; eval is deterministic."""
    from alarm.model.fusion import Attention
    torch.manual_seed(0)
    att = Attention(64, 2, dropout_p=0.5)
    x = torch.randn(2, 7, 64)
    att.eval()
    ref = att.padded(x, x, None)
    att.dropout_p = 0.0
    torch.testing.assert_close(att.padded(x, x, None), ref)
    att.dropout_p = 0.5
    att.train()
    a, b = att.padded(x, x, None), att.padded(x, x, None)
    assert not torch.allclose(a, b) and not torch.allclose(a, ref)
    cfg = ALARMConfig.full("CA")
    assert cfg.ca_attention_dropout == cfg.dropout == 0.1

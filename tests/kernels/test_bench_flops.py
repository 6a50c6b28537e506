"""The e2e benchmark's FLOP formulas (bench/flops.py) against torch.utils.flop_counter on the same modules.

FlopCounterMode counts every matmul / convolution / attention product the modules actually run; the
formulas must give the same number for shapes without padding (full attention where the formula's
``causal=False`` is asked for: the counter counts SDPA as full attention whatever the mask)."""
import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from alarm.model import ALARMConfig
from alarm.model.adapters import Adapter
from alarm.model.fusion import build_fusion
from alarm.model.layout import Padded
from alarm.model.sslam import SSLAMConfig, SSLAMViT
from alarm.model.tiny import TinyMuQ
from bench.flops import (adapter_flops, fusion_flops, llm_flops, llm_step_flops, muq_flops, sslam_flops, w2v_bert_flops,
                         whisper_flops)


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_llm_forward_and_input_gradient_backward_match_the_flop_counter():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16)
    model = Qwen3ForCausalLM._from_config(cfg, attn_implementation="eager").requires_grad_(False)
    n = 37
    x = torch.randn(1, n, 64, requires_grad=True)
    out = {}
    fwd = counted(lambda: out.setdefault("logits", model(inputs_embeds=x).logits))
    bwd = counted(lambda: out["logits"].float().pow(2).sum().backward())
    expect = llm_flops(cfg, [n], n_targets=n, causal=False)
    assert fwd == sum(expect.values())
    assert bwd == llm_step_flops(cfg, [n], n, causal=False)["backward"]
    causal = llm_flops(cfg, [n], n_targets=5)
    assert causal["attention"] == pytest.approx(expect["attention"] * (n + 1) / (2 * n))
    assert causal["lm_head"] == 2 * 64 * 320 * 5


def test_whisper_encoder_matches_the_flop_counter():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(d_model=32, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=48, num_mel_bins=20,
                        max_source_positions=40)
    enc = WhisperEncoder._from_config(cfg, attn_implementation="eager").eval()
    mel = torch.randn(2, 20, 80)
    with torch.no_grad():
        assert counted(lambda: enc(mel)) == whisper_flops(cfg, [80, 80], blocks=3)


def test_w2v_bert_encoder_matches_the_flop_counter():
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    cfg = Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                             feature_projection_input_dim=160, conv_depthwise_kernel_size=5,
                             left_max_position_embeddings=16, right_max_position_embeddings=4)
    model = Wav2Vec2BertModel._from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        assert counted(lambda: model(torch.randn(1, 45, 160))) == w2v_bert_flops(cfg, [45], blocks=2)


@pytest.mark.parametrize("n_mels,mel_frames", [(16, [40, 40]), (13, [37])])
def test_muq_subsampling_and_conformer_match_the_flop_counter(n_mels, mel_frames):
    """MuQ's structure (residual conv subsampling, rotary conformer) at odd and even sizes; only 2 of 3 blocks kept."""
    muq = TinyMuQ(dim=32, layers=3, heads=2, n_mels=n_mels, ffn=40, kernel=7, conv_channels=5).eval()
    core = muq.model
    core.conformer.config._attn_implementation = "eager"
    core.conformer.layers = core.conformer.layers[:2]
    mel = torch.randn(len(mel_frames), n_mels, mel_frames[0])
    with torch.no_grad():
        got = counted(lambda: core.conformer(core.conv(mel)))
    assert got == muq_flops(muq.shape, mel_frames, blocks=2)
    assert muq_flops(muq.shape, mel_frames, blocks=0) < got  # the subsampling alone


def test_sslam_vit_matches_the_flop_counter():
    cfg = SSLAMConfig(embed_dim=32, depth=3, num_heads=2, max_length=8)
    vit = SSLAMViT(cfg).eval()
    vit.blocks = vit.blocks[:2]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        got = counted(lambda: vit(torch.randn(3, 64, 128)))
    assert got == sslam_flops(cfg, [64, 64, 64], blocks=2)


@pytest.mark.parametrize("kind", ["conv", "mlp", "pool"])
def test_adapter_matches_the_flop_counter(kind):
    cfg = ALARMConfig.tiny("concat")
    spec = dataclasses.replace(cfg.encoders[1], adapter=kind, dim=40)
    adapter = Adapter(spec, cfg.adapter_dim, cfg.adapter_hidden, cfg.mlp_hidden, cfg.llm_hidden).eval()
    t = 23
    layers = [torch.randn(1, t, 40) for _ in spec.layers]
    with torch.no_grad():
        got = counted(lambda: adapter(Padded(layers, torch.tensor([t]))))
    assert got == adapter_flops(kind, [t], 40, cfg.adapter_dim, cfg.adapter_hidden, cfg.mlp_hidden, cfg.llm_hidden,
                                spec.pool_ratio)


@pytest.mark.parametrize("fusion", ["concat", "CA"])
def test_fusion_matches_the_flop_counter(fusion):
    cfg = ALARMConfig.tiny(fusion)
    module = build_fusion(cfg).eval()
    lengths = [11, 17]
    streams = [torch.randn(1, n, cfg.llm_hidden) for n in lengths]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):  # the math path is plain matmuls, which the counter sees
        got = counted(lambda: module([Padded(s, torch.tensor([n])) for s, n in zip(streams, lengths, strict=True)]))
    assert got == fusion_flops(fusion, [[n] for n in lengths], cfg.llm_hidden, cfg.ca_dim, cfg.ca_ffn)
    assert fusion_flops("P", [[3], [4]], 8) is None and fusion_flops("sum", [[3], [4]], 8) == 0

"""``alarm convert``: published checkpoints (state dicts written from the published module structure at tiny
sizes: AL-Whisper-R, ALARM-CA, ALARM-P) convert with full key coverage, and this project's modules with the
converted weights compute what the published modules compute (re-expressed in ``tests/alarm/published_alarm.py``)."""
import json

import pytest
import torch
from safetensors.torch import load_file

import published_alarm as pub
from alarm.convert import convert_published
from alarm.model import ALARMConfig, ALARMModel, AudioSide
from alarm.model.tiny import synthetic_audio
from alarm.model.layout import Packed, Padded
from alarm_kernels.varlen import seqlens_to_cu_seqlens, unpack

H, W = 64, 48  # tiny LLM width (ALARMConfig.tiny) and adapter width
DIMS = {"whisper": 32, "w2vbert": 32, "muq": 40, "sslam": 24}
LAYERS = {"whisper": [1, 2], "w2vbert": [0, 2], "muq": [1, 2], "sslam": [3, 7, 11]}
OURS = {"whisper": "whisper", "w2vbert": "w2v-bert", "muq": "muq", "sslam": "sslam"}


def _adapter(name, kind, norm="layer"):
    """(published module, its config.json entry)."""
    n, d = len(LAYERS[name]), DIMS[name]
    entry = dict(encoder_name=name, adapter_name=kind, audio_encoder_layers=LAYERS[name], pre_average=True,
                 layer_fusion_config=dict(layer_fusion_type="weighted_average"), llm_embedding_dim=H)
    if kind == "downsampler_conformer":
        entry.update(norm_type=norm, downsampler_depth=1, use_conformer=False, encoder_embedding_dim=d,
                     adapter_embedding_dim=W)
        return pub.ConvAdapter(n, d, W, H, norm), entry
    if kind == "mlp":
        entry.update(encoder_embedding_dim=d, hidden_dim=W, adapter_embedding_dim=W)
        return pub.MLPAdapter(n, d, W, H), entry
    entry.update(use_llm_proj=False, adapter_embedding_dim=1024)
    return pub.IdentityAdapter(n), entry


def _published(variant):
    """(adapters {name: module}, fusion module or None, config.json dict) of a tiny published model."""
    if variant == "R":
        specs = {"whisper": ("downsampler_conformer", "batch")}
        fusion, fcfg = None, dict(fusion_type="sum")
    elif variant == "CA":
        specs = {"whisper": ("downsampler_conformer", "batch"), "w2vbert": ("downsampler_conformer", "layer"),
                 "muq": ("mlp", None), "sslam": ("downsampler_conformer", "layer")}
        fusion = pub.CrossAttentionFusion(H, 64, 2, 128, "whisper", ["w2vbert", "muq", "sslam"])
        fcfg = dict(fusion_type="crossattention", llm_embedding_dim=H, hidden_dim=64, ffn_dims=128, dropout=0.1,
                    num_attention_heads=2, num_hidden_layers=[1, 1, 1], main_encoder="whisper",
                    conditional_encoders=["w2vbert", "muq", "sslam"], use_skip_connection=False)
    else:
        specs = {"whisper": ("downsampler_conformer", "batch"), "w2vbert": ("identity", None),
                 "muq": ("identity", None), "sslam": ("identity", None)}
        cond = ["w2vbert", "muq", "sslam"]
        fusion = pub.MultiPerceiverFusion(H, [DIMS[e] for e in cond], 4, 64, 2, 2, 3, 1, "whisper", cond)
        fcfg = dict(fusion_type="multiperceiver", llm_embedding_dim=H, num_latents=[4] * 3,
                    num_latent_channels=[64] * 3, num_cross_attention_heads=[2] * 3, num_cross_attention_layers=[1] * 3,
                    first_cross_attention_layer_shared=[True] * 3, first_self_attention_block_shared=[True] * 3,
                    num_self_attention_heads=[2] * 3, num_self_attention_blocks=[3] * 3,
                    num_self_attention_layers_per_block=[2] * 3, main_encoder="whisper", conditional_encoders=cond,
                    conditional_embedding_dim=[DIMS[e] for e in cond])
    adapters, entries = {}, []
    for i, (name, (kind, norm)) in enumerate(specs.items()):
        adapters[name], entry = _adapter(name, kind, norm)
        pub.randomize_(adapters[name], seed=i)
        entries.append(entry)
    if fusion is not None:
        pub.randomize_(fusion, seed=10)
    config = dict(model_type="qwen3_audio", hidden_size=H, audio_sep_d_embed=H, use_explicit_audio_tokens=False,
                  audio_encoder_configs=[dict(encoder_name=n) for n in specs], audio_adapter_configs=entries,
                  audio_fusion_config=fcfg, audio_postprocessing_config=dict(postprocessing_type="identity"))
    return adapters, fusion, config


def _convert(tmp_path, variant, like=None):
    adapters, fusion, config = _published(variant)
    state = pub.checkpoint_state(adapters, fusion, H)
    pub.write_checkpoint(tmp_path / "pub", state, config)
    info = convert_published(str(tmp_path / "pub"), str(tmp_path / "out"), like=like)
    cfg = info["config"]
    assert info["ignored"] == 5 and info["mapped"] == len(AudioSide(cfg).state_dict())
    side = AudioSide(cfg)
    side.load_state_dict(load_file(str(tmp_path / "out" / "audio_side.safetensors")), strict=True)
    torch.testing.assert_close(side.audio_start, state["model.audio_start_emb"][0])
    return adapters, fusion, cfg, side.eval()


def _check_adapter(published, ours, d, lengths, seed):
    """Published adapter on a padded batch vs ours (padded and packed paths): equal valid tokens."""
    g = torch.Generator().manual_seed(seed)
    t, n_layers = int(lengths.max()), published.layer_fusion.layer_weights.numel()
    stacked = torch.randn(n_layers, len(lengths), t, d, generator=g)
    stacked = stacked * (torch.arange(t)[None, :] < lengths[:, None])[None, ..., None]
    with torch.no_grad():
        expect = published(stacked)
        yr, n = ours(Padded(list(stacked), lengths))
        cu = seqlens_to_cu_seqlens(lengths)
        yp, cu_y, _ = ours(Packed([stacked[i][torch.arange(t)[None, :].expand(len(lengths), -1)
                                                   < lengths[:, None]] for i in range(n_layers)], cu))
    for b in range(len(lengths)):
        k = int(n[b])
        torch.testing.assert_close(yr[b, :k], expect[b, :k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(list(unpack(yp, cu_y))[b], expect[b, :k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["R", "CA", "P"])
def test_convert_and_compute_as_published(tmp_path, variant):
    adapters, fusion, cfg, side = _convert(tmp_path, variant)
    assert [e.name for e in cfg.encoders][0] == "whisper" and cfg.fusion == {"R": "sum"}.get(variant, variant)
    if variant == "CA":
        assert next(e for e in cfg.encoders if e.name == "sslam").layers == [4, 8, 12]  # block outputs 4, 8, 12
    # every adapter (conv with BatchNorm / LayerNorm, MLP, identity = the layer mix alone) as published;
    # one example per batch: the published conv adapter's last token depends on the batch (see adapters.py)
    for name, module in adapters.items():
        for length in (9, 6, 2):
            _check_adapter(module, side.adapters[OURS[name]], DIMS[name], torch.tensor([length]), seed=length)
    if fusion is None:
        return
    g = torch.Generator().manual_seed(5)
    order = [{v: k for k, v in OURS.items()}[e.name] for e in cfg.encoders]
    widths = [H if e.adapter != "identity" else e.dim for e in cfg.encoders]
    if variant == "CA":  # published CA masks every memory with the main stream's lengths: give them all those
        lengths = {e: torch.tensor([5, 3]) for e in order}
    else:
        lengths = {"whisper": torch.tensor([5, 3]), "w2vbert": torch.tensor([7, 4]), "muq": torch.tensor([6, 6]),
                   "sslam": torch.tensor([5, 2])}
    streams = {}
    for e, w in zip(order, widths, strict=True):
        t = int(lengths[e].max())
        streams[e] = torch.randn(2, t, w, generator=g) * (torch.arange(t)[None, :] < lengths[e][:, None])[..., None]
    with torch.no_grad():
        expect = fusion(streams, lengths)
        yr, n = side.fusion([Padded(streams[e], lengths[e]) for e in order])
        cus = [seqlens_to_cu_seqlens(lengths[e]) for e in order]
        packed = [streams[e][torch.arange(streams[e].shape[1])[None, :] < lengths[e][:, None]] for e in order]
        yp, cu_y, _ = side.fusion([Packed(x, c) for x, c in zip(packed, cus, strict=True)])
    for b in range(2):
        k = int(n[b])
        torch.testing.assert_close(yr[b, :k], expect[b, :k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(list(unpack(yp, cu_y))[b], expect[b, :k], rtol=1e-4, atol=1e-5)


def test_unknown_and_missing_keys_are_errors(tmp_path):
    adapters, fusion, config = _published("CA")
    state = pub.checkpoint_state(adapters, fusion, H)
    bad = dict(state, **{"model.audio_fusion.fusion_model.extra.weight": torch.zeros(2)})
    pub.write_checkpoint(tmp_path / "a", bad, config)
    with pytest.raises(ValueError, match="fusion_model.extra.weight"):
        convert_published(str(tmp_path / "a"), str(tmp_path / "oa"))
    missing = {k: v for k, v in state.items() if "condition_modules.muq.0.linear2.bias" not in k}
    pub.write_checkpoint(tmp_path / "b", missing, config)
    with pytest.raises(ValueError, match=r"fusion\.layers\.1\.ff\.3\.bias"):
        convert_published(str(tmp_path / "b"), str(tmp_path / "ob"))
    pub.write_checkpoint(tmp_path / "c", state, config)
    convert_published(str(tmp_path / "c"), str(tmp_path / "oc"))
    with pytest.raises(ValueError, match="already holds"):
        convert_published(str(tmp_path / "c"), str(tmp_path / "oc"))


def test_cli_convert_then_generate(tmp_path, capsys):
    """Published two-encoder CA at the tiny sizes -> ``alarm convert --like`` -> ``alarm generate``."""
    import wave

    from alarm.cli import main

    like = ALARMConfig.tiny("CA")
    (tmp_path / "like.json").write_text(like.to_json())
    adapters = {"whisper": _adapter("whisper", "downsampler_conformer", "batch"),
                "w2vbert": _adapter("w2vbert", "downsampler_conformer", "layer")}
    fusion = pub.randomize_(pub.CrossAttentionFusion(H, 64, 2, 128, "whisper", ["w2vbert"]), seed=3)
    fcfg = dict(fusion_type="crossattention", hidden_dim=64, ffn_dims=128, num_attention_heads=2,
                num_hidden_layers=[1], main_encoder="whisper", conditional_encoders=["w2vbert"])
    config = dict(hidden_size=H, audio_adapter_configs=[e for _, e in adapters.values()], audio_fusion_config=fcfg)
    state = pub.checkpoint_state({k: pub.randomize_(m, seed=1) for k, (m, _) in adapters.items()}, fusion, H)
    pub.write_checkpoint(tmp_path / "pub", state, config)
    out = tmp_path / "conv"
    assert main(["convert", str(tmp_path / "pub"), "--out", str(out), "--like", str(tmp_path / "like.json")]) == 0
    assert "converted" in capsys.readouterr().out
    model = ALARMModel.from_pretrained(str(out))
    assert json.loads((out / "alarm_config.json").read_text())["fusion"] == "CA"
    torch.testing.assert_close(model.audio.fusion.out_proj.bias, state[pub.FUSION + "out_proj.bias"])
    with wave.open(str(tmp_path / "a.wav"), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes((synthetic_audio([0.6])[0] * 20000).astype("<i2").tobytes())
    assert main(["generate", "--model", str(out), "--audio", str(tmp_path / "a.wav"), "--prompt", "What?",
                 "--max-thinking-tokens", "2", "--max-new-tokens", "6"]) == 0
    assert main(["convert", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err

"""The encoders compute what the published ALARM computes: stock transformers modules run the way its
code runs them (Whisper on zero-padded 30 s windows, w2v-BERT on whole-clip features split into 1500-frame
chunks), output lengths by its formulas (tiny random weights, CPU)."""
import pytest
import torch

from alarm.model import ALARMConfig
from alarm.model.adapters import Adapter
from alarm.model.encoders import build_encoder
from alarm.model.tiny import synthetic_audio
from published_alarm import whisper_extractor

WINDOW = 480000  # 30 s at 16 kHz


def published_whisper_frames(n: int) -> int:
    """Published: 30 s pieces, attention-mask frames ceil(n_i / 160) summed over pieces, then // 2."""
    pieces = [min(WINDOW, n - s) for s in range(0, n, WINDOW)]
    return sum(-(-p // 160) for p in pieces) // 2


@pytest.fixture(scope="module")
def whisper():
    """Tiny random Whisper with the real 30 s window (1500 positions)."""
    spec = ALARMConfig.tiny("sum", n_encoders=1).encoders[0]
    spec.chunk_seconds, spec.hf_config = 30.0, {**spec.hf_config, "max_source_positions": 1500}
    return build_encoder(spec)


@pytest.mark.parametrize("seconds,frames,tokens", [(1, 50, 25), (29.9, 1495, 747), (30, 1500, 750),
                                                   (30.1, 1505, 752), (59, 2950, 1475), (61, 3050, 1525)])
def test_whisper_window_lengths(whisper, seconds, frames, tokens):
    n = int(round(seconds * 16000))
    assert published_whisper_frames(n) == frames
    _, cu = whisper([torch.zeros(n)])
    assert int(cu[-1]) == frames
    assert int(Adapter.out_lengths(cu[1:] - cu[:-1], "conv")[0]) == tokens


def test_whisper_window_features_equal_stock_encoder(whisper):
    """Each piece is the stock encoder's output on the feature extractor's 3000 padded frames, trimmed."""
    clips = [torch.from_numpy(c) for c in synthetic_audio([1.3, 30.4], seed=7)]
    layers, cu = whisper(clips)
    enc, spec = whisper.encoder, whisper.spec
    for i, clip in enumerate(clips):
        pieces = list(torch.split(clip, WINDOW))
        mel = whisper_extractor(whisper)([p.numpy() for p in pieces], sampling_rate=16000, return_tensors="pt")
        states = enc(mel["input_features"], output_hidden_states=True).hidden_states  # stock HF forward
        keep = [-(-len(p) // 160) // 2 for p in pieces]
        for j, idx in enumerate(spec.layers):
            expect = torch.cat([states[idx][k, :n] for k, n in enumerate(keep)])
            torch.testing.assert_close(layers[j][cu[i]:cu[i + 1]], expect, rtol=1e-4, atol=1e-5)


def test_w2v_bert_front_end_as_published():
    """Published: 160 zero samples each side, whole-clip features, encoder on 1500-frame chunks of the padded
    batch with the attention mask; hidden states trimmed to the mask's length."""
    from transformers import SeamlessM4TFeatureExtractor

    spec = ALARMConfig.tiny("CA").encoders[1]
    enc = build_encoder(spec)
    clips = [torch.from_numpy(c) for c in synthetic_audio([31.0, 2.01], seed=8)]
    layers, cu = enc(clips)
    extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, padding_value=1, stride=2,
                                            sampling_rate=16000)
    feats, masks = [], []
    for clip in clips:
        out = extractor([torch.nn.functional.pad(clip, (160, 160)).numpy()], sampling_rate=16000,
                        return_attention_mask=True, return_tensors="pt")
        feats.append(out["input_features"][0])
        masks.append(out["attention_mask"][0])
    feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    masks = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True)
    lengths = masks.sum(1)
    assert (cu[1:] - cu[:-1]).tolist() == lengths.tolist() == [(1 + (len(c) - 80) // 160) // 2 for c in clips]
    chunks = [enc.model(input_features=f, attention_mask=m, output_hidden_states=True).hidden_states
              for f, m in zip(feats.split(1500, dim=1), masks.split(1500, dim=1), strict=True)]
    for j, idx in enumerate(spec.layers):
        full = torch.cat([c[idx] for c in chunks], dim=1)
        for i in range(len(clips)):
            torch.testing.assert_close(layers[j][cu[i]:cu[i + 1]], full[i, : int(lengths[i])], rtol=1e-4, atol=1e-5)


def test_hidden_states_final_norm_and_cls_drop():
    """MuQ/SSLAM recipes: index n_blocks goes through ``final_norm``, ``drop_tokens`` removes the CLS token;
    the result equals a stock-style ``hidden_states`` list (embeddings, block outputs, last one normalized)."""
    from alarm.model import EncoderSpec
    from alarm.model.encoders import HiddenStatesEncoder

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh())
                                              for _ in range(3))
            self.norm = torch.nn.LayerNorm(8)

        def forward(self, x):
            states = [x]
            for b in self.blocks:
                x = b(x)
                states.append(x)
            states[-1] = self.norm(states[-1])
            return states

    torch.manual_seed(0)
    toy = Toy()
    x = torch.randn(2, 6, 8)
    expect = toy(x)
    spec = EncoderSpec(name="t", kind="toy", layers=[1, 3], dim=8)
    enc = HiddenStatesEncoder(spec, toy, "blocks", final_norm="norm", drop_tokens=1)
    got = enc.hidden({"x": x}, torch.tensor([5, 5]))
    for g, i in zip(got, spec.layers, strict=True):
        torch.testing.assert_close(g, expect[i][:, 1:])

"""The MuQ wrapper computes what the published ALARM computes with MuQ (re-expressed in
tests/alarm/published_muq.py), on a random module of MuQ's structure (``alarm.model.tiny.TinyMuQ``; the ``muq``
package itself is an optional extra that CI does not install): pieces shorter than, equal to and longer than
the window, the mask every 960 samples, ``n // 960`` frames, the selected layers, the final LayerNorm."""
import sys

import pytest
import torch
from published_muq import published_muq_tokens

from alarm.model import EncoderSpec
from alarm.model.encoders import build_encoder
from alarm.extras import MissingExtraError
from alarm.model.muq import load_muq
from alarm.model.tiny import synthetic_audio

RATE = 24000
WINDOW_SECONDS = 3.0  # the published window is 30 s; 3 s keeps the CPU test fast (75 frames per piece)


def _spec(**kw):
    return EncoderSpec(**{**dict(name="muq", kind="muq", layers=[0, 1, 2], dim=32, adapter="mlp", sample_rate=RATE,
                                 chunk_seconds=WINDOW_SECONDS, dtype="float32",
                                 hf_config=dict(tiny_stand_in=True, dim=32, layers=2, heads=2)), **kw})


@pytest.fixture(scope="module")
def muq():
    torch.manual_seed(0)
    enc = build_encoder(_spec())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random norms, statistics and biases too, so nothing passes by symmetry
        for name, t in enc.model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point() and ("norm" in name or name.endswith("bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.3 + (1.0 if name.endswith("norm.weight") else 0.0))
    return enc.double()


@pytest.mark.parametrize("seconds", [[1.3], [3.0], [7.7, 0.5], [3.0 + 961 / RATE, 2.999]])
def test_muq_equals_published(muq, seconds):
    """float64: every selected layer (0 = the first block's input, 2 = after the final LayerNorm) and length."""
    clips = [torch.from_numpy(c).double() for c in synthetic_audio(seconds, rate=RATE, seed=5)]
    layers, cu = muq(clips)
    window = int(WINDOW_SECONDS * RATE)
    want = published_muq_tokens(muq.model, clips, window, layers=[0, 1, 2])
    assert (cu[1:] - cu[:-1]).tolist() == [len(c) // 960 for c in clips]
    for b in range(len(clips)):
        for j in range(3):
            torch.testing.assert_close(layers[j][cu[b]:cu[b + 1]], want[b][j], rtol=1e-9, atol=1e-9)


def test_final_norm_only_on_the_last_block(muq):
    """Layer 2 of 2 is the normalised output, layer 1 the raw block output (their difference is the norm)."""
    clip = torch.from_numpy(synthetic_audio([2.0], rate=RATE, seed=6)[0]).double()
    (l0, l1, l2), _ = muq([clip])
    conformer = muq.model.model.conformer
    assert not torch.allclose(l1, conformer.layer_norm(l1))
    assert l2.shape == l1.shape == (50, 32)


def test_missing_extra_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "muq", None)  # as if not installed
    spec = _spec(hf_config=None, path="OpenMuQ/MuQ-large-msd-iter")
    with pytest.raises(MissingExtraError) as err:
        load_muq(spec)
    message = str(err.value)
    assert message.startswith("the MuQ encoder needs the muq package") and "pip install 'alarm-toolkit[muq]'" in message
    assert "\n" not in message and isinstance(err.value, ValueError)


def test_bad_window_is_refused():
    with pytest.raises(ValueError, match="not a whole number of 25 Hz frames"):
        build_encoder(_spec(chunk_seconds=1.01))

"""The frozen-feature cache: exactly what recomputation gives, at both levels; stale caches refused;
an interrupted build resumes; a batch from the cache trains exactly like one from audio."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from alarm.model import ALARMConfig, ALARMModel
from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX
from alarm.train.cache import FeatureCache, build_cache, cache_key
from alarm.train.data import ClipDataset, collate, load_examples

pytestmark = pytest.mark.usefixtures("one_thread")
RATE = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache-corpus")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(5):
        n = int((0.4 + 0.15 * i) * RATE)
        sf.write(folder / f"c{i}.wav", (0.2 * rng.standard_normal(n)).astype(np.float32), RATE)
        rows.append({"id": f"c{i}", "audio": f"c{i}.wav", "duration": n / RATE, "dataset": "d", "description": "",
                     "prompt": "What is it?", "target": "Noise."})
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def stage_b():
    return ALARMModel(ALARMConfig.tiny("CA", stage="B")).eval()


def _examples(model, corpus):
    return load_examples(str(corpus / "m.jsonl"), model.tokenizer, 10.0)[0]


def test_encoder_level_equals_recomputation(stage_b, corpus, tmp_path):
    examples = _examples(stage_b, corpus)
    index = build_cache(stage_b, examples, str(tmp_path / "c"), level="encoder", shard_size=2, batch_size=1,
                        progress=False)
    assert index["clips"] == 5 and len(index["shards"]) == 3
    batched = build_cache(stage_b, examples, str(tmp_path / "b"), level="encoder", batch_size=3, progress=False)
    assert batched["clips"] == 5
    key = cache_key(stage_b, "encoder", "float32")
    cache, cache_b = FeatureCache.open(str(tmp_path / "c"), key), FeatureCache.open(str(tmp_path / "b"), key)
    for e in examples:
        wave, _ = sf.read(e.audio, dtype="float32")
        want = stage_b.encode([torch.from_numpy(wave)], [RATE])
        for name, (layers, _) in want.items():
            assert torch.equal(cache.get(e.id).tensors[name], torch.stack(layers)), (e.id, name)  # bit for bit
            # clips encoded 3 at a time: the same up to float summation order
            torch.testing.assert_close(cache_b.get(e.id).tensors[name], torch.stack(layers), rtol=1e-5, atol=1e-5)


def test_adapter_level_and_training_batches_match(stage_b, corpus, tmp_path):
    examples = _examples(stage_b, corpus)
    build_cache(stage_b, examples, str(tmp_path / "a"), level="adapter", progress=False)
    cache = FeatureCache.open(str(tmp_path / "a"), cache_key(stage_b, "adapter", "float32"))
    tok = stage_b.tokenizer
    prefix = tok.encode(USER_PREFIX, add_special_tokens=False)
    header = len(tok.encode(ASSISTANT_SUFFIX, add_special_tokens=False))
    from_audio = collate(examples, prefix, header, RATE)([ClipDataset(examples, RATE, 10.0)[i] for i in range(5)])
    from_cache = collate(examples, prefix, header, RATE)(
        [ClipDataset(examples, RATE, 10.0, cache)[i] for i in range(5)])
    assert from_cache.batch.streams is not None and from_audio.batch.waves is not None
    stage_b.train()
    a = stage_b.forward_batch(from_audio.batch, reduction="sum")
    c = stage_b.forward_batch(from_cache.batch, reduction="sum")
    torch.testing.assert_close(c.loss, a.loss, rtol=1e-6, atol=1e-6)
    assert a.n_targets == c.n_targets > 0
    stage_b.eval()


def test_stale_caches_are_refused(stage_b, corpus, tmp_path):
    examples = _examples(stage_b, corpus)
    build_cache(stage_b, examples, str(tmp_path / "s"), level="adapter", progress=False)
    other_layers = ALARMModel(ALARMConfig.tiny("CA", stage="B", encoders=[
        {**stage_b.config.encoders[0].__dict__, "layers": [2]}, stage_b.config.encoders[1].__dict__]))
    with pytest.raises(ValueError, match="stale feature cache.*encoders"):
        FeatureCache.open(str(tmp_path / "s"), cache_key(other_layers, "adapter", "float32"))
    retrained = ALARMModel(ALARMConfig.tiny("CA", stage="B"))
    with torch.no_grad():
        next(iter(retrained.audio.adapters.parameters())).add_(1.0)
    with pytest.raises(ValueError, match="adapters_sha256"):
        FeatureCache.open(str(tmp_path / "s"), cache_key(retrained, "adapter", "float32"))
    with pytest.raises(ValueError, match="level"):
        FeatureCache.open(str(tmp_path / "s"), cache_key(stage_b, "encoder", "float32"))
    with pytest.raises(ValueError, match="needs frozen adapters"):
        cache_key(ALARMModel(ALARMConfig.tiny("CA", stage="A")), "adapter", "float32")


def test_interrupted_build_resumes(stage_b, corpus, tmp_path):
    examples = _examples(stage_b, corpus)
    folder = tmp_path / "r"
    first = build_cache(stage_b, examples, str(folder), level="encoder", shard_size=2, progress=False)
    (folder / "index.json").unlink()  # a build killed before its last write
    (folder / "shard-00001.safetensors").unlink()
    (folder / ".tmp-half-shard-00002.safetensors").write_bytes(b"partial")
    stamp = (folder / "shard-00000.safetensors").stat().st_mtime_ns
    again = build_cache(stage_b, examples, str(folder), level="encoder", shard_size=2, progress=False)
    assert again == first
    assert (folder / "shard-00000.safetensors").stat().st_mtime_ns == stamp  # finished shards are kept
    assert not list(folder.glob(".tmp-*"))


def test_a_bf16_adapter_cache_trains_in_fp32(stage_b, corpus, tmp_path):
    """The bf16 adapter cache the docs recommend also feeds an fp32 step (CPU, or run.precision=fp32): the cached
    streams enter the fusion as the fp32 adapters' outputs would, so the loss is the fp32 cache's up to bf16
    rounding of the stored features."""
    examples = _examples(stage_b, corpus)
    tok = stage_b.tokenizer
    prefix = tok.encode(USER_PREFIX, add_special_tokens=False)
    header = len(tok.encode(ASSISTANT_SUFFIX, add_special_tokens=False))
    losses = {}
    for dtype in ("float32", "bfloat16"):
        build_cache(stage_b, examples, str(tmp_path / dtype), level="adapter", dtype=dtype, progress=False)
        cache = FeatureCache.open(str(tmp_path / dtype), cache_key(stage_b, "adapter", dtype))
        pack = collate(examples, prefix, header, RATE)([ClipDataset(examples, RATE, 10.0, cache)[i] for i in range(5)])
        assert next(iter(pack.batch.streams.values()))[0].dtype == getattr(torch, dtype)
        losses[dtype] = stage_b.forward_batch(pack.batch, reduction="sum").loss
    torch.testing.assert_close(losses["bfloat16"], losses["float32"], rtol=1e-2, atol=0)

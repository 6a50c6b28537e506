"""The frozen-feature cache: exactly what recomputation gives, at both levels; stale caches refused;
an interrupted build resumes; a batch from the cache trains exactly like one from audio; damaged shards are
named when read and repaired by a rebuild; non-finite features are never stored."""
import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from alarm.model import ALARMConfig, ALARMModel
from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX
from alarm.fileio import CorruptFileError
from alarm.train.cache import FeatureCache, build_cache, cache_key, verify_cache
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
    rebuilt = "shard-00001.safetensors"  # same tensors; safetensors orders its metadata freely, so not the same bytes
    assert {k: v for k, v in again.items() if k != "shard_sha256"} == {k: v for k, v in first.items()
                                                                      if k != "shard_sha256"}
    assert {k: v for k, v in again["shard_sha256"].items() if k != rebuilt} == \
        {k: v for k, v in first["shard_sha256"].items() if k != rebuilt}
    assert verify_cache(str(folder))[1] == []
    assert (folder / "shard-00000.safetensors").stat().st_mtime_ns == stamp  # finished shards are kept
    assert not list(folder.glob(".tmp-*"))


def _flip(path, offset_from_end=9):
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01  # inside the last tensor's data: the file still parses
    path.write_bytes(bytes(data))


def test_damaged_shard_is_named_when_read_and_rebuilt(stage_b, corpus, tmp_path):
    examples = _examples(stage_b, corpus)
    folder = tmp_path / "d"
    index = build_cache(stage_b, examples, str(folder), level="encoder", shard_size=2, progress=False)
    key = cache_key(stage_b, "encoder", "float32")
    want = {e.id: {n: t.clone() for n, t in FeatureCache.open(str(folder), key).get(e.id).tensors.items()}
            for e in examples}
    _flip(folder / "shard-00001.safetensors")
    cache = FeatureCache.open(str(folder), key)
    in_shard = {e.id for e in examples if index["examples"][e.id] in index["shards"]["shard-00001.safetensors"]}
    assert len(in_shard) == 2
    failed = set()
    for e in examples:
        if e.id in in_shard:
            try:
                cache.get(e.id)
            except CorruptFileError as exc:
                assert "shard-00001.safetensors: corrupt" in str(exc) and e.id in str(exc)
                failed.add(e.id)
        else:
            assert all(torch.equal(t, want[e.id][n]) for n, t in cache.get(e.id).tensors.items())
    assert len(failed) == 1  # the flipped byte lies in one clip's features; its neighbour still verifies
    _, damaged = verify_cache(str(folder))
    assert len(damaged) == 1 and "shard-00001.safetensors: corrupt or incomplete" in damaged[0]
    build_cache(stage_b, examples, str(folder), level="encoder", shard_size=2, progress=False)  # repairs it
    assert verify_cache(str(folder))[1] == []
    repaired = FeatureCache.open(str(folder), key)
    for e in examples:
        assert all(torch.equal(t, want[e.id][n]) for n, t in repaired.get(e.id).tensors.items())


def test_truncated_or_missing_shard_is_named(stage_b, corpus, tmp_path):
    examples = _examples(stage_b, corpus)
    folder = tmp_path / "t"
    build_cache(stage_b, examples, str(folder), level="encoder", shard_size=5, progress=False)
    key = cache_key(stage_b, "encoder", "float32")
    shard = folder / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="shard-00000.safetensors: unreadable"):
        FeatureCache.open(str(folder), key).get(examples[0].id)
    shard.unlink()
    with pytest.raises(CorruptFileError, match="shard-00000.safetensors: missing"):
        FeatureCache.open(str(folder), key)


def test_nonfinite_features_are_refused(stage_b, corpus, tmp_path, monkeypatch):
    examples = _examples(stage_b, corpus)
    real = stage_b.encode

    def overflowing(waves, rates):  # the first clip of each call comes out with an infinity (e.g. a float16 overflow)
        feats = real(waves, rates)
        name = next(iter(feats))
        layers, cu = feats[name]
        layers[0][int(cu[0])] = float("inf")
        return feats

    monkeypatch.setattr(stage_b, "encode", overflowing)
    index = build_cache(stage_b, examples, str(tmp_path / "n"), level="encoder", batch_size=5, progress=False)
    assert index["clips"] == 4 and len(index["skipped"]) == 1
    assert index["skipped"][0]["reason"].startswith("non-finite encoder features (whisper")
    assert index["skipped"][0]["audio"] == examples[0].audio
    cache = FeatureCache.open(str(tmp_path / "n"), cache_key(stage_b, "encoder", "float32"))
    assert cache.get(examples[0].id) is None
    assert all(bool(torch.isfinite(t).all()) for e in examples[1:] for t in cache.get(e.id).tensors.values())


def test_cache_built_before_checksums_is_read_with_a_warning(stage_b, corpus, tmp_path):
    examples = _examples(stage_b, corpus)
    folder = tmp_path / "o"
    build_cache(stage_b, examples, str(folder), level="encoder", progress=False)
    index = json.loads((folder / "index.json").read_text())
    for field in ("clip_sha256", "shard_sha256"):  # what an older version wrote
        del index[field]
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="built before checksums existed"):
        cache = FeatureCache.open(str(folder), cache_key(stage_b, "encoder", "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(examples[0].id) is not None
    with pytest.raises(ValueError, match="nothing to check against"):
        verify_cache(str(folder))


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

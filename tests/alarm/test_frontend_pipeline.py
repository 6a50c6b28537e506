"""The encoders' ``prepare`` (front end, no weights) / ``run`` (network) split and the data pipeline that uses it:

- ``run(prepare(waves))`` is ``forward(waves)``; prepared inputs and weight-free front ends pickle (DataLoader
  workers) without carrying weights;
- a batch collated with the model's front ends (``ModelBatch.prepared``) trains to the same loss as one carrying the
  waveforms, without the model ever running a front end itself, also through a DataLoader worker process;
- on a GPU (the decision forced on CPU: the devices are only compared) the workers compute the front ends that are
  not device kernels (MuQ's: resampling to 24 kHz, pieces, padding) and the batch keeps the waveforms for the
  others; the trainer passes exactly those to its collate function and trains to the same losses;
- the downstream effect of the kernels' front end against transformers' extractors: the tiny random encoders'
  adapter outputs (Whisper: relative difference below 1e-4; w2v-BERT: identical features, identical outputs).
"""
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from alarm.audio import resample_batch
from alarm.model import ALARMConfig
from alarm.model.alarm_model import ALARMModel
from alarm.model.batch import ModelBatch
from alarm.model.encoders import PreparedAudio, build_encoder
from alarm.model.splice import tokenize_batch
from alarm.model.tiny import synthetic_audio
from published_alarm import whisper_extractor
from alarm.train.data import Collator, Example
from alarm.model.muq import MuQFrontEnd

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ALARMModel(ALARMConfig.tiny("sum"))  # stage A: adapters train


def _clips(seconds, seed):
    return [torch.from_numpy(c) for c in synthetic_audio(seconds, seed=seed)]


@pytest.mark.parametrize("idx,clip_length", [(0, False), (0, True), (1, False)])
def test_run_of_prepare_is_forward_and_pickles_without_weights(idx, clip_length):
    spec = ALARMConfig.tiny("CA").encoders[idx]
    spec.clip_length = clip_length
    enc = build_encoder(spec)
    waves = _clips([0.4, 3.7, 1.01], seed=idx)
    prepared = enc.prepare(waves)
    assert isinstance(prepared, PreparedAudio) and prepared.samples == [w.numel() for w in waves]
    again = pickle.loads(pickle.dumps(prepared))
    layers, cu = enc.run(again)
    expect, expect_cu = enc(waves)
    assert torch.equal(cu, expect_cu)
    for a, b in zip(layers, expect, strict=True):
        assert torch.equal(a, b)
    front_end = enc.front_end()
    blob = pickle.dumps(front_end)
    weights = sum(p.numel() * p.element_size() for p in enc.parameters())
    assert len(blob) < 2000 < weights, (len(blob), weights)  # the front end travels without the weights
    worker_side = pickle.loads(blob)(waves)
    for k, v in prepared.inputs.items():
        assert torch.equal(worker_side.inputs[k], v)
    assert torch.equal(worker_side.lengths, prepared.lengths) and worker_side.per_clip == prepared.per_clip


def _text(model, n):
    return tokenize_batch(model.tokenizer, ["Describe the audio."] * n, ["a chord", "noise and tones", "x"][:n])


def test_prepared_batch_trains_like_waves_without_model_front_ends(model, monkeypatch):
    waves = _clips([1.3, 4.2, 0.9], seed=3)
    rates = [16000] * 3
    text = _text(model, 3)
    front_ends = pickle.loads(pickle.dumps(model.audio_front_ends()))
    prepared = ModelBatch(text, prepared=front_ends(waves, rates))
    by_waves = model.forward_batch(ModelBatch(text, waves=waves, rates=rates), reduction="sum")

    def refuse(*args, **kwargs):
        raise AssertionError("the model computed a front end for a prepared batch")

    monkeypatch.setattr(ALARMModel, "prepare_audio", refuse)
    monkeypatch.setattr(ALARMModel, "encode", refuse)
    out = model.forward_batch(prepared.to("cpu"), reduction="sum")
    assert out.n_targets == by_waves.n_targets and torch.equal(out.loss, by_waves.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters().values())
    model.zero_grad(set_to_none=True)


def test_collator_in_a_worker_process_prepares_the_batch(model):
    waves = _clips([2.2, 0.6], seed=5)
    examples = [Example(f"c{i}", "d", f"c{i}.wav", w.numel() / 16000, "Describe the audio.", (5, 6, 7), (8, 9))
                for i, w in enumerate(waves)]
    items = [(i, w, None, None) for i, w in enumerate(waves)]
    collator = Collator(examples, [1, 2], 3, 16000, model.audio_front_ends())
    loader = torch.utils.data.DataLoader([items], batch_size=None, collate_fn=collator, num_workers=1)
    (pack,) = list(loader)
    batch = pack.batch
    assert batch.waves is None and set(batch.prepared) == {"whisper", "w2v-bert"}
    local = Collator(examples, [1, 2], 3, 16000)(items).batch  # waveforms: the model's own front ends
    assert local.prepared is None and local.waves is not None
    for name, prepared in batch.prepared.items():
        mine = model.encoders[name].prepare(waves)
        for k, v in prepared.inputs.items():
            assert torch.equal(v, mine.inputs[k]), (name, k)
    assert torch.equal(model.forward_batch(batch).loss, model.forward_batch(local).loss)


CUDA = torch.device("cuda")  # never allocated on: worker_front_ends only reads the device's type


@pytest.fixture(scope="module")
def model4():
    torch.manual_seed(0)
    return ALARMModel(ALARMConfig.tiny("CA", n_encoders=4, stage="A"))


def test_worker_front_ends_on_a_gpu_are_those_not_made_of_kernels(model, model4):
    assert [n for n, e in model4.encoders.items() if not e.KERNEL_FRONT_END] == ["muq"]
    on_gpu = model4.worker_front_ends(CUDA)
    assert list(on_gpu.front_ends) == ["muq"] and on_gpu.partial
    on_cpu = model4.worker_front_ends(torch.device("cpu"))
    assert list(on_cpu.front_ends) == ["whisper", "w2v-bert", "muq", "sslam"] and not on_cpu.partial
    assert model.worker_front_ends(CUDA) is None  # Whisper + w2v-BERT: every front end is a device kernel
    assert not model.worker_front_ends("cpu").partial


def test_gpu_collation_prepares_muq_in_the_worker_and_keeps_the_waves(model4, monkeypatch):
    waves = _clips([2.2, 0.6, 3.9], seed=8)
    examples = [Example(f"c{i}", "d", f"c{i}.wav", w.numel() / 16000, "Describe the audio.", (5, 6, 7), (8, 9))
                for i, w in enumerate(waves)]
    items = [(i, w, None, None) for i, w in enumerate(waves)]
    collator = Collator(examples, [1, 2], 3, 16000, model4.worker_front_ends(CUDA))
    loader = torch.utils.data.DataLoader([items], batch_size=None, collate_fn=collator, num_workers=1)
    (pack,) = list(loader)
    batch = pack.batch
    assert set(batch.prepared) == {"muq"} and batch.waves is not None and batch.rates == [16000] * 3
    muq = batch.prepared["muq"]
    assert muq.samples == [round(w.numel() * 1.5) for w in waves]  # resampled to 24 kHz in the worker
    mine = model4.encoders["muq"].prepare(resample_batch(waves, [16000] * 3, 24000))
    assert torch.equal(muq.inputs["wav"], mine.inputs["wav"]) and torch.equal(muq.lengths, mine.lengths)
    by_waves = model4.forward_batch(ModelBatch(batch.text, waves=waves, rates=[16000] * 3), reduction="sum")
    ran = []
    real_prepare = ALARMModel.prepare_audio

    def spy(self, w, r, names=None):
        ran.append(list(names))
        return real_prepare(self, w, r, names)

    def refuse(*args, **kwargs):
        raise AssertionError("MuQ's front end ran in the training process")

    monkeypatch.setattr(MuQFrontEnd, "chunk_inputs", refuse)
    monkeypatch.setattr(ALARMModel, "prepare_audio", spy)
    out = model4.forward_batch(batch.to("cpu"), reduction="sum")
    assert ran == [["whisper", "w2v-bert", "sslam"]]  # the kernel front ends, in the step
    assert out.n_targets == by_waves.n_targets and torch.equal(out.loss, by_waves.loss)
    with pytest.raises(ValueError, match=r"no prepared inputs for encoders \['whisper', 'w2v-bert', 'sslam'\]"):
        model4.encode_prepared(batch.prepared)


def test_trainer_gives_its_workers_the_non_kernel_front_ends_on_a_gpu(tmp_path, monkeypatch):
    """A 4-encoder stage-A run with one DataLoader worker, the trainer's decision made as on a GPU: its collate
    function gets MuQ's front end alone, and the run's losses equal those of the CPU decision (all in workers)."""
    from train_runs import losses, write_corpus, write_recipe

    import alarm.train.loop as loop
    from alarm.train.config import load_config

    manifest = write_corpus(tmp_path, n=6)
    model_section = {"fusion": "CA", "n_encoders": 4, "stage": "A"}
    runs = {}
    for decision in ("cpu", "cuda"):
        given = []
        real_collate, real_workers = loop.collate, ALARMModel.worker_front_ends

        def record(*args, _given=given, _real=real_collate):
            _given.append(args[-1])
            return _real(*args)

        monkeypatch.setattr(loop, "collate", record)
        if decision == "cuda":
            monkeypatch.setattr(ALARMModel, "worker_front_ends", lambda self, device, _r=real_workers: _r(self, CUDA))
        out = tmp_path / decision
        recipe = write_recipe(tmp_path, manifest, out, model=model_section, data={"num_workers": 1},
                              run={"epochs": 1, "save_every": 100})
        loop.train(load_config(str(recipe)))
        monkeypatch.undo()
        (front_ends,) = given
        runs[decision] = (list(front_ends.front_ends), front_ends.partial, losses(out))
    assert runs["cpu"][:2] == (["whisper", "w2v-bert", "muq", "sslam"], False)
    assert runs["cuda"][:2] == (["muq"], True)
    assert len(runs["cuda"][2]) == 3 and runs["cuda"][2] == runs["cpu"][2]


def _whisper_extractor_inputs(enc, waves):
    """The published front end through transformers' WhisperFeatureExtractor (the path the kernels replace)."""
    window = enc.front.window_samples
    pieces = [p for w in waves for p in torch.split(w, window)]
    extract = whisper_extractor(enc)
    mel = extract([p.numpy() for p in pieces], sampling_rate=16000, return_tensors="pt")["input_features"]
    lengths = torch.tensor([-(-len(p) // 160) // 2 for p in pieces])
    return PreparedAudio({"mel": mel}, lengths, [len(torch.split(w, window)) for w in waves],
                         [w.numel() for w in waves])


def _w2v_extractor_inputs(enc, waves):
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, stride=2, sampling_rate=16000)
    clips = []
    for w in waves:
        out = extractor(nn.functional.pad(w, (160, 160)).numpy(), sampling_rate=16000, return_tensors="pt",
                        return_attention_mask=True)
        clips.append(list(torch.split(out["input_features"][0, : int(out["attention_mask"].sum())], 1500)))
    pieces = [p for parts in clips for p in parts]
    lengths = torch.tensor([len(p) for p in pieces])
    batch = nn.utils.rnn.pad_sequence(pieces, batch_first=True)
    mask = (torch.arange(batch.shape[1])[None, :] < lengths[:, None]).long()
    return PreparedAudio({"input_features": batch, "attention_mask": mask}, lengths, [len(p) for p in clips],
                         [w.numel() for w in waves])


def test_downstream_effect_on_encoder_and_adapter_outputs(model):
    """The adapters' outputs from the kernels' front end vs from transformers' extractors (tiny random weights)."""
    waves = _clips([2.9, 7.3, 0.5], seed=11)
    with torch.no_grad():
        mine = model.adapter_streams(model.encode(waves, [16000] * 3))
        theirs = model.adapter_streams(model.encode_prepared({
            "whisper": _whisper_extractor_inputs(model.encoders["whisper"], waves),
            "w2v-bert": _w2v_extractor_inputs(model.encoders["w2v-bert"], waves)}))
    rel = {}
    for name in mine:
        (a, cu_a), (b, cu_b) = mine[name], theirs[name]
        assert torch.equal(cu_a, cu_b)
        rel[name] = float((a - b).abs().max() / b.abs().max())
    print(f"\nadapter output max|diff| / max|output|: {rel}")
    assert rel["w2v-bert"] == 0.0  # the w2v-BERT features are the extractor's, bit for bit
    assert rel["whisper"] < 1e-4
    assert np.isfinite(list(rel.values())).all()

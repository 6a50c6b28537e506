"""The paper's models build from the shipped recipes with no user code: the four stage-A recipes (AL-Whisper-R,
AL-W2VBERT2-R, AL-MuQ-R, AL-SSLAM-R) and the stage-B ALARM-CA and ALARM-P, each run for one training step with
tiny random stand-ins of all four encoders (``model.preset=tiny``), stage B starting from the stage-A adapters."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from alarm.model import ALARMConfig
from alarm.model.encoders import ENCODERS
from alarm.model.muq import MuQAudioEncoder
from alarm.model.sslam import SSLAMAudioEncoder
from alarm.train.config import build_model_config, load_config
from alarm.train.loop import train

RECIPES = Path(__file__).resolve().parents[2] / "alarm" / "train" / "recipes"
STAGE_A = {"whisper": "al_whisper_r", "w2v-bert": "al_w2vbert2_r", "muq": "al_muq_r", "sslam": "al_sslam_r"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("presets")
    rng = np.random.default_rng(0)
    rows = []
    # one clip of a dataset in each stage-A recipe's published subset (AL-Whisper-R trains on all five)
    for i, dataset in enumerate(["librispeech", "vctk", "nsynth", "esc50", "instructs2s"]):
        x = (0.3 * np.sin(2 * np.pi * (300 + 100 * i) * np.arange(8000) / 16000)
             + 0.01 * rng.standard_normal(8000)).astype(np.float32)
        sf.write(folder / f"c{i}.wav", x, 16000)
        rows.append({"id": f"c{i}", "audio": f"c{i}.wav", "duration": 0.5, "dataset": dataset, "description": "",
                     "prompt": "Pitch?", "target": "A tone."})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _run(recipe: str, folder: Path, out: Path, *overrides: str) -> dict:
    cfg = load_config(str(RECIPES / f"{recipe}.yaml"), [
        f"data.train_manifest={folder / 'train.jsonl'}", "data.eval_fraction=0", "data.num_workers=0",
        "model.preset=tiny", f"run.out_dir={out}", "run.max_steps=1", "run.device=cpu", "run.progress=lines",
        "run.plot=false", "run.eval_every=0", "run.sample_every=0", "batch.max_tokens=4096", "batch.accumulation=1",
        *overrides])
    return train(cfg)


def test_every_kind_is_built_in():
    assert ENCODERS["muq"] is MuQAudioEncoder and ENCODERS["sslam"] is SSLAMAudioEncoder
    cfg = ALARMConfig.tiny(n_encoders=4)
    assert [e.kind for e in cfg.encoders] == ["whisper", "w2v-bert", "muq", "sslam"]
    for recipe in ("alarm_ca", "alarm_p", "al_whisper_instruct_r", *STAGE_A.values()):
        model = build_model_config(load_config(str(RECIPES / f"{recipe}.yaml"), ["data.train_manifest=x"]).model)
        assert all(e.kind in ENCODERS for e in model.encoders), recipe


def test_encoder_paths_override_the_hub_ids():
    cfg = load_config(str(RECIPES / "alarm_p.yaml"), ["data.train_manifest=x", "model.encoder_paths.sslam=ck/sslam",
                                                       "model.encoder_paths.muq=ck/muq"])
    paths = {e.name: e.path for e in build_model_config(cfg.model).encoders}
    assert paths == {"whisper": "openai/whisper-large-v3", "w2v-bert": "facebook/w2v-bert-2.0", "muq": "ck/muq",
                     "sslam": "ck/sslam"}
    cfg = load_config(str(RECIPES / "al_sslam_r.yaml"), ["data.train_manifest=x", "model.encoder_paths.muq=ck/muq"])
    with pytest.raises(ValueError, match="no encoder 'muq' in this model"):
        build_model_config(cfg.model)


def test_one_step_of_each_paper_recipe(corpus, tmp_path):
    finals = {}
    for name, recipe in STAGE_A.items():
        summary = _run(recipe, corpus, tmp_path / recipe)
        assert summary["steps"] == 1, recipe
        finals[name] = tmp_path / recipe / "final"
        assert (finals[name] / "audio_side.safetensors").is_file()
    assert _run("al_whisper_instruct_r", corpus, tmp_path / "instruct")["steps"] == 1
    stage_a = {name: load_file(str(f / "audio_side.safetensors")) for name, f in finals.items()}
    instruct = load_file(str(tmp_path / "instruct" / "final" / "audio_side.safetensors"))

    for recipe, loaded in (("alarm_ca", list(STAGE_A)), ("alarm_p", ["whisper"])):
        if recipe == "alarm_p":  # P starts from AL-Whisper-Instruct-R's adapter, as published
            finals, stage_a = {"whisper": tmp_path / "instruct" / "final"}, {"whisper": instruct}
        inits = [f"init_adapters.{name}={finals[name]}" for name in loaded]
        summary = _run(recipe, corpus, tmp_path / recipe, "model.n_encoders=4", *inits)
        assert summary["steps"] == 1, recipe
        saved = load_file(str(tmp_path / recipe / "final" / "audio_side.safetensors"))
        for name in loaded:  # the stage-A adapters, frozen through the step
            prefix = f"adapters.{name}."
            theirs = {k: v for k, v in stage_a[name].items() if k.startswith(prefix)}
            assert theirs and all(torch.equal(saved[k], v) for k, v in theirs.items()), (recipe, name)
    p = build_model_config(load_config(str(RECIPES / "alarm_p.yaml"),
                                       ["data.train_manifest=x", "model.preset=tiny", "model.n_encoders=4"]).model)
    assert [e.adapter for e in p.encoders] == ["conv", "identity", "identity", "identity"]


def test_tiny_stand_ins_are_the_built_in_wrappers():
    from alarm.model.alarm_model import ALARMModel

    model = ALARMModel(ALARMConfig.tiny("concat", n_encoders=4))
    assert isinstance(model.encoders["muq"], MuQAudioEncoder)
    assert isinstance(model.encoders["sslam"], SSLAMAudioEncoder)
    clips = [torch.randn(12000), torch.randn(30000)]
    out, cu = model.encoders["sslam"](clips)
    assert (cu[1:] - cu[:-1]).tolist() == [(1 + (n - 80) // 160) // 2 for n in (12000, 30000)]


def test_muq_and_sslam_front_ends_are_picklable_and_split_cleanly():
    """``front_end()`` is a small picklable object (no weights) for DataLoader workers; ``run`` of its output is
    ``forward``."""
    import pickle

    from alarm.model.alarm_model import ALARMModel

    model = ALARMModel(ALARMConfig.tiny("concat", n_encoders=4))
    for name, rate in (("muq", 24000), ("sslam", 16000)):
        enc = model.encoders[name]
        front = pickle.loads(pickle.dumps(enc.front_end()))
        assert len(pickle.dumps(enc.front_end())) < 2000, name
        clips = [torch.randn(int(rate * 0.7)), torch.randn(int(rate * 4.1))]
        want, cu_want = enc(clips)
        got, cu = enc.run(front(clips))
        assert torch.equal(cu, cu_want), name
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True)), name

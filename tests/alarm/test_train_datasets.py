"""``data.datasets`` (train and evaluate on the published stage-A subsets) and the held-out examples of a feature
cache: ``alarm cache`` caches ``data.eval_manifest`` too, and a cache without them is refused instead of silently
evaluating nothing."""
import json
import logging

import numpy as np
import pytest
import soundfile as sf

from alarm.cli import main
from alarm.data.manifest import ManifestRecord
from alarm.model.tiny import tiny_tokenizer
from alarm.train.config import load_config
from alarm.train.data import load_examples, select_datasets

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPES = "alarm/train/recipes"


def _rec(i: int, dataset: str) -> ManifestRecord:
    return ManifestRecord(f"{dataset}-{i}", "a.wav", 1.0, dataset, "", "p", "t", {})


def test_select_takes_the_first_fraction_of_each_named_dataset_in_order(caplog):
    records = [_rec(i, d) for i, d in enumerate("abacbabaab")]  # a: 5, b: 4, c: 1 (interleaved)
    got = select_datasets(records, {"a": 0.4, "b": 1.0})
    assert [r.id for r in got] == ["a-0", "b-1", "a-2", "b-4", "b-6", "b-9"]  # int(5 * 0.4) = 2 a's, all 4 b's
    assert select_datasets(records, {}) == records and select_datasets(records, None) == records
    assert [r.id for r in select_datasets(records, {"c": 0.99})] == []  # int(1 * 0.99) = 0, as published
    with caplog.at_level(logging.WARNING):
        assert len(select_datasets(records, {"a": 1.0, "zz": 1.0}, "m.jsonl")) == 5
    assert "m.jsonl: no example of zz" in caplog.text
    with pytest.raises(ValueError, match=r"m.jsonl: no example of the selected datasets \['x', 'y'\].*holds \['a', "
                                         r"'b', 'c'\]"):
        select_datasets(records, {"x": 1.0, "y": 0.5}, "m.jsonl")


def test_recipes_hold_the_published_subsets_and_bad_values_are_refused():
    def datasets(recipe, *over):
        return load_config(f"{RECIPES}/{recipe}.yaml", ["data.train_manifest=x", *over]).data.datasets

    assert datasets("al_whisper_r") == {} and datasets("alarm_ca") == {}
    assert datasets("al_muq_r") == {"nsynth": 1.0, "sonicmaster": 1.0}
    assert datasets("al_w2vbert2_r") == dict.fromkeys(["cameo", "globe_v3", "vctk", "nisqa", "noisy_vctk"], 1.0)
    assert datasets("al_sslam_r") == {"audiocaps": 1.0, "clotho": 1.0, "esc50": 1.0, "fsd50k": 1.0, "audioset": 0.2}
    assert datasets("al_whisper_instruct_r") == {"heysquad_human_filtered": 1.0, "instructs2s": 1.0}
    assert load_config(f"{RECIPES}/alarm_p.yaml", ["data.train_manifest=x"]).init_adapters == {
        "whisper": "runs/al_whisper_instruct_r/final"}  # P starts from AL-Whisper-Instruct-R, as published
    assert datasets("al_muq_r", "data.datasets={}") == {} and datasets("al_muq_r", "data.datasets=") == {}
    assert datasets("al_whisper_r", "data.datasets={fma: 0.5}") == {"fma": 0.5}
    for bad in ("{fma: 1.5}", "{fma: 0}", "{fma: yes}", "{fma: x}"):
        with pytest.raises(ValueError, match="data.datasets maps dataset names to the fraction kept"):
            datasets("al_whisper_r", f"data.datasets={bad}")
    with pytest.raises(ValueError, match="data.datasets = \\['fma'\\] has the wrong type"):
        datasets("al_whisper_r", "data.datasets=[fma]")


def test_token_cache_is_keyed_by_the_selection(tmp_path):
    rows = [{"id": f"{d}{i}", "audio": f"{d}{i}.wav", "duration": 0.5, "dataset": d, "description": "",
             "prompt": "Q?", "target": f"answer of {d}"} for d in "ab" for i in range(2)]
    for r in rows:
        sf.write(tmp_path / r["audio"], np.zeros(8000, np.float32), 16000)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = tiny_tokenizer()
    cache = str(tmp_path / "tokens")
    a, _ = load_examples(str(tmp_path / "m.jsonl"), tok, 60.0, cache, {"a": 1.0})
    b, _ = load_examples(str(tmp_path / "m.jsonl"), tok, 60.0, cache, {"b": 1.0})  # same count, other rows
    assert [e.id for e in a] == ["a0", "a1"] and [e.id for e in b] == ["b0", "b1"]
    assert [e.target for e in b] == [tuple(tok.encode("answer of b", add_special_tokens=False))] * 2
    assert len(list((tmp_path / "tokens").glob("tokens-*.json"))) == 2


@pytest.fixture(scope="module")
def split_corpus(tmp_path_factory):
    """A train and a validation manifest of two datasets (synthetic clips)."""
    folder = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("validation", 2)):
        rows = []
        for i in range(n):
            name = f"{split}{i}.wav"
            sf.write(folder / name, (0.2 * rng.standard_normal(8000 + 800 * i)).astype(np.float32), 16000)
            rows.append({"id": f"{split}{i}", "audio": name, "duration": (8000 + 800 * i) / 16000,
                         "dataset": "ab"[i % 2], "description": "", "prompt": "What is it?", "target": "Noise."})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _tiny_ca(folder, out, *extra):
    """Tiny stage-B ALARM-CA (random frozen adapters) on ``split_corpus``: ``alarm cache`` / ``alarm train`` args."""
    (folder / "ca.yaml").write_text("model: {preset: tiny, fusion: CA, n_encoders: 4}\n")
    return ["--config", str(folder / "ca.yaml"), f"data.train_manifest={folder / 'train.jsonl'}",
            f"data.eval_manifest={folder / 'validation.jsonl'}", "data.num_workers=0", "run.device=cpu",
            f"run.out_dir={out}", "run.max_steps=1", "run.eval_every=1", "run.sample_every=0", "run.plot=false",
            "run.progress=lines", "batch.accumulation=1", *extra]


def test_cache_holds_the_held_out_clips_and_training_evaluates_from_it(split_corpus, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = _tiny_ca(split_corpus, tmp_path / "run")
    assert main(["cache", *args, "--out", str(cache), "--level", "adapter", "data.datasets={b: 1.0}"]) == 0
    assert "cached 4 clips" in capsys.readouterr().out  # dataset b: 3 training clips + 1 held-out clip
    index = json.loads((cache / "index.json").read_text())
    assert sorted(index["examples"]) == ["train1", "train3", "train5", "validation1"]
    assert main(["train", *args, f"data.cache={cache}", "data.datasets={b: 1.0}"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary["eval"]) == ["loss/b"] and np.isfinite(summary["eval"]["loss/b"])


def test_a_cache_without_the_held_out_clips_is_refused(split_corpus, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = _tiny_ca(split_corpus, tmp_path / "run")
    train_only = [a for a in args if not a.startswith("data.eval_manifest=")]
    assert main(["cache", *train_only, "--out", str(cache), "--level", "adapter"]) == 0
    capsys.readouterr()
    assert main(["train", *args, f"data.cache={cache}"]) == 2
    err = capsys.readouterr().err
    assert "2 held-out example(s) are not in the feature cache (first: validation0)" in err
    assert "same data.eval_manifest" in err

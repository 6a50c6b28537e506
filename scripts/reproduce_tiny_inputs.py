"""Synthetic stand-ins for everything docs/reproduce.md downloads, so that its commands run on a CPU.

    python scripts/reproduce_tiny_inputs.py OUT

writes, under OUT (the layout docs/reproduce.md uses, relative to the working directory of its commands):

- ``data/ALARM-Corpora/data/{train,validation}-00000-of-00001.parquet``: rows in the published corpus schema
  (``dataset_name``, ``context``, ``audio_description``, ``llm_answer_with_context``, ``llm_answer_no_context``,
  ``unique_id_1``, ``unique_id_2``, ``dataset_index``), the hub's file names; JSONL instead when pyarrow is
  missing;
- ``data/audio/<dataset>/...``: short synthetic clips in each source dataset's official layout (the datasets of
  every stage-A subset: files, a built VoxCeleb1 pair, and ``--audio-map`` entries for the hub-only sources),
  plus ``data/audio/maps/alarm-corpora.tsv``;
- ``data/bench/...``: MMAU test-mini and test (answers withheld, as published), MMAR, MMSU and AIR-Bench
  foundation metadata in each benchmark's own format, with their audio in the published folder layouts.

Each clip is a chord of tones (``alarm.model.tiny.synthetic_audio``); every row's description states its clip's
duration, as the importer checks. The same OUT always gets the same bytes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf

from alarm.model.tiny import synthetic_audio

# dataset -> (unique_id_1, unique_id_2, clip path relative to data/audio/<dataset>, or None for a map entry
# relative to data/audio/maps, sample rate); the first rows of each go to train, the last to validation
FILES = {
    "librispeech": [("84", f"84-121123-000{i}", f"LibriSpeech/train-clean-100/84/121123/84-121123-000{i}.flac",
                     16000) for i in range(3)],
    "vctk": [("225", f"p225_00{i}", f"VCTK-Corpus/wav48/p225/p225_00{i}.wav", 48000) for i in range(1, 4)],
    "nsynth": [(f"bass_acoustic_000-02{i}-025", str(20 + i), f"nsynth-train/audio/bass_acoustic_000-02{i}-025.wav",
                16000) for i in range(3)],
    "esc50": [(f"1-10003{i}-A-0.wav", f"10003{i}", f"ESC-50-master/audio/1-10003{i}-A-0.wav", 44100)
              for i in range(3)],
    # enough rows that al_sslam_r's first 20% of AudioSet holds some: 2 of 10 training rows, 1 of 5 held out
    "audioset": [(f"{i:05d}", f"abcdefghi{i:02d}", f"balanced/Yabcdefghi{i:02d}_30.000.wav", 16000) for i in range(15)],
}
CLOTHO = ("clotho", "development/Distorted AM Radio noise.wav", 16000)  # five rows (captions) share one file
VOXCELEB = [("id10001/1zcIwhmdeo4/00001.wav", "id10002/abcdefghijk/00002.wav"),
            ("id10003/xyzxyzxyzxy/00001.wav", "id10001/1zcIwhmdeo4/00002.wav")]
MAPPED = {  # hub-only sources: exported by the user, listed in the audio map
    "cameo": [(f"cameo_{i}", "emotion", f"cameo/{i}.wav") for i in range(3)],
    "sonicmaster": [(f"sm_{i}", "degraded", f"sonicmaster/{i}.wav") for i in range(3)],
    "heysquad_human_filtered": [(f"5733be284776f4190066118{i}", "False", f"heysquad/{i}.wav") for i in range(3)],
    "instructs2s": [(f"conv{i}", "0", f"instructs2s/conv{i}.wav") for i in range(2)],
}
MAP_NAME = {"heysquad_human_filtered": "heysquad_human"}  # the map names the source, the corpus its filtered copy
TARGET = ("<think>\nThe user asks about the clip. I hear {what}; it lasts about {seconds} seconds.\n</think>\n\n"
          "I hear {what}.")


def _write_clip(path: Path, seconds: float, rate: int, seed: int) -> float:
    """Write a synthetic clip (16-bit PCM, or the format the suffix names); return its length in seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synthetic_audio([seconds], rate=rate, seed=seed)[0], rate, subtype="PCM_16")
    return sf.info(path).frames / rate


class _Rows:
    def __init__(self):
        self.splits = {"train": [], "validation": []}
        self.index = {}

    def add(self, dataset: str, uid1: str, uid2: str, seconds: float, split: str, no_context: bool = False):
        what = f"{dataset} clip {uid2}"
        index = self.index[dataset] = self.index.get(dataset, -1) + 1
        self.splits[split].append({
            "dataset_name": dataset, "context": f"What can you tell me about this {dataset} recording?",
            "audio_description": f"[00:00-00:0{round(seconds)}] {what} (duration: {round(seconds)}s)",
            "llm_answer_with_context": TARGET.format(what=what, seconds=round(seconds)),
            "llm_answer_no_context": f"An answer to the spoken question of {uid1}." if no_context else None,
            "unique_id_1": uid1, "unique_id_2": uid2, "dataset_index": index})


def _split(k: int, n: int) -> str:
    """The last third of a dataset's rows (at least one) are held out."""
    return "validation" if k >= n - max(1, n // 3) else "train"


def write_corpus(out: Path) -> dict:
    """Audio trees, the audio map and the corpus shards under ``out/data``; returns {dataset: root or map}."""
    audio, rows, roots = out / "data" / "audio", _Rows(), {}
    seed = 0
    for dataset, entries in FILES.items():
        roots[dataset] = audio / dataset
        for k, (uid1, uid2, rel, rate) in enumerate(entries):
            seed += 1
            seconds = _write_clip(audio / dataset / rel, 0.6 + 0.2 * (k % 4), rate, seed)
            rows.add(dataset, uid1, uid2, seconds, _split(k, len(entries)))
    name, rel, rate = CLOTHO
    roots[name] = audio / name
    seconds = _write_clip(audio / name / rel, 1.1, rate, seed + 1)
    for k in range(1, 6):
        rows.add(name, Path(rel).name, f"caption_{k}", seconds, "validation" if k == 5 else "train")
    roots["voxceleb1"] = audio / "voxceleb1"
    for k, (first, second) in enumerate(VOXCELEB):
        seconds = sum(_write_clip(audio / "voxceleb1" / "wav" / rel, 0.4 + 0.1 * j, 16000, seed + 10 + 2 * k + j)
                      for j, rel in enumerate((first, second)))
        rows.add("voxceleb1", first, second, seconds, _split(k, len(VOXCELEB)))
    maps = audio / "maps"
    lines = ["dataset_name\tunique_id_1\tunique_id_2\tpath"]
    for dataset, entries in MAPPED.items():
        for k, (uid1, uid2, rel) in enumerate(entries):
            seconds = _write_clip(maps / rel, 0.5 + 0.3 * k, 16000, seed + 20 + k)
            split = "train" if dataset == "instructs2s" else _split(k, len(entries))  # InstructS2S: train only
            rows.add(dataset, uid1, uid2, seconds, split, no_context=dataset.startswith("heysquad"))
            lines.append(f"{MAP_NAME.get(dataset, dataset)}\t{uid1}\t{uid2}\t{rel}")
    (maps / "alarm-corpora.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    roots["maps"] = maps / "alarm-corpora.tsv"
    corpus = out / "data" / "ALARM-Corpora" / "data"
    corpus.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.splits.items():
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:  # the importer reads JSONL too
            (corpus / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split_rows), encoding="utf-8")
            continue
        table = pa.Table.from_pylist(split_rows)
        pq.write_table(table, corpus / f"{split}-00000-of-00001.parquet", compression="zstd")
    return {k: str(v) for k, v in roots.items()}


QUESTIONS = [("What is the main sound?", ["dog barking", "rain falling", "a car horn", "a violin"]),
             ("How many speakers are there?", ["one", "two", "three", "four"]),
             ("Which instrument plays?", ["piano", "guitar", "drums", "flute"])]


def write_benchmarks(out: Path) -> None:
    """Four items per benchmark split in each benchmark's own metadata format, audio in its published layout."""
    bench = out / "data" / "bench"
    seed = 100
    mini, test = [], []
    for split, items in (("test-mini", mini), ("test", test)):
        for i in range(4):
            q, choices = QUESTIONS[i % 3]
            seed += 1
            rel = f"{split}-audios/{split}-{i}.wav"
            _write_clip(bench / "mmau" / rel, 0.5 + 0.25 * i, 16000, seed)
            item = {"id": f"{split}-{i}", "audio_id": f"./{rel}", "question": q, "choices": choices,
                    "answer": choices[i % 4], "dataset": "synthetic", "task": ("sound", "music", "speech")[i % 3],
                    "split": split, "category": "Reasoning", "sub-category": "Synthetic", "difficulty": "easy"}
            if split == "test":
                del item["answer"]  # MMAU withholds the test answers (scored by its evaluation server)
            items.append(item)
    (bench / "mmau" / "mmau-test-mini.json").write_text(json.dumps(mini, indent=1), encoding="utf-8")
    (bench / "mmau" / "mmau-test.json").write_text(json.dumps(test, indent=1), encoding="utf-8")
    mmar = []
    for i in range(4):
        q, choices = QUESTIONS[i % 3]
        seed += 1
        _write_clip(bench / "mmar" / "audio" / f"mmar-{i}.wav", 0.6 + 0.2 * i, 16000, seed)
        mmar.append({"id": f"mmar-{i}", "audio_path": f"./audio/mmar-{i}.wav", "question": q, "choices": choices,
                     "answer": choices[(i + 1) % 4], "modality": ("sound", "music", "speech")[i % 3],
                     "category": "Perception Layer", "sub-category": "Synthetic"})
    (bench / "mmar" / "MMAR-meta.json").write_text(json.dumps(mmar, indent=1), encoding="utf-8")
    lines = []
    for i in range(4):
        q, choices = QUESTIONS[i % 3]
        seed += 1
        _write_clip(bench / "mmsu" / "audio" / f"mmsu-{i}.wav", 0.5 + 0.3 * i, 16000, seed)
        lines.append(json.dumps({"id": f"mmsu-{i}", "audio_path": f"/audio/mmsu-{i}.wav", "question": q,
                                 **dict(zip(("choice_a", "choice_b", "choice_c", "choice_d"), choices, strict=True)),
                                 "answer_gt": choices[i % 4], "category": ("Perception", "Reasoning")[i % 2],
                                 "sub-category": "Synthetic", "task_name": "synthetic"}))
    (bench / "mmsu" / "question").mkdir(parents=True, exist_ok=True)
    (bench / "mmsu" / "question" / "mmsu.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    air = []
    tasks = [("Speaker_Gender_Recognition", "VoxCeleb1"), ("Acoustic_Scene_Classification", "CochlScene"),
             ("Music_Genre_Recognition", "GTZAN"), ("Audio_Grounding", "AudioGrounding")]
    for i, (task, dataset) in enumerate(tasks):
        q, choices = QUESTIONS[i % 3]
        seed += 1
        name = f"air-{i}.wav"
        stored = name[:-3] + "flac" if task == "Audio_Grounding" else name  # the published loader's rename
        path = bench / "airbench" / "Foundation" / f"{task}_{dataset}" / stored
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synthetic_audio([0.7], seed=seed)[0], 16000, subtype="PCM_16")
        air.append({"uniq_id": i, "task_name": task, "dataset_name": dataset, "path": name, "question": q,
                    **dict(zip(("choice_a", "choice_b", "choice_c", "choice_d"), choices, strict=True)),
                    "answer_gt": choices[(i + 2) % 4]})
    (bench / "airbench" / "Foundation" / "Foundation_meta.json").write_text(json.dumps(air, indent=1),
                                                                            encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write into (the working directory of the reproduction commands)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    roots = write_corpus(out)
    write_benchmarks(out)
    print(json.dumps(roots, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

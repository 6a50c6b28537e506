"""``alarm data import-corpora``: corpus rows in the published schema + audio trees in each dataset's official
layout (tiny synthetic clips written with soundfile) -> manifests the trainer accepts, with the report.

Every resolver is exercised; built clips (VoxCeleb pairs, MELD/DailyTalk windows, AliMeeting meeting windows,
MUCS segments) are compared with the official recipe re-expressed here on the written samples; raw mode's
split is checked against ``np.random.seed(123); np.random.permutation(N)`` as the official script calls it.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from alarm.cli import main
from alarm.data.corpora.importer import ImportOptions, import_corpora
from alarm.data.corpora.layouts import youtube_id
from alarm.data.corpora.registry import SOURCES, SPLIT_DATASETS
from alarm.data.manifest import read_manifest

RATE = 16000


def _tone(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Quantised to 16 bits so that a PCM_16 file holds exactly these samples."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    x = np.round(x * 32767) / 32768
    return (x[:, 0] if channels == 1 else x).astype(np.float32)


def _write(path: Path, x: np.ndarray, rate: int = RATE) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    kwargs = {"format": "OGG", "subtype": "OPUS"} if suffix == ".opus" else \
        {"format": "MP3"} if suffix == ".mp3" else {"format": "AU", "subtype": "PCM_16"} if suffix == ".au" else \
        {"subtype": "PCM_16"}
    sf.write(path, x, rate, **kwargs)
    return x


def _seconds(path: Path) -> float:
    info = sf.info(path)
    return round(info.frames / info.samplerate, 6)


class Corpus:
    """Rows in the published schema, per input split; ``expect`` maps a row id to what the manifest must say."""

    def __init__(self):
        self.rows = {}
        self.next_index = {}
        self.expect = {}

    def add(self, split, dataset, uid1, uid2, seconds, path=None, *, context=None, target=None, no_context=None,
            described=None, index=None, dropped=False):
        key = (split, dataset)
        if index is None:
            index = self.next_index.get(key, 0)
        self.next_index[key] = index + 1
        described = seconds if described is None else described
        row = {"dataset_name": dataset,
               "context": f"What do you hear in {uid2}?" if context is None else context,
               "audio_description": f"[00:00-00:01] |sound| (duration: {round(described)}s)",
               "llm_answer_with_context": f"<think>\nabout {dataset} {uid1} {uid2}\n</think>\n\nIt is {uid2}."
               if target is None else target,
               "llm_answer_no_context": no_context,
               "unique_id_1": uid1, "unique_id_2": uid2, "dataset_index": index}
        self.rows.setdefault(split, []).append(row)
        row_id = f"{dataset}|{uid1}|{uid2}"
        self.expect.setdefault(row_id, {"row": row, "path": None if path is None else str(path), "seconds": seconds,
                                        "dropped": dropped})
        return row_id

    def write_jsonl(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for split, rows in self.rows.items():
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                   encoding="utf-8")
        return folder


def _textgrid(path: Path, intervals) -> None:
    """A Praat long-format TextGrid with one interval tier (``intervals``: (start, end, text))."""
    end = max(e for _, e, _ in intervals)
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             '        name = "speaker"', "        xmin = 0", f"        xmax = {end}",
             f"        intervals: size = {len(intervals)}"]
    for i, (s, e, text) in enumerate(intervals, 1):
        lines += [f"        intervals [{i}]:", f"            xmin = {s}", f"            xmax = {e}",
                  f'            text = "{text}"']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Audio trees in every official layout, the corpus, the audio map and the expected outcome of each row."""
    base = tmp_path_factory.mktemp("corpora")
    a = base / "audio"
    c = Corpus()
    roots = {}
    seed = iter(range(1, 1000))

    def clip(rel_root, rel, seconds, rate=RATE, channels=1):
        path = a / rel_root / rel
        _write(path, _tone(seconds, rate, channels, next(seed)), rate)
        return path

    # files: one or more clips per layout, some in a fallback location
    roots["librispeech"] = a / "librispeech"  # the parent of LibriSpeech/: the archive's top folder is found
    p = clip("librispeech", "LibriSpeech/train-clean-360/84/121123/84-121123-0000.flac", 1.2)
    c.add("train", "librispeech", "84", "84-121123-0000", 1.2, p)
    p = clip("librispeech", "LibriSpeech/train-clean-100/19/198/19-198-0001.flac", 0.8)
    c.add("validation", "librispeech", "19", "19-198-0001", 0.8, p)
    roots["mls"] = a / "mls"
    p = clip("mls", "mls_german_opus/train/audio/1234/5678/1234_5678_000001.opus", 1.0)
    c.add("train", "mls", "german", "1234_5678_000001", _seconds(p), p)
    roots["vctk"] = a / "vctk" / "VCTK-Corpus"  # the top folder itself
    p = clip("vctk", "VCTK-Corpus/wav48/p225/p225_001.wav", 0.9, rate=48000)
    c.add("train", "vctk", "225", "p225_001", 0.9, p)
    roots["noisy_vctk"] = a / "noisy_vctk"
    noisy = clip("noisy_vctk", "noisy_trainset_28spk_wav/p226_001.wav", 1.1)
    clean = clip("noisy_vctk", "clean_trainset_28spk_wav/p226_001.wav", 1.6)
    c.add("train", "noisy_vctk", "trainset_28spk_p226_001", "babble_15", 1.1, noisy)
    c.add("train", "noisy_vctk", "trainset_28spk_p226_001", "clean_15", 1.6, clean)
    roots["vocalsound"] = a / "vocalsound"
    p = clip("vocalsound", "audio_16k/f0003_0_cough.wav", 0.7)
    c.add("train", "vocalsound", "f0003", "f0003_0_cough.wav", 0.7, p)
    roots["nisqa"] = a / "nisqa"
    p = clip("nisqa", "NISQA_Corpus/NISQA_TRAIN_SIM/deg/c00001_x.wav", 1.3)
    c.add("train", "nisqa", "c00001_x.wav", "NISQA_TRAIN_SIM", 1.3, p)
    roots["asvspoof19"] = a / "asvspoof19"
    p = clip("asvspoof19", "LA/ASVspoof2019_LA_train/flac/LA_T_1000137.flac", 0.6)
    c.add("train", "asvspoof19", "LA_0079", "LA_T_1000137", 0.6, p)
    roots["asvspoof5"] = a / "asvspoof5"
    p = clip("asvspoof5", "flac_T/T_0000000001.flac", 0.75)
    c.add("train", "asvspoof5", "T_0000000001", "T_4850", 0.75, p)
    roots["esc50"] = a / "esc50"
    p = clip("esc50", "ESC-50-master/audio/1-100032-A-0.wav", 1.0, rate=44100)
    c.add("train", "esc50", "1-100032-A-0.wav", "100032", 1.0, p)
    roots["fsd50k"] = a / "fsd50k"
    p = clip("fsd50k", "FSD50K.dev_audio/64760.wav", 0.4)
    c.add("train", "fsd50k", "64760", "labels: Breathing", 0.4, p)
    roots["clotho"] = a / "clotho"
    p = clip("clotho", "development/Distorted AM Radio noise.wav", 2.0)
    for k in range(1, 6):  # five rows share one file
        c.add("train", "clotho", "Distorted AM Radio noise.wav", f"caption_{k}", 2.0, p)
    roots["gtzan"] = a / "gtzan"
    p = clip("gtzan", "Data/genres_original/blues/blues.00000.wav", 1.5, rate=22050)
    c.add("train", "gtzan", "genre: blues", "blues.00000.wav", 1.5, p)
    p = clip("gtzan", "genres/jazz/jazz.00001.au", 0.5, rate=22050)  # the original archive's .au files
    c.add("train", "gtzan", "genre: jazz", "jazz.00001.wav", 0.5, p)
    roots["mridangam"] = a / "mridangam"
    p = clip("mridangam", "mridangam_stroke_1.5/B/224030__akshaylaya__bheem-b-001.wav", 0.3, rate=44100)
    c.add("train", "mridangam", "tonic: B", "224030__akshaylaya__bheem-b-001.wav", 0.3, p)
    roots["nsynth"] = a / "nsynth"
    p = clip("nsynth", "nsynth-train/audio/bass_acoustic_000-024-025.wav", 1.0)
    c.add("train", "nsynth", "bass_acoustic_000-024-025", "24", 1.0, p)
    roots["opensinger"] = a / "opensinger"
    p = clip("opensinger", "OpenSinger/WomanRaw/10_光年之外/10_光年之外_0.wav", 0.9, rate=24000)
    c.add("train", "opensinger", "gender: Female", "10_光年之外_0.wav", 0.9, p)
    p = clip("opensinger", "OpenSinger/ManRaw/0_song/0_song_1.wav", 0.6, rate=24000)
    c.add("train", "opensinger", "gender: Male", "0_song_1.wav", 0.6, p)
    roots["singmos"] = a / "singmos"
    p = clip("singmos", "wavs/sys1_utt1.wav", 0.8)
    c.add("train", "singmos", "sys1_utt1", "sys1", 0.8, p)
    roots["fma"] = a / "fma"
    p = clip("fma", "fma_large/000/000002.mp3", 1.0, rate=22050)
    c.add("train", "fma", "000002", "AWOL - Food", _seconds(p), p)
    roots["librimix"] = a / "librimix"
    p = clip("librimix", "Libri2Mix/wav16k/max/train-100/mix_clean/19-198-0001_84-121123-0000.wav", 1.2)
    c.add("train", "librimix", "train-100_mix_clean", "19-198-0001_84-121123-0000", 1.2, p, described=1.0)
    p = clip("librimix", "Libri3Mix/wav16k/max/train-360/mix_clean/1-2-3_4-5-6_7-8-9.wav", 1.4)
    c.add("train", "librimix", "train-360_mix_clean", "1-2-3_4-5-6_7-8-9", 1.4, p)
    roots["audioset"] = a / "audioset"
    p = clip("audioset", "balanced/Y--0w1YA1Hm4_30.000.wav", 1.0)
    c.add("train", "audioset", "00001", "--0w1YA1Hm4", 1.0, p)
    p = clip("audioset", "unbalanced/abcdefghijk.flac", 0.5)
    c.add("train", "audioset", "00002", "Yabcdefghijk", 0.5, p)
    roots["audiocaps"] = a / "audiocaps"
    p = clip("audiocaps", "train/xyzXYZ12345.wav", 1.0)
    c.add("train", "audiocaps", "91139", "xyzXYZ12345", 1.0, p)

    # built: VoxCeleb1 pairs
    roots["voxceleb1"] = a / "voxceleb1"
    v1 = clip("voxceleb1", "wav/id10001/1zcIwhmdeo4/00001.wav", 0.7)
    v2 = clip("voxceleb1", "wav/id10002/abcdefghijk/00002.wav", 0.5)
    c.add("train", "voxceleb1", "id10001/1zcIwhmdeo4/00001.wav", "id10002/abcdefghijk/00002.wav", 1.2)
    # MELD: stereo utterances extracted to FLAC; one dialogue still MP4 only
    roots["meld"] = a / "meld"
    m0 = clip("meld", "MELD.Raw/train_splits/dia0_utt0.flac", 0.6, channels=2)
    m1 = clip("meld", "MELD.Raw/train_splits/dia0_utt1.flac", 0.4, channels=2)
    (a / "meld/MELD.Raw/train_splits/dia1_utt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    c.add("train", "meld", "0", "0_0_0_1", 1.0)
    c.add("train", "meld", "1", "1_0_0", 1.0, dropped=True)
    # DailyTalk at 24 kHz (resampled to 16 kHz when joined)
    roots["dailytalk"] = a / "dailytalk"
    d0 = clip("dailytalk", "dailytalk/data/5/0_1_d5.wav", 0.5, rate=24000)
    d1 = clip("dailytalk", "dailytalk/data/5/1_0_d5.wav", 0.7, rate=24000)
    c.add("train", "dailytalk", "5", "5_0_0_1", 1.2)
    # AliMeeting: two speakers' near-field recordings and TextGrids (one empty interval, one overlap)
    roots["alimeeting"] = a / "alimeeting"
    rec_a = clip("alimeeting", "Train_Ali_near/audio_dir/R0001_M0001_F_SPK0001.wav", 50.0)
    rec_b = clip("alimeeting", "Train_Ali_near/audio_dir/R0001_M0001_M_SPK0002.wav", 50.0)
    grid_a = [(0.5, 10.0, "你好"), (10.0, 12.0, ""), (20.0, 45.0, "嗯")]
    grid_b = [(5.0, 15.0, "对"), (44.0, 48.0, "好的")]
    _textgrid(a / "alimeeting/Train_Ali_near/textgrid_dir/R0001_M0001_F_SPK0001.TextGrid", grid_a)
    _textgrid(a / "alimeeting/Train_Ali_near/textgrid_dir/R0001_M0001_M_SPK0002.TextGrid", grid_b)
    c.add("train", "alimeeting", "R0001_M0001", "R0001_M0001_0_0001_0002_0001_0001", 44.5, described=44.0)
    c.add("train", "alimeeting", "R0001_M0001", "R0001_M0001_1_0002", 4.0)
    # MUCS: segments cut from a long recording (the official script truncates sample positions)
    roots["mucs"] = a / "mucs"
    rec = clip("mucs", "Hindi-English/train/rec1.wav", 5.0)
    seg = a / "mucs/Hindi-English/train/transcripts/segments"
    seg.parent.mkdir(parents=True)
    seg.write_text("seg1 rec1 1.00004 2.50003\nseg2 rec1 3.0 4.25\n")
    c.add("train", "mucs", "seg1", "rec1", 1.5)

    # map sources: HeySQuAD (with its no-context copy), InstructS2S (empty context), CAMEO not provided
    maps = base / "maps"
    _write(maps / "heysquad/q1.wav", _tone(1.1, seed=501))
    _write(maps / "heysquad/q2.wav", _tone(0.9, seed=502))
    _write(maps / "instructs2s/t0.flac", _tone(0.8, seed=503))
    _write(maps / "heysquad/long.flac", np.zeros(60 * 8000, np.float32), rate=8000)
    (maps / "audio_map.tsv").write_text(
        "dataset_name\tunique_id_1\tunique_id_2\tpath\n"
        "heysquad_human\t5733be284776f41900661182\tFalse\theysquad/q1.wav\n"
        "heysquad_human\t56ddde6b9a695914005b9628\tTrue\theysquad/q2.wav\n"
        "heysquad_human\tlong\tFalse\theysquad/long.flac\n"
        "instructs2s\t42\t0\tinstructs2s/t0.flac\n", encoding="utf-8")
    c.add("train", "heysquad_human_filtered", "5733be284776f41900661182", "False", 1.1, maps / "heysquad/q1.wav",
          no_context="<think>\nThe spoken question asks about Notre Dame.\n</think>\n\nSaint Bernadette.")
    c.add("validation", "heysquad_human", "56ddde6b9a695914005b9628", "True", 0.9, maps / "heysquad/q2.wav",
          no_context="<think>\nNo answer in the passage.\n</think>\n\nUnanswerable.")
    c.add("train", "instructs2s", "42", "0", 0.8, maps / "instructs2s/t0.flac", context="")

    # rows dropped, each for its own reason
    c.add("train", "cameo", "crema_d", "1001_DFA_ANG_XX", 2.0, dropped=True)  # unsupported: no root, no map
    c.add("train", "clotho", "Distorted AM Radio noise.wav", "caption_6", 2.0, dropped=True)  # ids outside the layout
    c.add("train", "esc50", "1-100032-A-0.wav", "100032", 1.0)  # duplicate of a row above
    c.add("train", "heysquad_human", "long", "False", 60.0, maps / "heysquad/long.flac", dropped=True)  # >= 60 s
    c.add("train", "nsynth", "guitar_missing_000-050-100", "50", 4.0, dropped=True)  # missing file
    (a / "vocalsound/audio_16k/f0004_0_sigh.wav").write_text("not audio\n")  # unreadable
    c.add("train", "vocalsound", "f0004", "f0004_0_sigh.wav", 1.0, dropped=True)
    p = clip("nsynth", "nsynth-train/audio/keyboard_acoustic_001-060-050.wav", 1.0)
    c.add("train", "nsynth", "keyboard_acoustic_001-060-050", "60", 1.0, p, described=4.0, dropped=True)  # 1 s, not 4
    corpus = c.write_jsonl(base / "corpus")
    return {"base": base, "corpus": corpus, "roots": {k: str(v) for k, v in roots.items()},
            "map": str(maps / "audio_map.tsv"), "corpus_obj": c,
            "built": {"voxceleb": (v1, v2), "meld": (m0, m1), "dailytalk": (d0, d1), "alimeeting": (rec_a, rec_b),
                      "grids": (grid_a, grid_b), "mucs": rec}}


def _options(world, out, **kw) -> ImportOptions:
    return ImportOptions(corpus=str(world["corpus"]), out=str(out), roots=world["roots"], maps=(world["map"],),
                         allow_missing=True, workers=kw.pop("workers", 3), **kw)


@pytest.fixture(scope="module")
def imported(world):
    out = world["base"] / "out"
    report = import_corpora(_options(world, out))
    return out, report


def _records(out: Path, split: str) -> dict:
    return {r.id: r for r in read_manifest(out / f"{split}.jsonl")}


def test_every_resolver_finds_its_files(world, imported):
    out, _ = imported
    records = {**_records(out, "train"), **_records(out, "validation")}
    kept = {row_id for row_id, want in world["corpus_obj"].expect.items() if not want["dropped"]}
    assert {i for i in records if not i.endswith("|no_context")} == kept
    checked = set()
    for row_id, want in world["corpus_obj"].expect.items():
        if want["path"] is None or want["dropped"]:
            continue
        rec = records[row_id]
        row = want["row"]
        assert rec.audio == want["path"], row_id
        assert rec.duration == pytest.approx(_seconds(Path(want["path"])), abs=1e-6)
        assert (rec.dataset, rec.prompt, rec.target, rec.description) == (
            row["dataset_name"], row["context"], row["llm_answer_with_context"], row["audio_description"])
        assert rec.meta == {"unique_id_1": row["unique_id_1"], "unique_id_2": row["unique_id_2"],
                            "dataset_index": row["dataset_index"]}
        checked.add(SOURCES.get(row["dataset_name"], SOURCES["heysquad_human"]).__name__)
    file_layouts = {cls.__name__ for cls in SOURCES.values() if cls.kind == "files"}
    assert file_layouts <= checked, f"resolvers never matched: {file_layouts - checked}"
    assert {"HeySQuAD", "InstructS2S"} <= checked


def _decoded(out: Path, rec) -> np.ndarray:
    x, rate = sf.read(out / rec.audio, dtype="float64")
    assert rate == RATE and not Path(rec.audio).is_absolute() and rec.audio.startswith("clips/")
    return x


def test_built_clips_are_rebuilt_as_the_official_scripts_built_them(world, imported):
    out, _ = imported
    recs = _records(out, "train")
    built = world["built"]
    q = 2.0 ** -23  # 24-bit FLAC step
    # VoxCeleb1: the two files concatenated
    v1, v2 = (sf.read(p, dtype="float64")[0] for p in built["voxceleb"])
    got = _decoded(out, recs["voxceleb1|id10001/1zcIwhmdeo4/00001.wav|id10002/abcdefghijk/00002.wav"])
    np.testing.assert_allclose(got, np.concatenate([v1, v2]), atol=q)
    # MELD: stereo utterances averaged, concatenated in the window's order
    m0, m1 = (sf.read(p, dtype="float64")[0].mean(axis=1) for p in built["meld"])
    np.testing.assert_allclose(_decoded(out, recs["meld|0|0_0_0_1"]), np.concatenate([m0, m1]), atol=2 * q)
    # DailyTalk: 24 kHz pieces resampled to 16 kHz each (ceil(T * 16000 / 24000) samples), then joined
    lengths = [math.ceil(sf.info(p).frames * RATE / 24000) for p in built["dailytalk"]]
    assert _decoded(out, recs["dailytalk|5|5_0_0_1"]).size == sum(lengths)
    # AliMeeting: intervals of both speakers sorted by start, windows closed once end - first start >= 40 s,
    # each interval cut from its speaker's recording and placed at round((start - window start) * 16 kHz)
    rec_a, rec_b = (sf.read(p, dtype="float64")[0] for p in built["alimeeting"])
    grid_a, grid_b = built["grids"]
    intervals = sorted([(s, e, rec_a, "0001") for s, e, _ in grid_a] + [(s, e, rec_b, "0002") for s, e, _ in grid_b],
                       key=lambda iv: iv[0])
    windows, current = [], []
    for iv in intervals:
        current.append(iv)
        if iv[1] - current[0][0] >= 40:
            windows.append(current)
            current = []
    windows.append(current)
    for w, window in enumerate(windows):
        row_id = f"alimeeting|R0001_M0001|R0001_M0001_{w}_" + "_".join(iv[3] for iv in window)
        pieces = [(round((s - window[0][0]) * RATE), x[round(s * RATE):round(e * RATE)]) for s, e, x, _ in window]
        want = np.zeros(max(o + p.size for o, p in pieces))
        for o, p in pieces:
            want[o:o + p.size] = p
        np.testing.assert_allclose(_decoded(out, recs[row_id]), want, atol=q)
    assert len(windows) == 2
    # MUCS: [int(start * rate), int(end * rate)) of the recording
    rec = sf.read(built["mucs"], dtype="float64")[0]
    np.testing.assert_allclose(_decoded(out, recs["mucs|seg1|rec1"]), rec[int(1.00004 * RATE):int(2.50003 * RATE)],
                               atol=q)


def test_heysquad_no_context_copy_and_empty_prompts(imported):
    out, _ = imported
    train, validation = _records(out, "train"), _records(out, "validation")
    base = "heysquad_human_filtered|5733be284776f41900661182|False"
    copy = train[base + "|no_context"]
    assert copy.prompt == "" and copy.target.endswith("Saint Bernadette.") and copy.audio == train[base].audio
    assert copy.meta["no_context"] is True and train[base].prompt.startswith("What do you hear")
    assert validation["heysquad_human|56ddde6b9a695914005b9628|True|no_context"].prompt == ""
    assert train["instructs2s|42|0"].prompt == ""  # the first turn of a conversation has no context
    assert not any(r.id.endswith("no_context") for r in train.values() if not r.dataset.startswith("heysquad"))


def test_report_counts_and_missing_table(world, imported):
    out, report = imported
    assert report == json.loads((out / "report.json").read_text())
    train = report["splits"]["train"]["datasets"]
    assert train["cameo"]["unsupported"] == 1 and train["cameo"]["matched"] == 0
    assert train["clotho"]["matched"] == 5 and train["clotho"]["missing"] == 1
    assert train["esc50"]["duplicate"] == 1 and train["esc50"]["matched"] == 1
    assert train["heysquad_human"]["too_long"] == 1
    assert train["nsynth"] == {**train["nsynth"], "rows": 3, "matched": 1, "missing": 1, "duration_mismatch": 1}
    assert train["meld"]["matched"] == 1 and train["meld"]["missing"] == 1
    assert train["vocalsound"]["unreadable"] == 1 and train["vocalsound"]["matched"] == 1
    assert train["heysquad_human_filtered"]["no_context_copies"] == 1
    manifest_lines = (out / "train.jsonl").read_text().count("\n")
    assert report["splits"]["train"]["records"] == manifest_lines
    rows = [line.split("\t") for line in (out / "missing.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["split", "dataset_name", "unique_id_1", "unique_id_2", "status", "reason", "path"]
    by_key = {(r[1], r[2], r[3]): r for r in rows[1:]}
    assert set(by_key) == {("clotho", "Distorted AM Radio noise.wav", "caption_6"), ("meld", "1", "1_0_0"),
                           ("nsynth", "guitar_missing_000-050-100", "50"),
                           ("nsynth", "keyboard_acoustic_001-060-050", "60"),
                           ("vocalsound", "f0004", "f0004_0_sigh.wav")}
    assert "extract their audio" in by_key[("meld", "1", "1_0_0")][5]
    assert by_key[("nsynth", "guitar_missing_000-050-100", "50")][6].endswith(
        "nsynth-train/audio/guitar_missing_000-050-100.wav")
    assert by_key[("nsynth", "keyboard_acoustic_001-060-050", "60")][4] == "duration_mismatch"
    assert by_key[("vocalsound", "f0004", "f0004_0_sigh.wav")][4] == "unreadable"
    assert report["sources"]["heysquad_human"] == {"kind": "map", "entries": 3}


def test_rerun_writes_identical_bytes(world, imported, tmp_path):
    out, _ = imported
    names = ("train.jsonl", "validation.jsonl", "missing.tsv", "report.json")
    before = {n: (out / n).read_bytes() for n in names}
    clips = sorted((out / "clips").rglob("*.flac"))
    stamps = [p.stat().st_mtime_ns for p in clips]
    import_corpora(_options(world, out, workers=1))
    assert {n: (out / n).read_bytes() for n in names} == before
    assert [p.stat().st_mtime_ns for p in clips] == stamps  # built clips are written once
    other = tmp_path / "again"  # a fresh folder rebuilds the clips: same manifests, same clip samples
    import_corpora(_options(world, other, workers=2))
    assert {n: (other / n).read_bytes() for n in names} == before
    for p in clips:
        np.testing.assert_array_equal(sf.read(p)[0], sf.read(other / p.relative_to(out))[0])


def test_parquet_shards_give_the_same_manifests(world, imported, tmp_path):
    import pyarrow as pa  # in the test extra: a missing pyarrow fails here rather than skipping
    import pyarrow.parquet as pq

    out, _ = imported
    corpus = tmp_path / "hub" / "data"
    corpus.mkdir(parents=True)
    for split, rows in world["corpus_obj"].rows.items():
        half = len(rows) // 2 or 1
        for i, part in enumerate((rows[:half], rows[half:])):
            if part:
                pq.write_table(pa.Table.from_pylist(part), corpus / f"{split}-{i:05d}-of-00002.parquet")
    report = import_corpora(ImportOptions(corpus=str(tmp_path / "hub"), out=str(tmp_path / "out"),
                                          roots=world["roots"], maps=(world["map"],), allow_missing=True,
                                          clips_dir=str(out / "clips")))
    assert report["inputs"]["train"] == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    for name in ("train.jsonl", "validation.jsonl", "missing.tsv"):
        mine = (tmp_path / "out" / name).read_text(encoding="utf-8")
        # built clips live outside this output folder: absolute paths instead of clips/...
        assert mine.replace(str(out) + "/", "") == (out / name).read_text(encoding="utf-8")


def test_trainer_accepts_the_manifests(imported):
    from alarm.testing_tokenizer import build_tiny_tokenizer
    from alarm.train.data import ClipDataset, load_examples

    out, report = imported
    tok = build_tiny_tokenizer()
    for split in ("train", "validation"):
        examples, skips = load_examples(str(out / f"{split}.jsonl"), tok, max_seconds=60.0)
        assert skips == [] and len(examples) == report["splits"][split]["records"]
        data = ClipDataset(examples, rate=RATE, max_seconds=60.0)
        for i in range(len(examples)):
            _, wave, _, reason = data[i]
            assert reason is None and wave.numel() == pytest.approx(examples[i].duration * RATE, abs=2)


def test_alarm_train_runs_on_the_imported_manifest(imported, tmp_path):
    """``alarm train`` (its own process, as tests/alarm/test_train.py runs it) on the validation manifest:
    LibriSpeech, HeySQuAD and HeySQuAD's empty-prompt copy, one example per step."""
    import os
    import subprocess

    out, report = imported
    recipe = {"model": {"preset": "tiny", "fusion": "sum", "n_encoders": 1, "stage": "A"},
              "data": {"train_manifest": str(out / "validation.jsonl"), "max_seconds": 5.0},
              "optim": {"lr": 1e-3, "warmup_steps": 1}, "batch": {"max_tokens": 1, "accumulation": 1},
              "run": {"out_dir": str(tmp_path / "run"), "epochs": 1, "save_every": 100, "log_every": 1,
                      "progress": "lines", "device": "cpu", "plot": False}}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("WORLD_SIZE", None)
    r = subprocess.run([sys.executable, "-m", "alarm", "train", "--config", str(tmp_path / "recipe.json")],
                       cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == report["splits"]["validation"]["records"] == 3 and summary["skipped_clips"] == 0


def test_youtube_ids_in_file_names():
    assert youtube_id("--0w1YA1Hm4") == "--0w1YA1Hm4"
    assert youtube_id("Y--0w1YA1Hm4") == "--0w1YA1Hm4"
    assert youtube_id("Y--0w1YA1Hm4_30.000") == "--0w1YA1Hm4"
    assert youtube_id("YabcdefghiJ_30000_40000") == "YabcdefghiJ"  # an id that starts with Y, plus a suffix
    assert youtube_id("short") is None and youtube_id("abcdefghijkl") is None


# ---------------------------------------------------------------------- raw mode: the official split and filter

@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_raw_mode_rebuilds_the_published_split_and_token_filter(world, tmp_path, fmt):
    from alarm.testing_tokenizer import build_tiny_tokenizer

    tok_dir = tmp_path / "tokenizer"
    build_tiny_tokenizer().save_pretrained(str(tok_dir))
    n = 30
    lengths = [99, 100, 612, 613] + [150 + 10 * i for i in range(n - 4)]
    rows = []
    for i in range(n):
        rows.append({"dataset_name": "esc50", "context": "Which sound?", "unique_id_1": "1-100032-A-0.wav",
                     "unique_id_2": f"src{i:02d}", "dataset_index": i, "llm_answer_no_context": None,
                     "audio_description": "[00:00-00:01] |dog| (duration: 1s)",
                     "llm_answer_with_context": "<think>" * lengths[i]})
    short = "<think>\nok\n</think>\n\nShort answers stay: HeySQuAD is not token-filtered."
    heysquad = {"dataset_name": "heysquad_human", "context": "ctx", "audio_description": "q?",
                "llm_answer_with_context": short, "llm_answer_no_context": short}
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows_shuffled = rows[::-1] + [{**heysquad, "unique_id_1": "5733be284776f41900661182", "unique_id_2": "False",
                                   "dataset_index": 0}]
    if fmt == "jsonl":
        (corpus / "raw_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_shuffled))
    else:  # two shards, as the hub stores a split
        import pyarrow as pa
        import pyarrow.parquet as pq

        for k, part in enumerate((rows_shuffled[:12], rows_shuffled[12:])):
            pq.write_table(pa.Table.from_pylist(part), corpus / f"raw_train-{k:05d}-of-00002.parquet")
    (corpus / "raw_validation.jsonl").write_text(json.dumps(
        {**heysquad, "unique_id_1": "56ddde6b9a695914005b9628", "unique_id_2": "True", "dataset_index": 0}) + "\n")
    out = tmp_path / "out"
    report = import_corpora(ImportOptions(corpus=str(corpus), out=str(out), mode="raw", tokenizer=str(tok_dir),
                                          roots={"esc50": world["roots"]["esc50"]}, maps=(world["map"],)))
    np.random.seed(123)  # the official create_train_val_split.py, literally
    indexes = np.random.permutation(n)
    val_threshold = int(n * 0.10)
    val_indexes, train_indexes = set(indexes[:val_threshold]), set(indexes[val_threshold:])
    keep = {i for i in range(n) if 100 <= lengths[i] <= 612}
    train, validation = read_manifest(out / "train.jsonl"), read_manifest(out / "validation.jsonl")
    got_train = {r.meta["dataset_index"] for r in train if r.dataset == "esc50"}
    got_validation = {r.meta["dataset_index"] for r in validation if r.dataset == "esc50"}
    assert got_train == train_indexes & keep and got_validation == val_indexes & keep
    assert {1, 2} <= got_train | got_validation and not {0, 3} & (got_train | got_validation)  # 100, 612 kept
    assert [r.id for r in train if r.dataset == "heysquad_human"] == [
        "heysquad_human|5733be284776f41900661182|False", "heysquad_human|5733be284776f41900661182|False|no_context"]
    assert [r.id for r in validation if r.dataset == "heysquad_human"][0].startswith("heysquad_human|56ddde")
    dropped = sum(report["splits"][s]["datasets"]["esc50"]["target_tokens"] for s in ("train", "validation"))
    assert dropped == n - len(keep) == 2
    assert report["settings"]["split_seed"] == 123 and report["mode"] == "raw"


def test_filtered_mode_applies_the_token_filter_when_given_a_tokenizer(world, tmp_path):
    from alarm.testing_tokenizer import build_tiny_tokenizer

    build_tiny_tokenizer().save_pretrained(str(tmp_path / "tok"))
    lengths = (99, 100, 612, 613)
    rows = [{**GOOD_ROW, "unique_id_2": f"src{i}", "dataset_index": i, "llm_answer_with_context": "<think>" * n}
            for i, n in enumerate(lengths)]
    rows.append({**GOOD_ROW, "dataset_name": "heysquad_human", "unique_id_1": "5733be284776f41900661182",
                 "unique_id_2": "False", "llm_answer_with_context": "short"})
    corpus = _corpus_with(tmp_path, rows)
    report = import_corpora(ImportOptions(corpus=str(corpus), out=str(tmp_path / "out"),
                                          tokenizer=str(tmp_path / "tok"), roots={"esc50": world["roots"]["esc50"]},
                                          maps=(world["map"],)))
    kept = [(r.dataset, r.meta["dataset_index"]) for r in read_manifest(tmp_path / "out" / "train.jsonl")]
    assert kept == [("esc50", 1), ("esc50", 2), ("heysquad_human", 0)]  # HeySQuAD is not token-filtered
    assert report["splits"]["train"]["datasets"]["esc50"]["target_tokens"] == 2
    assert report["settings"]["max_tokens"] == 612 and "split_seed" not in report["settings"]


def test_an_audio_map_entry_wins_over_the_root(world, tmp_path):
    _write(tmp_path / "mine" / "dog.flac", _tone(1.0, seed=77))
    (tmp_path / "map.tsv").write_text("dataset_name\tunique_id_1\tunique_id_2\tpath\n"
                                      "esc50\t1-100032-A-0.wav\t100032\tmine/dog.flac\n")
    corpus = _corpus_with(tmp_path, [GOOD_ROW, {**GOOD_ROW, "unique_id_2": "other source"}])
    import_corpora(ImportOptions(corpus=str(corpus), out=str(tmp_path / "out"), maps=(str(tmp_path / "map.tsv"),),
                                 roots={"esc50": world["roots"]["esc50"]}))
    audio = [r.audio for r in read_manifest(tmp_path / "out" / "train.jsonl")]
    assert audio == [str(tmp_path / "mine" / "dog.flac"), str(Path(world["roots"]["esc50"]) / "ESC-50-master" /
                                                              "audio" / "1-100032-A-0.wav")]


def test_raw_mode_needs_the_complete_raw_train_split(world, tmp_path, capsys):
    from alarm.testing_tokenizer import build_tiny_tokenizer

    build_tiny_tokenizer().save_pretrained(str(tmp_path / "tok"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    row = {"dataset_name": "esc50", "context": "c", "audio_description": "d", "llm_answer_with_context": "t",
           "unique_id_1": "1-100032-A-0.wav", "llm_answer_no_context": None}
    (corpus / "raw_train.jsonl").write_text("".join(json.dumps({**row, "unique_id_2": str(i), "dataset_index": i})
                                                    + "\n" for i in (0, 1, 3)))
    (corpus / "raw_validation.jsonl").write_text("")
    rc = main(["data", "import-corpora", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--mode", "raw",
               "--tokenizer", str(tmp_path / "tok"), "--audio-root", f"esc50={world['roots']['esc50']}",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "esc50 has 3 rows" in err and "every raw_train file" in err and len(err.splitlines()) == 1
    assert SPLIT_DATASETS[0] == "cameo" and len(SPLIT_DATASETS) == 31


# ---------------------------------------------------------------------- errors: one line, exit 2, nothing written

def _corpus_with(tmp_path, rows, name="train.jsonl") -> Path:
    corpus = tmp_path / "bad_corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not (corpus / "validation.jsonl").exists():
        (corpus / "validation.jsonl").write_text("")
    return corpus


GOOD_ROW = {"dataset_name": "esc50", "context": "c", "audio_description": "(duration: 1s)",
            "llm_answer_with_context": "t", "llm_answer_no_context": None, "unique_id_1": "1-100032-A-0.wav",
            "unique_id_2": "100032", "dataset_index": 0}


@pytest.mark.parametrize("case", ["unknown_dataset_row", "unknown_dataset_root", "unknown_root", "map_only_root",
                                  "root_syntax", "missing_column", "null_column", "missing_audio", "bad_map_header",
                                  "bad_map_line", "raw_without_tokenizer", "no_split_files", "missing_corpus"])
def test_bad_input_is_one_error_line(world, tmp_path, capsys, case):
    esc = f"esc50={world['roots']['esc50']}"
    rows, extra = [GOOD_ROW], []
    want = {
        "unknown_dataset_row": "train.jsonl:2: unknown dataset 'foo'",
        "unknown_dataset_root": "--audio-root foo: unknown dataset",
        "unknown_root": "--audio-root esc50: folder not found",
        "map_only_root": "--audio-root cameo: cameo has no file layout",
        "root_syntax": "--audio-root 'esc50': expected NAME=DIR",
        "missing_column": "train.jsonl:2: missing column 'unique_id_2'",
        "null_column": "train.jsonl:2: column 'context' is null",
        "missing_audio": "train.jsonl:2: esc50 clip ('nope.wav', '1'): audio file not found",
        "bad_map_header": "map.tsv:1: the header must be",
        "bad_map_line": "map.tsv:3: expected 4 tab-separated fields",
        "raw_without_tokenizer": "--mode raw filters targets by their token count",
        "no_split_files": "no files of the 'validation' split",
        "missing_corpus": "--corpus: folder not found",
    }[case]
    roots = [esc]
    if case == "unknown_dataset_row":
        rows = [GOOD_ROW, {**GOOD_ROW, "dataset_name": "foo"}]
    elif case == "unknown_dataset_root":
        roots.append(f"foo={tmp_path}")
    elif case == "unknown_root":
        roots = [f"esc50={tmp_path / 'nowhere'}"]
    elif case == "map_only_root":
        roots.append(f"cameo={tmp_path}")
    elif case == "root_syntax":
        roots = ["esc50"]
    elif case == "missing_column":
        rows = [GOOD_ROW, {k: v for k, v in GOOD_ROW.items() if k != "unique_id_2"}]
    elif case == "null_column":
        rows = [GOOD_ROW, {**GOOD_ROW, "context": None}]
    elif case == "missing_audio":
        rows = [GOOD_ROW, {**GOOD_ROW, "unique_id_1": "nope.wav", "unique_id_2": "1"}]
    elif case in ("bad_map_header", "bad_map_line"):
        text = "dataset\tuid\n" if case == "bad_map_header" else \
            "dataset_name\tunique_id_1\tunique_id_2\tpath\ncameo\ta\tb\tx.wav\ncameo\ta\tb\n"
        (tmp_path / "map.tsv").write_text(text)
        extra = ["--audio-map", str(tmp_path / "map.tsv")]
    elif case == "raw_without_tokenizer":
        extra = ["--mode", "raw"]
    corpus = _corpus_with(tmp_path, rows)
    if case == "no_split_files":
        (corpus / "validation.jsonl").unlink()
    if case == "missing_corpus":
        corpus = tmp_path / "no_corpus"
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("old\n")
    args = ["data", "import-corpora", "--corpus", str(corpus), "--out", str(out), "--no-progress", *extra]
    for r in roots:
        args += ["--audio-root", r]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("alarm: error: ") and "Traceback" not in err
    assert want in err
    assert (out / "train.jsonl").read_text() == "old\n" and sorted(p.name for p in out.iterdir()) == ["train.jsonl"]


def test_parquet_errors_name_the_file_and_row(tmp_path, capsys):
    import pyarrow as pa  # in the test extra: a missing pyarrow fails here rather than skipping
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in GOOD_ROW.items() if k != "context"}]),
                   corpus / "train-00000-of-00001.parquet")
    (corpus / "validation.jsonl").write_text("")
    args = ["data", "import-corpora", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2
    assert "train-00000-of-00001.parquet: row 1: missing column 'context'" in capsys.readouterr().err
    pq.write_table(pa.Table.from_pylist([GOOD_ROW, {**GOOD_ROW, "unique_id_2": None}]),
                   corpus / "train-00000-of-00001.parquet")
    assert main(args) == 2
    assert "train-00000-of-00001.parquet: row 2: column 'unique_id_2' is null" in capsys.readouterr().err


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.parquet").write_bytes(b"PAR1")
    (corpus / "validation.jsonl").write_text("")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["data", "import-corpora", "--corpus", str(corpus), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs the pyarrow package (pip install 'alarm-toolkit[corpora]'" in err and len(err.splitlines()) == 1


def test_missing_audio_fails_without_allow_missing(world, tmp_path):
    with pytest.raises(ValueError, match=r"train.jsonl:\d+: meld clip \('1', '1_0_0'\): MELD clips are MP4 video"):
        import_corpora(ImportOptions(corpus=str(world["corpus"]), out=str(tmp_path / "out"), roots=world["roots"],
                                     maps=(world["map"],)))
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_sources_command_lists_every_dataset(capsys):
    assert main(["data", "sources"]) == 0
    text = capsys.readouterr().out
    for name, cls in SOURCES.items():
        assert f"{name}" in text and cls.layout in text
    assert "heysquad_human (also heysquad_human_filtered)" in text


def test_audio_roots_folder_gives_every_dataset_its_subfolder(world, imported, tmp_path, capsys):
    """``--audio-roots DIR``: DIR/<dataset> for each subfolder named after a dataset with a file layout; the same
    manifests as the explicit roots; an explicit --audio-root wins; a folder without such subfolders is refused."""
    out, _ = imported
    audio = world["base"] / "audio"
    args = ["data", "import-corpora", "--corpus", str(world["corpus"]), "--audio-map", world["map"],
            "--allow-missing", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "o"), "--audio-roots", str(audio)]) == 0
    for name in ("train.jsonl", "validation.jsonl", "missing.tsv"):
        assert (tmp_path / "o" / name).read_bytes() == (out / name).read_bytes(), name
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert set(report["sources"]) == set(world["roots"]) | {"heysquad_human", "instructs2s"}
    (tmp_path / "elsewhere").mkdir()
    assert main([*args, "--out", str(tmp_path / "w"), "--audio-roots", str(audio),
                 "--audio-root", f"nsynth={tmp_path / 'elsewhere'}"]) == 0
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["sources"]["nsynth"]["root"] == str(tmp_path / "elsewhere")
    assert report["splits"]["train"]["datasets"]["nsynth"]["matched"] == 0
    capsys.readouterr()
    for folder, message in ((tmp_path / "none", "--audio-roots: folder not found"),
                            (tmp_path / "elsewhere", "no subfolder named after a dataset")):
        assert main([*args, "--out", str(tmp_path / "x"), "--audio-roots", str(folder)]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name, uid1, uid2", [("librispeech", "84", "../84-121123-0000"),
                                              ("mls", "german", "x/../1_2_3")])
def test_ids_cannot_leave_the_dataset_root(tmp_path, name, uid1, uid2):
    """A row's ids become one path component each: '..' or a '/' in an id is refused, never followed."""
    with pytest.raises(ValueError, match="is not a file or folder name"):
        SOURCES[name](str(tmp_path)).paths(uid1, uid2)

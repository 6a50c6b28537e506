"""Label descriptions (alarm/data/descriptions.py) and the manifest schema (alarm/data/manifest.py)."""
import json

import pytest

from alarm.data.descriptions import (SCHEMAS, Description, Segment, format_time, label_item_from_dict,
                                     read_label_items, register_schema)
from alarm.data.manifest import ManifestError, ManifestRecord, read_manifest, write_manifest


def _item(schema, labels, duration=5.2, **kw):
    return label_item_from_dict({"id": "x", "audio": "x.wav", "dataset": "d", "duration": duration,
                                 "schema": schema, "labels": labels, **kw})


def test_time_format():
    assert format_time(0) == "00:00"
    assert format_time(4.4) == "00:04" and format_time(4.4, up=True) == "00:05"
    assert format_time(4.0, up=True) == "00:04"
    assert format_time(3725.0) == "62:05"


def test_speech_with_attributes():
    it = _item("speech", {"transcript": "I  missed the last\ntrain home.", "emotion": "sad", "gender": "female",
                          "accent": "Scottish", "snr": 12.5, "mos": 3.75, "spoof_method": "A07"}, duration=4.2)
    assert it.describe() == ("[00:00-00:05] I missed the last train home.\n"
                             "(duration: 4.2s, emotion: sad, gender: female, accent: Scottish, snr: 12.5, "
                             "mos: 3.75, spoof method: A07)")


def test_sound_captions_and_events():
    it = _item("sound", {"caption": "A dog barks near a road.",
                         "events": [{"label": "car horn", "start": 3.0, "end": 4.4},
                                    {"label": "dog barking", "start": 0.5, "end": 2.0}]}, duration=10)
    assert it.describe() == ("|A dog barks near a road.|\n[00:00-00:02] |dog barking|\n[00:03-00:05] |car horn|\n"
                             "(duration: 10s)")


def test_music_genre_instruments():
    it = _item("music", {"caption": "A slow jazz tune.", "genre": "jazz", "instruments": ["piano", "double bass"],
                         "tempo_bpm": 72, "vocals": False}, duration=30.0)
    assert it.describe() == ("|A slow jazz tune.|\n"
                             "(duration: 30s, genre: jazz, instruments: piano; double bass, tempo bpm: 72, vocals: no)")


def test_dialogue_one_segment_per_turn():
    turns = [{"speaker": "B", "start": 2.6, "end": 5.2, "text": "On the table.", "gender": "male"},
             {"speaker": "A", "start": 0.0, "end": 2.6, "text": "Where are the keys?", "gender": "female",
              "emotion": "angry"}]
    it = _item("dialogue", {"turns": turns, "language": "English"})
    assert it.describe() == ("[00:00-00:03] Where are the keys? (speaker: A, gender: female, emotion: angry)\n"
                             "[00:02-00:06] On the table. (speaker: B, gender: male)\n"
                             "(duration: 5.2s, language: English)")
    assert it.transcript() == "On the table. Where are the keys?"


def test_registry_extension():
    @register_schema("test_spoof")
    def spoof(labels, duration):
        return Description([Segment(labels["text"], 0.0, duration)], duration, {"bona fide": labels["bona_fide"]})

    try:
        it = _item("test_spoof", {"text": "hello", "bona_fide": True}, duration=2.0)
        assert it.describe() == "[00:00-00:02] hello\n(duration: 2s, bona fide: yes)"
        with pytest.raises(ValueError, match="already registered"):
            register_schema("test_spoof")(spoof)
    finally:
        SCHEMAS.pop("test_spoof")


def test_label_file_errors(tmp_path):
    p = tmp_path / "labels.jsonl"
    good = {"id": "a", "audio": "a.wav", "dataset": "d", "duration": 1.0, "schema": "speech",
            "labels": {"transcript": "hi"}}
    p.write_text(json.dumps(good) + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"labels.jsonl:3: malformed JSON"):
        read_label_items(p)
    for bad, msg in [({**good, "schema": "nope"}, "unknown schema"), ({**good, "duration": -1}, "duration"),
                     ({k: v for k, v in good.items() if k != "audio"}, "missing field"),
                     ({**good, "extra": 1}, "unknown field"),
                     ({**good, "schema": "dialogue", "labels": {"turns": []}}, "turns")]:
        p.write_text(json.dumps(good) + "\n" + json.dumps({**bad, "id": "b"}) + "\n")
        with pytest.raises(ValueError, match=msg) as e:
            read_label_items(p)
        assert ":2:" in str(e.value)
    p.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="duplicate id"):
        read_label_items(p)
    with pytest.raises(FileNotFoundError):
        read_label_items(tmp_path / "missing.jsonl")


def _rec(i="a", **kw):
    base = dict(id=i, audio="a.wav", duration=2.5, dataset="d", description="desc", prompt="p?", target="t")
    return ManifestRecord(**{**base, **kw})


def test_manifest_roundtrip_and_errors(tmp_path):
    p = tmp_path / "m.jsonl"
    recs = [_rec("a"), _rec("b", meta={"target_tokens": 120})]
    write_manifest(p, recs)
    assert read_manifest(p) == recs
    assert [f.name for f in tmp_path.iterdir()] == ["m.jsonl"]  # no temp file left behind
    lines = p.read_text().splitlines()
    for bad, msg in [({"duration": 0}, "duration"), ({"target": ""}, "target"), ({"prompt": 3}, "prompt"),
                     ({"surprise": 1}, "unknown field")]:
        obj = {**json.loads(lines[0]), **bad}
        p.write_text(lines[0] + "\n" + json.dumps(obj) + "\n")
        with pytest.raises(ManifestError, match=msg) as e:
            read_manifest(p)
        assert "m.jsonl:2:" in str(e.value)
    obj = json.loads(lines[0])
    del obj["audio"]
    p.write_text(json.dumps(obj) + "\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:1: missing field"):
        read_manifest(p)
    p.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(ManifestError, match="duplicate id"):
        read_manifest(p)
    p.write_text(lines[0] + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"m.jsonl:2: expected a JSON object"):
        read_manifest(p)

"""Sources whose clips the official collection scripts assembled; each is rebuilt the same way.

Every piece is read with ``alarm.audio`` (channels averaged), resampled to 16 kHz when it is at another
rate (soxr here, torchaudio's sinc resampler there: the samples differ by resampler noise, the lengths
agree), then the pieces are joined as the official script joined them:

- VoxCeleb1 pairs: the two files of the pair, concatenated;
- MELD and DailyTalk dialogue windows: the utterances listed in ``unique_id_2``, concatenated in that order;
- AliMeeting meeting windows: a meeting's TextGrid intervals (every speaker, sorted by start) grouped into
  windows of >= 40 s, each interval cut from its speaker's near-field recording and placed at its offset;
- MUCS segments: cut from the long recording by the Kaldi ``segments`` file.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from alarm.extras import check_installed

from .sources import BUILT_RATE, BuiltSource, ClipMissing, component, split_exact

__all__ = ["VoxCeleb1", "MELD", "DailyTalk", "AliMeeting", "MUCS", "read_piece"]


def read_piece(path: Path, start: Optional[float] = None, end: Optional[float] = None,
               to_frame: Callable[[float], int] = round) -> np.ndarray:
    """Samples ``[to_frame(start * rate), to_frame(end * rate))`` of an audio file (the whole file by
    default; the end is clamped to the file's length): float32 mono at :data:`BUILT_RATE`. Raises
    ClipMissing ("missing" or "unreadable") naming the file."""
    import torch

    from alarm.audio import audio_info, load_audio, resample

    if not path.is_file():
        raise ClipMissing("audio file not found", str(path))
    try:
        frames, rate = audio_info(path)
        first = to_frame(start * rate) if start is not None else 0
        stop = min(to_frame(end * rate), frames) if end is not None else frames
        if stop <= first:
            return np.zeros(0, np.float32)
        x, _ = load_audio(path, first / rate, (stop - first) / rate)
    except ValueError as e:
        raise ClipMissing(str(e), str(path), status="unreadable") from None
    if rate != BUILT_RATE:
        x = resample(torch.from_numpy(x), rate, BUILT_RATE).numpy()
    return x


class VoxCeleb1(BuiltSource):
    name = "voxceleb1"
    ids = "first file / second file of the pair, relative to wav/ (<speaker>/<video>/<n>.wav)"
    layout = "wav/<speaker>/<video>/<n>.wav  (VoxCeleb1 dev: vox1_dev_wav.zip)"
    top = "wav"

    def build(self, uid1, uid2):
        files = []
        for rel in (uid1, uid2):
            speaker, video, name = (component(c, "path part") for c in split_exact(rel, "/", 3, "file"))
            files.append(self.root / speaker / video / name)
        return np.concatenate([read_piece(f) for f in files])


def window_utterances(uid1: str, uid2: str) -> List[str]:
    """Utterance ids of a dialogue window ``<dialogue>_<window>_<utterance>_<utterance>...``."""
    if not uid2.startswith(f"{uid1}_"):
        raise ValueError(f"window id {uid2!r} does not start with its dialogue id {uid1!r}")
    window, *utterances = uid2[len(uid1) + 1:].split("_")
    if not window.isdigit() or not utterances or not all(u.isdigit() for u in utterances):
        raise ValueError(f"window id {uid2!r} is not <dialogue>_<window>_<utterance ids joined by _>")
    return utterances


class MELD(BuiltSource):
    name = "meld"
    ids = "dialogue id / <dialogue>_<window>_<utterance ids joined by _>"
    layout = ("MELD.Raw/train_splits/dia<dialogue>_utt<utterance>.flac (or .wav): the audio track of each "
              "dia<d>_utt<u>.mp4 of train.tar.gz, extracted beside it (docs/data.md)")
    top = "MELD.Raw"

    def build(self, uid1, uid2):
        dialogue = component(uid1, "dialogue id")
        pieces = []
        for utterance in window_utterances(uid1, uid2):
            stem = self.root / "train_splits" / f"dia{dialogue}_utt{utterance}"
            audio = next((p for p in (stem.with_suffix(".flac"), stem.with_suffix(".wav")) if p.is_file()), None)
            if audio is None:
                video = stem.with_suffix(".mp4")
                if video.is_file():
                    raise ClipMissing("MELD clips are MP4 video: extract their audio tracks first (docs/data.md)",
                                      str(video))
                raise ClipMissing("audio file not found", str(stem.with_suffix(".flac")))
            pieces.append(read_piece(audio))
        return np.concatenate(pieces)


class DailyTalk(BuiltSource):
    name = "dailytalk"
    ids = "dialogue id / <dialogue>_<window>_<utterance ids joined by _>"
    layout = "dailytalk/data/<dialogue>/<utterance>_<speaker>_d<dialogue>.wav"
    top = "dailytalk"

    def build(self, uid1, uid2):
        dialogue = component(uid1, "dialogue id")
        folder = self.root / "data" / dialogue
        pieces = []
        for utterance in window_utterances(uid1, uid2):
            found = sorted(folder.glob(f"{utterance}_*_d{dialogue}.wav"))
            if not found:
                raise ClipMissing("audio file not found", str(folder / f"{utterance}_<speaker>_d{dialogue}.wav"))
            pieces.append(read_piece(found[0]))
        return np.concatenate(pieces)


@dataclass(frozen=True)
class _Interval:
    start: float
    end: float
    recording: str  # <room>_<meeting>_<gender>_<speaker>


class AliMeeting(BuiltSource):
    name = "alimeeting"
    ids = ("<room>_<meeting> / <room>_<meeting>_<window>_<speaker numbers of its intervals joined by _>; "
           "intervals with equal start times keep the order of the sorted file names")
    layout = "Train_Ali_near/{audio_dir,textgrid_dir}/<room>_<meeting>_<gender>_<speaker>.{wav,TextGrid}"
    top = "Train_Ali_near"
    duration_rule = "at_least"
    WINDOW_SECONDS = 40.0

    def __init__(self, root, clips_dir=None):
        check_installed("praatio", "--audio-root alimeeting (reading its TextGrids)", "praatio", extra="corpora")
        super().__init__(root, clips_dir)
        self._windows: Dict[str, Dict[str, Tuple[_Interval, ...]]] = {}
        self._lock = threading.Lock()

    def windows(self, meeting: str) -> Dict[str, Tuple[_Interval, ...]]:
        """The windows of one meeting by their id, as the official script cut them (cached)."""
        with self._lock:
            if meeting not in self._windows:
                self._windows[meeting] = self._plan(meeting)
            return self._windows[meeting]

    def _plan(self, meeting: str) -> Dict[str, Tuple[_Interval, ...]]:
        from praatio import textgrid

        grids = sorted((self.root / "textgrid_dir").glob(f"{component(meeting, 'meeting')}_*.TextGrid"))
        intervals = []
        for grid in grids:
            try:
                tiers = textgrid.openTextgrid(str(grid), includeEmptyIntervals=True, reportingMode="silence").tiers
            except Exception as e:  # praatio raises many kinds of errors on a malformed file
                raise ClipMissing(f"cannot read TextGrid: {e}", str(grid), status="unreadable") from None
            if tiers:
                intervals += [_Interval(float(e.start), float(e.end), grid.stem) for e in tiers[0].entries]
        intervals.sort(key=lambda iv: iv.start)  # stable: equal starts keep the file order
        windows: Dict[str, Tuple[_Interval, ...]] = {}
        current: List[_Interval] = []

        def close() -> None:
            speakers = "_".join(iv.recording.split("_")[-1][len("SPK"):] for iv in current)
            windows[f"{meeting}_{len(windows)}_{speakers}"] = tuple(current)
            current.clear()

        for iv in intervals:
            current.append(iv)
            if iv.end - current[0].start >= self.WINDOW_SECONDS:
                close()
        if current and current[-1].end - current[0].start != 0:
            close()
        return windows

    def build(self, uid1, uid2):
        window = self.windows(uid1).get(uid2)
        if window is None:
            raise ClipMissing(f"no window {uid2!r} in the TextGrids of meeting {uid1!r}",
                              str(self.root / "textgrid_dir"))
        origin = window[0].start
        placed = [(round((iv.start - origin) * BUILT_RATE),
                   read_piece(self.root / "audio_dir" / f"{iv.recording}.wav", iv.start, iv.end)) for iv in window]
        canvas = np.zeros(max(offset + x.size for offset, x in placed), np.float32)
        for offset, x in placed:  # later intervals overwrite overlaps, as in the official script
            canvas[offset:offset + x.size] = x
        return canvas


class MUCS(BuiltSource):
    name = "mucs"
    ids = "segment id / recording name (both from the Kaldi segments file)"
    layout = ("<Hindi-English|Bengali-English>/train/transcripts/segments and "
              "<Hindi-English|Bengali-English>/train/<recording>.wav  (OpenSLR 104 train archives)")
    LANGUAGES = ("Hindi-English", "Bengali-English")

    def __init__(self, root, clips_dir=None):
        super().__init__(root, clips_dir)
        self._segments: Optional[Dict[str, Tuple[Path, str, float, float]]] = None
        self._lock = threading.Lock()

    def _index(self) -> Dict[str, Tuple[Path, str, float, float]]:
        index = {}
        for language in self.LANGUAGES:
            folder = self.root / language / "train"
            table = folder / "transcripts" / "segments"
            if not table.is_file():
                continue
            for line in table.read_text(encoding="utf-8").splitlines():
                fields = line.split()
                if len(fields) == 4:
                    index.setdefault(fields[0], (folder, fields[1], float(fields[2]), float(fields[3])))
        return index

    def build(self, uid1, uid2):
        with self._lock:
            if self._segments is None:
                self._segments = self._index()
        found = self._segments.get(uid1)
        if found is None:
            raise ClipMissing(f"segment {uid1!r} is in no <language>/train/transcripts/segments file",
                              str(self.root))
        folder, recording, start, end = found
        if recording != uid2:
            raise ClipMissing(f"segment {uid1!r} belongs to recording {recording!r}, not {uid2!r}")
        return read_piece(folder / f"{recording}.wav", start, end, to_frame=int)

"""Sources whose clips are files of the official distribution: one small class per layout.

Each class states the ids the official collection script gave a clip (``ids``) and the tree it expects
under the ``--audio-root`` folder (``layout``: the dataset's own archive, extracted as published).
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Optional

from .sources import FileSource, IndexedSource, component, split_exact

__all__ = ["LibriSpeech", "MLS", "VCTK", "NoisyVCTK", "VocalSound", "NISQA", "ASVspoof19", "ASVspoof5", "ESC50",
           "FSD50K", "Clotho", "GTZAN", "Mridangam", "NSynth", "OpenSinger", "SingMOS", "FMA", "LibriMix",
           "AudioSet", "AudioCaps", "youtube_id"]


def _after(value: str, prefix: str, what: str) -> str:
    if not value.startswith(prefix):
        raise ValueError(f"{what} {value!r} does not start with {prefix!r}")
    return component(value[len(prefix):], what)


class LibriSpeech(FileSource):
    name = "librispeech"
    ids = "speaker id / utterance id <speaker>-<chapter>-<n>"
    layout = "LibriSpeech/{train-clean-100,train-clean-360,train-other-500}/<speaker>/<chapter>/<utterance>.flac"
    top = "LibriSpeech"
    SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")

    def paths(self, uid1, uid2):
        utterance = component(uid2, "utterance id")
        speaker, chapter, _ = split_exact(utterance, "-", 3, "utterance id")
        return [f"{subset}/{speaker}/{chapter}/{utterance}.flac" for subset in self.SUBSETS]


class MLS(FileSource):
    name = "mls"
    ids = "language (german, dutch, french, spanish, italian, portuguese, polish) / utterance id <speaker>_<book>_<n>"
    layout = "mls_<language>_opus/train/audio/<speaker>/<book>/<utterance>.opus"

    def paths(self, uid1, uid2):
        utterance = component(uid2, "utterance id")
        speaker, book, _ = split_exact(utterance, "_", 3, "utterance id")
        return [f"mls_{component(uid1, 'language')}_opus/train/audio/{speaker}/{book}/{utterance}.opus"]


class VCTK(FileSource):
    name = "vctk"
    ids = "speaker number (225) / file id (p225_001)"
    layout = "VCTK-Corpus/wav48/p<speaker>/<file id>.wav  (VCTK 0.80)"
    top = "VCTK-Corpus"

    def paths(self, uid1, uid2):
        return [f"wav48/p{component(uid1, 'speaker')}/{component(uid2, 'file id')}.wav"]


class NoisyVCTK(FileSource):
    name = "noisy_vctk"
    ids = "<trainset_28spk|trainset_56spk>_<file id> / <noise>_<snr> (noisy copy) or clean_<snr> (clean copy)"
    layout = "{noisy,clean}_trainset_{28,56}spk_wav/<file id>.wav"
    TRAIN_SETS = ("trainset_28spk", "trainset_56spk")

    def paths(self, uid1, uid2):
        for train_set in self.TRAIN_SETS:
            if uid1.startswith(train_set + "_"):
                file_id = component(uid1[len(train_set) + 1:], "file id")
                kind = "clean" if uid2.startswith("clean_") else "noisy"
                return [f"{kind}_{train_set}_wav/{file_id}.wav"]
        raise ValueError(f"{uid1!r} does not start with one of {self.TRAIN_SETS}")


class VocalSound(FileSource):
    name = "vocalsound"
    ids = "speaker id / file name (f0003_0_cough.wav)"
    layout = "audio_16k/<file name>  (vs_release_16k.zip)"

    def paths(self, uid1, uid2):
        return [f"audio_16k/{component(uid2, 'file name')}"]


class NISQA(FileSource):
    name = "nisqa"
    ids = "file name / database (NISQA_TRAIN_SIM or NISQA_TRAIN_LIVE)"
    layout = "NISQA_Corpus/{NISQA_TRAIN_SIM,NISQA_TRAIN_LIVE}/deg/<file name>"
    top = "NISQA_Corpus"

    def paths(self, uid1, uid2):
        return [f"{component(uid2, 'database')}/deg/{component(uid1, 'file name')}"]


class ASVspoof19(FileSource):
    name = "asvspoof19"
    ids = "speaker id / file name (LA_T_1000137)"
    layout = "LA/ASVspoof2019_LA_train/flac/<file name>.flac"
    top = "LA"

    def paths(self, uid1, uid2):
        stem = component(uid2[:-5] if uid2.endswith(".flac") else uid2, "file name")
        return [f"ASVspoof2019_LA_train/flac/{stem}.flac"]


class ASVspoof5(FileSource):
    name = "asvspoof5"
    ids = "file id (T_0000000000) / speaker id"
    layout = "flac_T/<file id>.flac  (flac_T_a*.tar extracted together; ASVspoof5.train.tsv beside)"

    def paths(self, uid1, uid2):
        return [f"flac_T/{component(uid1, 'file id')}.flac"]


class ESC50(FileSource):
    name = "esc50"
    ids = "file name (1-100032-A-0.wav) / source file id"
    layout = "ESC-50-master/audio/<file name>"
    top = "ESC-50-master"

    def paths(self, uid1, uid2):
        return [f"audio/{component(uid1, 'file name')}"]


class FSD50K(FileSource):
    name = "fsd50k"
    ids = "clip id (fname of dev.csv) / 'labels: <labels>'"
    layout = "FSD50K.dev_audio/<clip id>.wav"

    def paths(self, uid1, uid2):
        return [f"FSD50K.dev_audio/{component(uid1, 'clip id')}.wav"]


class Clotho(FileSource):
    name = "clotho"
    ids = "file name / caption_1 ... caption_5 (five rows share one file)"
    layout = "development/<file name>  (Clotho v1 clotho_audio_development.7z)"
    _CAPTION = re.compile(r"caption_[1-5]")

    def paths(self, uid1, uid2):
        if not self._CAPTION.fullmatch(uid2):
            raise ValueError(f"caption id {uid2!r} is not caption_1 ... caption_5")
        return [f"development/{component(uid1, 'file name')}"]


class GTZAN(FileSource):
    name = "gtzan"
    ids = "'genre: <genre>' / file name (blues.00000.wav)"
    layout = ("Data/genres_original/<genre>/<genre>.<n>.wav (the Kaggle copy), or genres/<genre>/<genre>.<n>.au "
              "(the original archive)")

    def paths(self, uid1, uid2):
        genre = _after(uid1, "genre: ", "genre")
        name = component(uid2, "file name")
        stem = name[:-4] if name.endswith(".wav") else name
        return [f"Data/genres_original/{genre}/{name}", f"genres_original/{genre}/{name}", f"genres/{genre}/{stem}.au"]


class Mridangam(FileSource):
    name = "mridangam"
    ids = "'tonic: <tonic>' / file name"
    layout = "mridangam_stroke_1.5/<tonic>/<file name>"
    top = "mridangam_stroke_1.5"

    def paths(self, uid1, uid2):
        return [f"{_after(uid1, 'tonic: ', 'tonic')}/{component(uid2, 'file name')}"]


class NSynth(FileSource):
    name = "nsynth"
    ids = "note name (bass_acoustic_000-024-025) / note id"
    layout = "nsynth-train/audio/<note name>.wav  (nsynth-train.jsonwav.tar.gz)"
    top = "nsynth-train"

    def paths(self, uid1, uid2):
        return [f"audio/{component(uid1, 'note name')}.wav"]


class OpenSinger(IndexedSource):
    name = "opensinger"
    ids = "'gender: Male' or 'gender: Female' / file name"
    layout = "OpenSinger/{ManRaw,WomanRaw}/<singer>_<song>/<file name>.wav"
    top = "OpenSinger"
    _FOLDERS = {"Male": "ManRaw", "Female": "WomanRaw"}

    def file_key(self, rel: PurePosixPath) -> Optional[str]:
        parts = rel.parts
        return f"{parts[0]}/{parts[2]}" if len(parts) == 3 and parts[0] in self._FOLDERS.values() else None

    def row_key(self, uid1, uid2):
        gender = _after(uid1, "gender: ", "gender")
        if gender not in self._FOLDERS:
            raise ValueError(f"gender {gender!r} is not Male or Female")
        return f"{self._FOLDERS[gender]}/{component(uid2, 'file name')}"


class SingMOS(FileSource):
    name = "singmos"
    ids = "file id / system id"
    layout = "wavs/<file id>.wav  (the TangRain/SingMOS dataset repository; info/ beside)"

    def paths(self, uid1, uid2):
        return [f"wavs/{component(uid1, 'file id')}.wav"]


class FMA(FileSource):
    name = "fma"
    ids = "6-digit track id / '<artist> - <title>'"
    layout = "fma_large/<first 3 digits>/<track id>.mp3  (fma_large.zip; read through libsndfile >= 1.1)"
    _TRACK = re.compile(r"[0-9]{6}")

    def paths(self, uid1, uid2):
        if not self._TRACK.fullmatch(uid1):
            raise ValueError(f"track id {uid1!r} is not 6 digits")
        return [f"fma_large/{uid1[:3]}/{uid1}.mp3"]


class LibriMix(FileSource):
    name = "librimix"
    ids = "'<train-100|train-360>_mix_clean' / mixture id (its LibriSpeech utterance ids joined by _)"
    layout = ("Libri{2,3}Mix/wav16k/max/{train-100,train-360}/mix_clean/<mixture id>.wav  (LibriMix's "
              "create_librimix_from_metadata.py, 16 kHz, max mode)")
    duration_rule = "at_least"

    def paths(self, uid1, uid2):
        subset = uid1[:-len("_mix_clean")] if uid1.endswith("_mix_clean") else ""
        if subset not in ("train-100", "train-360"):
            raise ValueError(f"partition {uid1!r} is not train-100_mix_clean or train-360_mix_clean")
        speakers = len(uid2.split("_"))
        if speakers not in (2, 3):
            raise ValueError(f"mixture id {uid2!r} does not join 2 or 3 utterance ids")
        return [f"Libri{speakers}Mix/wav16k/max/{subset}/mix_clean/{component(uid2, 'mixture id')}.wav"]


_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")


def youtube_id(stem: str) -> Optional[str]:
    """The YouTube id a file stem names: ``<id>``, ``Y<id>`` (AudioSet's own naming), or either followed by
    ``_<start>...`` or ``.<...>``; None when the stem names none."""
    for candidate in (stem, stem[1:] if stem.startswith("Y") else ""):
        head = candidate[:11]
        if _YOUTUBE_ID.fullmatch(head) and (len(candidate) == 11 or candidate[11] in "_."):
            return head
    return None


class _YouTubeClips(IndexedSource):
    """Clips downloaded from YouTube, one file per video id, anywhere under the root."""

    layout = ("any folders; one file per clip named <YouTube id>.<ext>, Y<YouTube id>.<ext>, or either with a "
              "_<start>[_<end>] suffix (wav, flac, mp3, ogg)")

    def file_key(self, rel: PurePosixPath) -> Optional[str]:
        return youtube_id(rel.stem)

    def row_key(self, uid1, uid2):
        vid = youtube_id(uid2)
        if vid is None:
            raise ValueError(f"{uid2!r} names no YouTube id")
        return vid


class AudioSet(_YouTubeClips):
    name = "audioset"
    ids = "webdataset key / YouTube id"


class AudioCaps(_YouTubeClips):
    name = "audiocaps"
    ids = "audiocap id / YouTube id"

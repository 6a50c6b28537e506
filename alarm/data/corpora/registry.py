"""Every ``dataset_name`` of the published corpora and its resolver (``alarm data sources`` prints this table).

``SPLIT_DATASETS`` are the 31 audio datasets the official recipe split itself (seed-123 permutation, first
10 % validation) and filtered (clips under 60 s, targets of 100-612 tokens); HeySQuAD comes with its own
train/validation split and InstructS2S is train only.
"""
from __future__ import annotations

from typing import Dict, Tuple, Type

from . import built, layouts
from .sources import MapOnly, Source

__all__ = ["SOURCES", "SPLIT_DATASETS", "ALIASES", "NO_CONTEXT_DATASETS", "source_class", "names_of"]


class CAMEO(MapOnly):
    name = "cameo"
    ids = "CAMEO subset (crema_d, ravdess, ...) / file_id"
    layout = "amu-cai/CAMEO (the audio is inside its parquet files): export the clips, list them in --audio-map"


class GLOBEv3(MapOnly):
    name = "globe_v3"
    ids = "common_voice_path / common_voice_sentence_id (rows whose labels were not predicted)"
    layout = "MushanW/GLOBE_V3 (audio inside its parquet files; not the Common Voice originals): --audio-map"


class ASCEND(MapOnly):
    name = "ascend"
    ids = "id / path (columns of the CAiRE/ASCEND train split)"
    layout = "CAiRE/ASCEND (audio inside its parquet files): --audio-map"


class DisfluencySpeech(MapOnly):
    name = "disfluencyspeech"
    ids = "the transcript / 'annotations: <special annotations>'"
    layout = "amaai-lab/DisfluencySpeech (audio inside its parquet files): --audio-map"


class SonicMaster(MapOnly):
    name = "sonicmaster"
    ids = "id / the metadata's name (train split)"
    layout = "amaai-lab/SonicMasterDataset (the degraded audio inside its files): --audio-map"


class AMI(MapOnly):
    name = "amicorpus"
    ids = "meeting id / <meeting>_<window>_<speaker ids joined by _>"
    layout = ("40 s windows stitched from the edinburghcstr/ami headset segments (no file ids in the official "
              "distribution): "
              "build them with the official amicorpus.py and list them in --audio-map")
    duration_rule = "at_least"


class HeySQuAD(MapOnly):
    name = "heysquad_human"
    ids = "SQuAD question id / is_impossible (True or False)"
    layout = "yijingwu/HeySQuAD_human (audio inside its parquet files): --audio-map"
    duration_rule = "none"


class InstructS2S(MapOnly):
    name = "instructs2s"
    ids = "conversation id / index of the turn in the conversation"
    layout = ("ICTNLP/InstructS2S-200K en/wav/<folder>/<file> named by each turn's 'speech' field: list the "
              "turns in --audio-map")
    duration_rule = "none"


_ORDERED: Tuple[Type[Source], ...] = (
    # speech (the official combined_dataset.py order)
    CAMEO, GLOBEv3, layouts.VCTK, layouts.VocalSound, ASCEND, DisfluencySpeech, layouts.NISQA, built.MUCS,
    layouts.MLS, layouts.LibriSpeech, layouts.ASVspoof19, layouts.ASVspoof5, layouts.NoisyVCTK,
    # complicated speech
    built.VoxCeleb1, built.AliMeeting, AMI, built.MELD, built.DailyTalk, layouts.LibriMix,
    # events
    layouts.AudioCaps, layouts.Clotho,
    # music
    layouts.GTZAN, layouts.OpenSinger, layouts.SingMOS, layouts.Mridangam, layouts.NSynth, layouts.FMA, SonicMaster,
    # environment
    layouts.ESC50, layouts.FSD50K, layouts.AudioSet,
    # instructions
    HeySQuAD, InstructS2S,
)

#: dataset_name -> resolver class.
SOURCES: Dict[str, Type[Source]] = {cls.name: cls for cls in _ORDERED}
#: The 31 audio datasets the official recipe split and filtered itself.
SPLIT_DATASETS: Tuple[str, ...] = tuple(cls.name for cls in _ORDERED if cls not in (HeySQuAD, InstructS2S))
#: Other names of a source in the corpora (the filtered HeySQuAD rows carry their filtered copy's name).
ALIASES: Dict[str, str] = {"heysquad_human_filtered": "heysquad_human"}
#: Datasets whose rows also train without a prompt on ``llm_answer_no_context`` (the published recipe's
#: "NoContext" copy: the question is spoken in the audio).
NO_CONTEXT_DATASETS = frozenset({"heysquad_human", "heysquad_human_filtered"})


def source_class(dataset_name: str) -> Type[Source]:
    """The resolver class of a corpus ``dataset_name`` (aliases included); KeyError when unknown."""
    return SOURCES[ALIASES.get(dataset_name, dataset_name)]


def names_of(dataset_name: str) -> Tuple[str, ...]:
    """``dataset_name`` and the canonical name it aliases, as looked up in ``--audio-map``."""
    canonical = ALIASES.get(dataset_name, dataset_name)
    return (dataset_name,) if canonical == dataset_name else (dataset_name, canonical)

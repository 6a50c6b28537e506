"""The ALARM model: frozen audio encoders, adapters, fusion (sum, concat, CA, P, E), splicing and a frozen
Qwen3, run in a padded or a packed layout (see alarm_model.py and layout.py)."""
from .alarm_model import ALARMEnsemble, ALARMModel, ALARMOutput, AudioSide
from .batch import ModelBatch
from .config import ALARMConfig, EncoderSpec, muq_large, sslam, w2v_bert_2, whisper_large_v3
from .encoders import AudioEncoder, HiddenStatesEncoder, register_encoder
from .muq import MuQAudioEncoder  # registers the "muq" kind
from .sslam import SSLAMAudioEncoder  # registers the "sslam" kind
from .layout import Packed, Padded

__all__ = ["ALARMModel", "ALARMConfig", "ALARMEnsemble", "ALARMOutput", "AudioSide", "ModelBatch", "EncoderSpec",
           "AudioEncoder", "HiddenStatesEncoder", "MuQAudioEncoder", "SSLAMAudioEncoder", "register_encoder",
           "whisper_large_v3", "w2v_bert_2", "muq_large", "sslam", "Packed", "Padded"]

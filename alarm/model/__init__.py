"""The ALARM model: frozen audio encoders, adapters, fusion (sum, concat, CA, P, E), splicing and a frozen
Qwen3, with a padded reference path and a packed fast path (see alarm_model.py)."""
from .alarm_model import ALARMEnsemble, ALARMModel, ALARMOutput, AudioSide
from .batch import ModelBatch
from .config import ALARMConfig, EncoderSpec, muq_large, sslam, w2v_bert_2, whisper_large_v3
from .encoders import AudioEncoder, HiddenStatesEncoder, register_encoder

__all__ = ["ALARMModel", "ALARMConfig", "ALARMEnsemble", "ALARMOutput", "AudioSide", "ModelBatch", "EncoderSpec",
           "AudioEncoder", "HiddenStatesEncoder", "register_encoder", "whisper_large_v3", "w2v_bert_2", "muq_large",
           "sslam"]

"""Training configuration: a recipe file (YAML or JSON) plus ``key=value`` overrides -> ``TrainConfig``.

A recipe has six sections (every field documented on its dataclass below)::

    model:          # an ALARMConfig: either its fields, or a preset with overrides
      preset: full  #   "full" (4 encoders, stage B), "single" (one encoder, stage A), "tiny" (CPU, random)
      fusion: CA
      encoder_paths: {sslam: checkpoints/SSLAM_AS2M_Finetuned}  # full/single: local copies of encoders
    init_adapters:  # stage B: encoder name -> folder of a trained stage-A model (its adapter is copied, frozen)
      whisper: runs/al-whisper-r/final
    data: {train_manifest: data/train.jsonl, eval_fraction: 0.01, num_workers: 4}
    optim: {lr: 1.0e-4, warmup_steps: 1500, grad_clip: 1.0}
    batch: {max_tokens: 16384, accumulation: 4}
    run: {out_dir: runs/alarm-ca, epochs: 2, save_every: 2000}

Overrides use dotted keys and YAML values: ``optim.lr=3e-4 run.max_steps=100 model.fusion=P``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from alarm.model.config import ALARMConfig, muq_large, sslam, w2v_bert_2, whisper_large_v3

__all__ = ["DataConfig", "OptimConfig", "BatchConfig", "RunConfig", "TrainConfig", "load_config",
           "build_model_config", "RESUMABLE_CHANGES"]

# fields that may differ between a run and its resumption (they change neither the maths nor the data order)
RESUMABLE_CHANGES = {"run.max_steps", "run.log_every", "run.eval_every", "run.save_every", "run.keep_last",
                     "run.sample_every", "run.out_dir", "run.device", "run.progress", "data.num_workers",
                     "data.eval_batches", "run.plot", "optim.nonfinite_step_limit"}


@dataclass
class DataConfig:
    """train_manifest / eval_manifest: JSONL manifests (``alarm.data.manifest`` schema); without an eval
    manifest, ``eval_fraction`` of the training examples (chosen by a hash of their id) is held out.
    datasets: train (and evaluate) on these datasets only (the manifest's ``dataset`` field), each mapped to
    the fraction of its examples kept, the first ones in manifest order, e.g. ``{nsynth: 1.0, audioset: 0.2}``
    (the published stage-A subsets); empty: every dataset.
    max_seconds: longer clips are skipped (and reported). tokens_per_second: audio tokens per second of
    audio, used only to size packs (25 for every published adapter; divide by the pooling ratio).
    cache: folder of a frozen-feature cache built by ``alarm cache`` (None: run the encoders online).
    cache_verify: check each cached clip's audio content hash against its file at start-up.
    eval_batches: at most this many packs per evaluation."""
    train_manifest: str = ""
    eval_manifest: Optional[str] = None
    eval_fraction: float = 0.0
    datasets: Dict[str, float] = field(default_factory=dict)
    max_seconds: float = 60.0
    tokens_per_second: float = 25.0
    num_workers: int = 0
    cache: Optional[str] = None
    cache_verify: bool = True
    eval_batches: int = 50


@dataclass
class OptimConfig:
    """AdamW on the trainable (audio-side) parameters; linear warm-up then cosine decay to
    ``min_lr_ratio * lr``; gradients clipped to ``grad_clip`` (global L2 norm; 0 disables). A step whose loss
    or gradient is not finite is skipped (the weights are left alone); ``nonfinite_step_limit`` such steps in a
    row stop the run with an error naming the step and the last good checkpoint (0: never stop)."""
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 1500
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    nonfinite_step_limit: int = 5


@dataclass
class BatchConfig:
    """max_tokens: LLM tokens per micro-batch and rank (audio + text; a longer example gets a pack of its
    own, never split). attention_cost_tokens: when > 0, an example of L tokens costs L + L^2 / this value
    (attention grows quadratically). accumulation: micro-batches per rank per optimizer step."""
    max_tokens: int = 16384
    attention_cost_tokens: int = 0
    accumulation: int = 1


@dataclass
class RunConfig:
    """out_dir: run folder (checkpoints, metrics, plots). epochs / max_steps: stop at whichever comes
    first (max_steps None = all epochs). precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16"
    or "fp32"; trainable weights are always fp32. device: "auto", "cpu" or "cuda". eval_every,
    sample_every, save_every: in optimizer steps (0 disables). keep_last: complete checkpoints kept (>= 2).
    samples: prompts of held-out examples answered at every ``sample_every`` (rank 0)."""
    out_dir: str = "runs/alarm"
    epochs: int = 1
    max_steps: Optional[int] = None
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    log_every: int = 10
    eval_every: int = 0
    sample_every: int = 0
    samples: int = 2
    save_every: int = 1000
    keep_last: int = 2
    progress: str = "auto"
    plot: bool = True


@dataclass
class TrainConfig:
    """The whole recipe; ``model`` is kept as given (a dict) and turned into an ALARMConfig by
    ``build_model_config``."""
    model: Dict[str, Any] = field(default_factory=dict)
    init_adapters: Dict[str, str] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        self.data.datasets = self.data.datasets or {}  # an empty YAML key reads as None
        checks = [
            (bool(self.data.train_manifest), "data.train_manifest is required"),
            (0.0 <= self.data.eval_fraction < 1.0, "data.eval_fraction must be in [0, 1)"),
            (all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
                 for k, v in self.data.datasets.items()),
             "data.datasets maps dataset names to the fraction kept, in (0, 1]"),
            (self.data.max_seconds > 0, "data.max_seconds must be > 0"),
            (self.data.tokens_per_second > 0, "data.tokens_per_second must be > 0"),
            (self.data.num_workers >= 0, "data.num_workers must be >= 0"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (len(self.optim.betas) == 2 and all(0 <= b < 1 for b in self.optim.betas),
             "optim.betas must be two numbers in [0, 1)"),
            (self.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
            (0.0 <= self.optim.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]"),
            (self.optim.grad_clip >= 0, "optim.grad_clip must be >= 0"),
            (self.optim.nonfinite_step_limit >= 0, "optim.nonfinite_step_limit must be >= 0 (0: never stop)"),
            (self.run.seed >= 0, "run.seed must be >= 0"),
            (self.batch.max_tokens > 0, "batch.max_tokens must be > 0"),
            (self.batch.accumulation >= 1, "batch.accumulation must be >= 1"),
            (self.batch.attention_cost_tokens >= 0, "batch.attention_cost_tokens must be >= 0"),
            (self.run.epochs >= 1, "run.epochs must be >= 1"),
            (self.run.max_steps is None or self.run.max_steps >= 1, "run.max_steps must be >= 1 (or null)"),
            (self.run.precision in ("auto", "bf16", "fp32"), "run.precision must be auto, bf16 or fp32"),
            (self.run.device in ("auto", "cpu", "cuda"), "run.device must be auto, cpu or cuda"),
            (self.run.progress in ("auto", "bar", "lines"), "run.progress must be auto, bar or lines"),
            (self.run.keep_last >= 2, "run.keep_last must be >= 2 (an older complete checkpoint is kept while "
                                      "a newer one is written)"),
            (min(self.run.log_every, self.run.eval_every, self.run.save_every, self.run.sample_every) >= 0,
             "run.*_every must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad training config: {message}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> Dict[str, Any]:
        """``{"section.key": value}`` (model fields as ``model.<field>``)."""
        out = {}
        for section, values in self.to_dict().items():
            for k, v in values.items():
                out[f"{section}.{k}"] = v
        return out

    def fingerprint(self) -> str:
        """sha256 of everything that must not change when a run resumes."""
        kept = {k: v for k, v in self.flat().items() if k not in RESUMABLE_CHANGES}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 numbers: ``1e-4`` is a float (PyYAML's YAML 1.1 rules read it as a string)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml(text: str):
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def _check_types(name: str, cls, values: Dict[str, Any], where: str) -> None:
    """ValueError naming ``section.key`` when a value has the wrong type for its field's default."""
    for f in dataclasses.fields(cls):
        if f.name not in values or values[f.name] is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value = values[f.name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)) or f.type in ("Optional[int]", "Optional[float]"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
                ok = value.is_integer()
                values[f.name] = int(value) if ok else value
        elif isinstance(default, str) or f.type == "Optional[str]":
            ok = isinstance(value, str)
        elif isinstance(default, list):
            ok = isinstance(value, list)
        elif isinstance(default, dict):
            ok = isinstance(value, dict)
        else:
            ok = True
        if not ok:
            raise ValueError(f"{where}: {name}.{f.name} = {value!r} has the wrong type "
                             f"(expected {type(default).__name__ if default is not None else f.type})")


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "batch": BatchConfig, "run": RunConfig}


def _set_dotted(tree: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"override {key!r}: use section.key=value (e.g. optim.lr=3e-4)")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def load_config(path: Optional[str], overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a recipe (``.yaml``/``.yml``/``.json``; None = defaults only) and apply ``key=value`` overrides.

    Errors name the file (and the key) in one line.
    """
    tree: Dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"recipe not found: {path}")
        try:
            text = p.read_text(encoding="utf-8")
            tree = json.loads(text) if p.suffix == ".json" else _yaml(text)
        except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: not a valid {'JSON' if p.suffix == '.json' else 'YAML'} file: "
                             f"{str(e).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise ValueError(f"{path}: a recipe must be a mapping of sections")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        _set_dotted(tree, key.strip(), _yaml(raw))
    unknown = set(tree) - set(_SECTIONS) - {"model", "init_adapters"}
    where = path or "overrides"
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {sorted(unknown)}; known: model, init_adapters, "
                         f"{', '.join(_SECTIONS)}")
    kwargs: Dict[str, Any] = {"model": dict(tree.get("model") or {}),
                              "init_adapters": dict(tree.get("init_adapters") or {})}
    for name, cls in _SECTIONS.items():
        values = tree.get(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{where}: section {name!r} must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            raise ValueError(f"{where}: unknown key(s) {', '.join(f'{name}.{b}' for b in bad)}")
        values = dict(values)
        _check_types(name, cls, values, where)
        kwargs[name] = cls(**values)
    return TrainConfig(**kwargs)


def build_model_config(model: Dict[str, Any]) -> ALARMConfig:
    """The ALARMConfig of a recipe's ``model`` section (``preset`` + overrides, or plain ALARMConfig fields; an
    old ``path: fast | reference`` is read as ``layout: packed | padded``). ``encoder_paths`` (presets full
    and single): encoder name -> checkpoint folder (or hub id) replacing the preset's default."""
    fields = ALARMConfig.upgrade_legacy_fields(model)
    preset = fields.pop("preset", None)
    paths = fields.pop("encoder_paths", None) or {}
    if paths and preset not in ("full", "single"):
        raise ValueError("model.encoder_paths is for the full and single presets (give each encoder's path in "
                         "model.encoders otherwise)")
    if preset is None:
        return ALARMConfig.from_dict(fields)
    if preset == "tiny":
        return ALARMConfig.tiny(**fields)
    if preset == "full":
        cfg = ALARMConfig.full(fields.pop("fusion", "CA"), **fields)
    elif preset == "single":
        encoder = fields.pop("encoder", "whisper")
        specs = {"whisper": whisper_large_v3, "w2v-bert": w2v_bert_2, "muq": muq_large, "sslam": sslam}
        if encoder not in specs:
            raise ValueError(f"model.encoder {encoder!r}: the single-encoder preset knows {sorted(specs)}")
        cfg = ALARMConfig.single(specs[encoder](), **fields)
    else:
        raise ValueError(f"model.preset must be tiny, full or single, got {preset!r}")
    names = {e.name: e for e in cfg.encoders}
    for name, path in paths.items():
        if name not in names:
            raise ValueError(f"model.encoder_paths: no encoder {name!r} in this model (it has {sorted(names)})")
        if not isinstance(path, str) or not path:
            raise ValueError(f"model.encoder_paths.{name} must be a folder or hub id, got {path!r}")
        names[name].path = path
    return cfg

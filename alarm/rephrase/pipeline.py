"""The self-generation / self-rephrasing pipeline (docs/model.md, "Training targets"), sharded and resumable.

Input: a labels JSONL (``alarm.data.descriptions``). Items are cut, in input order, into shards of
``shard_size``. Each shard runs every stage for its items:
  pre-filter (duration >= max_duration, optionally missing audio) -> description -> prompt (given, or
  generated + checked, or a per-schema fallback; chosen with an RNG seeded by (seed, item id)) -> R0
  (``<start_audio>description<end_audio>`` + prompt; r0_max_tokens) -> rephrase (rules + few-shot, R0's
  tags renamed, thinking budget) -> post-process (last <answer>...</answer>, R0's think structure
  restored) -> target token filter [min_tokens, max_tokens].
Spoken-instruction items are answered from their transcript and not rephrased.

Output directory: ``run.json`` (settings; a rerun with different settings is refused),
``shards/shard-NNNNN.jsonl`` (kept records) and ``shards/shard-NNNNN.rejects.jsonl`` (dropped ids with
stage and reason), written atomically with the manifest shard last, so a crash loses at most the shard
in progress and a rerun skips finished shards; then ``manifest.jsonl`` (all kept records) and
``stats.json``. Several processes (one per GPU) can share an output dir with ``run(part, num_parts)``;
whichever finishes the last shard writes the manifest.
"""
from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from alarm.data.descriptions import LabelItem, read_label_items
from alarm.fileio import file_sha256
from alarm.data.jsonl import iter_jsonl, write_json_atomic, write_jsonl_atomic
from alarm.data.manifest import ManifestRecord, iter_manifest, write_manifest

from . import postprocess as pp
from . import prompts as P
from .backends import THINK_OPEN, Sampling, chat_prompt


@dataclass
class PipelineConfig:
    input: str
    output_dir: str
    shard_size: int = 256
    seed: int = 0
    generate_prompts: bool = False
    num_candidates: int = 20
    prompt_max_tokens: int = 1024
    prompt_thinking_budget: int = 512  # for thinking prompt writers; leaves room for the list itself
    checker_max_tokens: int = 512
    checker_thinking_budget: int = 256
    r0_max_tokens: int = 512
    thinking_budget: int = 1536
    rephrase_max_tokens: int = 2560
    min_tokens: int = 100
    max_tokens: int = 612
    max_duration: float = 60.0
    check_audio: bool = False
    sampling: Sampling = field(default_factory=Sampling)

    def fingerprint(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("output_dir")
        d["input_sha256"] = file_sha256(self.input)
        return d


@dataclass
class RunSummary:
    """Counts over finished shards; ``manifest`` is None while ``pending_shards`` (other parts) remain."""

    shards: int
    skipped_shards: int
    processed_shards: int
    pending_shards: int
    kept: int
    rejected: int
    manifest: Path | None




def _unfinished_thinking(prompt: str, text: str) -> bool:
    """The generation never left its thinking, so it has no answer part to read."""
    return prompt.endswith(THINK_OPEN) and pp.THINK_END not in text


def _shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / "shards" / f"shard-{k:05d}.jsonl", out / "shards" / f"shard-{k:05d}.rejects.jsonl"


def check_resumable(cfg: PipelineConfig, model_name: str) -> bool:
    """Whether ``cfg.output_dir`` already holds this run's ``run.json`` (False: no run there yet).

    Raises ValueError when it holds a run with different settings or an unreadable ``run.json``; nothing
    is written, so commands call it before loading a model."""
    want = {"config": cfg.fingerprint(), "model": model_name}
    path = Path(cfg.output_dir) / "run.json"
    if not path.exists():
        return False
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable run settings ({e}); use a new --output-dir") from None
    if not isinstance(have, dict) or not isinstance(have.get("config"), dict):
        raise ValueError(f"{path}: not a run settings file; use a new --output-dir")
    if have != json.loads(json.dumps(want)):
        diff = sorted(k for k in set(have["config"]) | set(want["config"])
                      if have["config"].get(k) != want["config"].get(k))
        if have.get("model") != model_name:
            diff.append("model")
        raise ValueError(f"{cfg.output_dir} holds a run with different settings ({', '.join(diff)}); "
                         "use a new --output-dir or the same settings to resume")
    return True


def _check_run_file(out: Path, cfg: PipelineConfig, model_name: str) -> None:
    if not check_resumable(cfg, model_name):
        write_json_atomic(out / "run.json", {"config": cfg.fingerprint(), "model": model_name})


class Pipeline:
    """Runs the stages with ``backend`` (the frozen reasoning LLM) and, for prompt writing/checking,
    ``prompt_backend`` (an instruct LLM; defaults to ``backend``)."""

    def __init__(self, cfg: PipelineConfig, backend, prompt_backend=None, model_name: str = ""):
        if not 0 < cfg.min_tokens <= cfg.max_tokens:
            raise ValueError(f"need 0 < min_tokens <= max_tokens, got {cfg.min_tokens}, {cfg.max_tokens}")
        if cfg.shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.cfg, self.backend = cfg, backend
        self.prompt_backend = prompt_backend or backend
        self.model_name = model_name
        self._sampling = cfg.sampling  # re-seeded per shard in process_shard

    # ---- stages on one shard -------------------------------------------------------------------------
    def _choose_prompts(self, items: list[LabelItem], descs: dict[str, str]) -> dict[str, tuple[str, str]]:
        """id -> (prompt, source) with source in given / spoken_instruction / generated / fallback."""
        chosen: dict[str, tuple[str, str]] = {}
        need = []
        for it in items:
            if it.prompt:
                chosen[it.id] = (it.prompt, "given")
            elif it.spoken_instruction:
                chosen[it.id] = (P.SPOKEN_INSTRUCTION_PROMPT, "spoken_instruction")
            else:
                need.append(it)
        valid: dict[str, list[str]] = {it.id: [] for it in need}
        if self.cfg.generate_prompts and need:
            valid = self._generate_prompts(need, descs)
        for it in need:
            rng = random.Random(f"{self.cfg.seed}:{it.id}")
            if valid[it.id]:
                chosen[it.id] = (rng.choice(valid[it.id]), "generated")
            else:
                chosen[it.id] = (rng.choice(P.FALLBACK_PROMPTS.get(it.schema, P.DEFAULT_FALLBACK)), "fallback")
        return chosen

    def _generate_prompts(self, items: list[LabelItem], descs: dict[str, str]) -> dict[str, list[str]]:
        cfg, be = self.cfg, self.prompt_backend
        writer = [chat_prompt(be.tokenizer, P.PROMPT_WRITER.format(n=cfg.num_candidates, description=descs[it.id]))
                  for it in items]
        outs = be.generate(writer, max_new_tokens=cfg.prompt_max_tokens, max_thinking_tokens=cfg.prompt_thinking_budget,
                           sampling=self._sampling, desc="prompt candidates")
        pairs = []
        for it, prompt, out in zip(items, writer, outs, strict=True):
            if _unfinished_thinking(prompt, out.text):
                continue
            for cand in pp.parse_candidates(out.text, cfg.num_candidates):
                if pp.prompt_passes_rules(cand):
                    pairs.append((it.id, cand))
        checks = [chat_prompt(be.tokenizer, P.PROMPT_CHECKER.format(description=descs[i], prompt=c)) for i, c in pairs]
        verdicts = be.generate(checks, max_new_tokens=cfg.checker_max_tokens,
                               max_thinking_tokens=cfg.checker_thinking_budget, sampling=Sampling(do_sample=False),
                               desc="prompt checks") if checks else []
        valid: dict[str, list[str]] = {it.id: [] for it in items}
        for (i, cand), prompt, v in zip(pairs, checks, verdicts, strict=True):
            if not _unfinished_thinking(prompt, v.text) and pp.checker_says_yes(v.text):
                valid[i].append(cand)
        return valid

    def process_shard(self, items: list[LabelItem], shard_index: int) -> tuple[list[ManifestRecord], list[dict]]:
        cfg = self.cfg
        self._sampling = dataclasses.replace(cfg.sampling, seed=cfg.sampling.seed + 7919 * shard_index)
        rejects: list[dict] = []

        def reject(it, stage, reason, **extra):
            rejects.append({"id": it.id, "dataset": it.dataset, "stage": stage, "reason": reason, **extra})

        live = []
        for it in items:
            if it.duration >= cfg.max_duration:
                reject(it, "prefilter", "too_long_audio", duration=it.duration)
            elif cfg.check_audio and not Path(it.audio).is_file():
                reject(it, "prefilter", "audio_missing")
            else:
                live.append(it)
        descs = {it.id: it.describe() for it in live}
        prompts = self._choose_prompts(live, descs)

        tok = self.backend.tokenizer
        r0_inputs = [chat_prompt(tok, it.transcript() if it.spoken_instruction
                                 else P.r0_user_turn(descs[it.id], prompts[it.id][0])) for it in live]
        r0_outs = self.backend.generate(r0_inputs, max_new_tokens=cfg.r0_max_tokens, sampling=self._sampling,
                                        desc="R0")
        r0 = {}
        for it, out in zip(live, r0_outs, strict=True):
            text, closed = pp.clean_r0(out.text)
            if text:
                r0[it.id] = (text, closed)
            else:
                reject(it, "r0", "empty_r0")

        to_rephrase = [it for it in live if it.id in r0 and not it.spoken_instruction]
        reph_inputs = [chat_prompt(tok, P.rephrase_user_turn(prompts[it.id][0], pp.r0_for_rephraser(r0[it.id][0])))
                       for it in to_rephrase]
        reph_outs = self.backend.generate(reph_inputs, max_new_tokens=cfg.rephrase_max_tokens,
                                          max_thinking_tokens=cfg.thinking_budget, sampling=self._sampling,
                                          desc="rephrase") if reph_inputs else []
        targets: dict[str, tuple[str, bool]] = {}
        for it, prompt, out in zip(to_rephrase, reph_inputs, reph_outs, strict=True):
            ans = None if _unfinished_thinking(prompt, out.text) else pp.extract_answer(pp.visible_answer(out.text))
            if ans is None:
                reject(it, "rephrase", "no_answer_tags", budget_hit=out.budget_hit, finished=out.finished)
                continue
            restored = pp.restore_structure(ans, r0[it.id][1])
            if restored is None:
                reject(it, "rephrase", "think_structure_mismatch")
                continue
            targets[it.id] = (restored, True)
        for it in live:
            if it.spoken_instruction and it.id in r0:
                targets[it.id] = (r0[it.id][0], False)

        kept = []
        for it in live:
            if it.id not in targets:
                continue
            target, rephrased = targets[it.id]
            ok, n = pp.within_token_range(tok, target, cfg.min_tokens, cfg.max_tokens)
            if not ok:
                reject(it, "filter", "target_too_short" if n < cfg.min_tokens else "target_too_long", tokens=n)
                continue
            kept.append(ManifestRecord(
                id=it.id, audio=it.audio, duration=it.duration, dataset=it.dataset, description=descs[it.id],
                prompt=prompts[it.id][0], target=target,
                meta={"target_tokens": n, "r0_closed": r0[it.id][1], "rephrased": rephrased,
                      "prompt_source": prompts[it.id][1]}))
        return kept, rejects

    # ---- the sharded run ---------------------------------------------------------------------------
    def run(self, part: int = 0, num_parts: int = 1) -> RunSummary:
        """Process this part's unfinished shards (shard k belongs to part ``k % num_parts``: run one process
        per GPU on the same output dir), then, once every shard is finished, write the manifest and stats."""
        if not 0 <= part < num_parts:
            raise ValueError(f"need 0 <= part < num_parts, got part={part}, num_parts={num_parts}")
        cfg = self.cfg
        out = Path(cfg.output_dir)
        items = read_label_items(cfg.input)
        out.mkdir(parents=True, exist_ok=True)
        _check_run_file(out, cfg, self.model_name)
        shards = [items[i:i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
        mine = [k for k in range(len(shards)) if k % num_parts == part]
        skipped = processed = 0
        for k in tqdm(mine, desc="shards", unit="shard"):
            manifest_path, rejects_path = _shard_paths(out, k)
            if manifest_path.exists():
                skipped += 1
                continue
            kept, rejects = self.process_shard(shards[k], k)
            write_jsonl_atomic(rejects_path, rejects)
            write_manifest(manifest_path, kept)  # last: its presence marks the shard finished
            processed += 1
        done = [k for k in range(len(shards)) if _shard_paths(out, k)[0].exists()]
        return self._merge(out, done, len(shards), skipped, processed)

    def _merge(self, out: Path, done: list[int], n_shards: int, skipped: int, processed: int) -> RunSummary:
        records, reasons = [], Counter()
        per_dataset: dict[str, Counter] = {}
        for k in done:
            manifest_path, rejects_path = _shard_paths(out, k)
            for rec in iter_manifest(manifest_path):
                records.append(rec)
                per_dataset.setdefault(rec.dataset, Counter())["kept"] += 1
            for _, rej in iter_jsonl(rejects_path):
                reasons[f"{rej['stage']}/{rej['reason']}"] += 1
                per_dataset.setdefault(rej["dataset"], Counter())["rejected"] += 1
        rejected = sum(reasons.values())
        pending = n_shards - len(done)
        manifest = None
        if not pending:
            manifest = out / "manifest.jsonl"
            write_manifest(manifest, records)
            write_json_atomic(out / "stats.json", {
                "items": len(records) + rejected, "kept": len(records), "rejected": rejected,
                "rejected_by_reason": dict(sorted(reasons.items())),
                "by_dataset": {d: dict(c) for d, c in sorted(per_dataset.items())}, "shards": n_shards})
        return RunSummary(n_shards, skipped, processed, pending, len(records), rejected, manifest)

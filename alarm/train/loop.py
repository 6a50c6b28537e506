"""The training loop: read it top to bottom.

One optimizer step = ``batch.accumulation`` packed micro-batches on every rank. Each micro-batch's loss is
the *sum* of its target-token cross-entropies; after the last one, the gradients of the trainable
parameters are all-reduced once (one flat buffer, ``torch.distributed``; a second 5-number all-reduce
carries the step's loss and counters) and divided by the *global* number of target tokens of the step,
so the result does not depend on how the step was split into micro-batches or ranks. Then: clip, skip the
step if the loss or gradient is not finite (its BatchNorm statistics undone too), AdamW, and the learning
rate of the next step (warm-up + cosine, a pure function of the step).

Trust (docs/checkpoints.md): a resumed run is the same run, bit for bit (every random stream a step draws
from is in the checkpoint or a pure function of the seed, the epoch and the rank); a damaged newest
checkpoint is reported and the newest intact one used; ``optim.nonfinite_step_limit`` non-finite steps in a
row, or non-finite weights after loading, stop the run with the step and the last good checkpoint; a run
never saves non-finite weights or reports "done" with them.

Why not DistributedDataParallel: only the small audio side trains, and a rank may legitimately have
nothing to run in a micro-batch (all its clips skipped); DDP requires every rank to run the same backward
for every reduction. One explicit all-reduce per step is what DDP with ``no_sync`` would do here anyway.
"""
from __future__ import annotations

import hashlib
import json
import math
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch.utils.data import DataLoader

from alarm.audio import load_audio
from alarm.fileio import CorruptFileError, atomic_write_json, file_sha256
from alarm.model import ALARMModel
from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX
from alarm.seeding import derived_seed

from .cache import FeatureCache, cache_key
from .checkpoint import (
    NonFiniteError,
    check_resumable,
    checkpoint_state,
    latest_checkpoint,
    load_checkpoint,
    nonfinite_state,
    resumable_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from .config import RESUMABLE_CHANGES, TrainConfig, build_model_config
from .data import ClipDataset, Example, Skip, collate, llm_tokens, load_examples, split_eval, write_skip_report
from .distributed import World, all_reduce_sum, barrier, broadcast_object, gather_lists, init_world, shutdown
from .metrics import MetricsLogger, plot_metrics
from .sampler import PackingSampler, example_cost, plan_epoch

__all__ = ["build_model", "learning_rate", "train"]


def build_model(cfg: TrainConfig) -> ALARMModel:
    """The ALARM model of a recipe, with stage-A adapters copied in (``init_adapters``)."""
    model = ALARMModel(build_model_config(cfg.model))
    for name, folder in cfg.init_adapters.items():
        model.load_adapter(name, folder)
    return model


def learning_rate(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """LR of optimizer step ``step`` (0-based): linear warm-up, then cosine to ``min_lr_ratio * lr``."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    span = max(1, total_steps - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / span)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _autocast(world: World, cfg: TrainConfig):
    bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and world.device.type == "cuda")
    return torch.autocast(world.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _peak_memory_gib(world: World) -> float:
    """Peak memory of this rank in GiB (2^30 bytes): the GPU's allocations on CUDA, else the process's resident set."""
    if world.device.type == "cuda":
        return torch.cuda.max_memory_allocated(world.device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _flat_grads(params: List[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def _average_running_stats(buffers: Dict[str, torch.Tensor], world: World) -> None:
    """Average the floating-point training buffers (BatchNorm running statistics) over ranks, in place: each
    rank updated them from its own micro-batches; afterwards every rank holds the same values."""
    floats = [b for b in buffers.values() if b.is_floating_point()]
    if not world.distributed or not floats:
        return
    flat = torch.cat([b.reshape(-1).double() for b in floats])
    all_reduce_sum(flat, world)
    flat /= world.world_size
    offset = 0
    for b in floats:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def _set_grads(params: List[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _loader(dataset, sampler, collate_fn, cfg: TrainConfig, world: World) -> DataLoader:
    """The DataLoader of the sampler's current epoch. Its base seed (torch derives each worker's seed from it)
    comes from its own generator seeded by ``(run.seed, epoch, rank)``: creating the iterator draws nothing
    from the global CPU generator, which the dropout masks use, so a run resumed mid-epoch draws the same
    masks as one that never stopped."""
    workers = cfg.data.num_workers
    generator = torch.Generator().manual_seed(derived_seed(cfg.run.seed, sampler.epoch, world.rank))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers,
                      pin_memory=world.device.type == "cuda", prefetch_factor=4 if workers else None,
                      persistent_workers=False, generator=generator)


def _next_pack(it):
    """``next(it)``; a CorruptFileError raised in a DataLoader worker (a damaged cache shard) keeps its own
    one-line message instead of the worker's traceback."""
    try:
        return next(it)
    except CorruptFileError as exc:
        lines = str(exc).strip().splitlines()
        if len(lines) > 1 and lines[0].startswith("Caught "):
            raise CorruptFileError(lines[-1].split(": ", 1)[-1]) from None
        raise


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _start_checkpoint(resume: str, run_dir: Path, world: World) -> Optional[Path]:
    """The checkpoint to resume from (None: a fresh start), chosen on rank 0 and told to every rank.

    "auto": the newest intact one (damaged newer ones reported, CorruptFileError when none is intact);
    "never": ValueError when the folder holds checkpoints; a folder: it, verified."""
    choice, failure = None, None
    if world.is_main:
        try:
            if resume == "auto":
                choice = resumable_checkpoint(str(run_dir), _say)
            elif resume == "never":
                if latest_checkpoint(str(run_dir)) is not None:
                    raise ValueError(f"{run_dir} already holds checkpoints; use --resume auto or another "
                                     "run.out_dir")
            else:
                choice = Path(resume)
                if not choice.is_dir():
                    raise ValueError(f"--resume {resume}: not a checkpoint folder")
                if not verify_checkpoint(choice):
                    _say(f"alarm train: checkpoint {choice} was written by an older version without checksums: "
                         "loaded unverified")
        except ValueError as exc:
            failure = exc
    told = broadcast_object((None if choice is None else str(choice), None if failure is None else str(failure)),
                            world, "choosing the checkpoint to resume from")
    if failure is not None:
        raise failure
    if told[1] is not None:
        raise ValueError(told[1])
    return None if told[0] is None else Path(told[0])


def _check_finite_start(trainable, buffers, optimizer, start: Optional[Path], run_dir: Path) -> None:
    """NonFiniteError when a weight, buffer or optimizer moment is not finite before the first step."""
    bad = nonfinite_state(trainable, buffers, optimizer)
    if bad is None:
        return
    if start is None:
        raise NonFiniteError(f"the {bad} is not finite before training (check init_adapters and the model's weights)")
    good = _intact_checkpoint_before(run_dir, start.name)
    raise NonFiniteError(f"step {int(start.name.split('-')[-1])}: checkpoint {start} holds a non-finite {bad} (written "
                         f"by a run that had diverged); last good checkpoint: "
                         + (f"{good} (--resume {good})" if good else "none"))


def _saved_before_streak(run_dir: Path, name: str) -> Optional[Path]:
    """The newest intact checkpoint older than ``name`` that was saved outside a streak of non-finite steps."""
    while True:
        folder = _intact_checkpoint_before(run_dir, name)
        if folder is None or checkpoint_state(folder).get("nonfinite_streak", 0) == 0:
            return folder
        name = folder.name


def _intact_checkpoint_before(run_dir: Path, name: str) -> Optional[Path]:
    """The newest intact checkpoint older than the one named ``name`` (None when there is none)."""
    try:
        return resumable_checkpoint(str(run_dir), say=lambda line: None, before=name)
    except CorruptFileError:
        return None


@torch.no_grad()
def evaluate(model: ALARMModel, examples: List[Example], prefix: List[int], header_len: int, rate: int,
             cfg: TrainConfig, world: World, cache) -> Dict[str, float]:
    """Mean target-token CE per dataset on held-out examples (all ranks; sums all-reduced)."""
    model.eval()
    results = {}
    by_dataset: Dict[str, List[Example]] = {}
    for e in examples:
        by_dataset.setdefault(e.dataset, []).append(e)
    for name in sorted(by_dataset):
        subset = by_dataset[name]
        dataset = ClipDataset(subset, rate, cfg.data.max_seconds, cache)
        costs = [llm_tokens(e, len(prefix), cfg.data.tokens_per_second, model.config.max_length) for e in subset]
        totals = torch.zeros(2, dtype=torch.float64, device=world.device)
        if len(subset) >= world.world_size:
            steps = plan_epoch(costs, cfg.batch.max_tokens, world.world_size, 1, seed=0, epoch=0)
            for rnd in steps[: cfg.data.eval_batches]:
                pack = collate(subset, prefix, header_len, rate)([dataset[i] for i in rnd[world.rank]])
                if pack.batch is None:
                    continue
                with _autocast(world, cfg):
                    out = model.forward_batch(pack.batch.to(world.device), reduction="sum")
                totals += torch.tensor([float(out.loss), out.n_targets], dtype=torch.float64, device=world.device)
        all_reduce_sum(totals, world)
        if totals[1] > 0:
            results[f"loss/{name}"] = float(totals[0] / totals[1])
    model.train()
    return results


def _samples(model: ALARMModel, examples: List[Example], n: int) -> List[dict]:
    """Answers of the model to the prompts of the first ``n`` examples (rank 0, greedy, short)."""
    out = []
    model.eval()
    for e in examples[:n]:
        try:  # a clip the model refuses (unreadable, too short) costs its sample, not the run (only rank 0 is here)
            wave, rate = load_audio(e.audio)
            answer = model.generate(wave, e.prompt, sampling_rate=rate, max_thinking_tokens=None, max_new_tokens=48,
                                    system_prompt=None, do_sample=False)  # the training layout: no system turn
        except (ValueError, OSError):
            continue
        out.append({"id": e.id, "prompt": e.prompt, "answer": answer["text"][0]})
    model.train()
    return out


def _data_fingerprint(examples: List[Example], cache_dir: Optional[str]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.id}|{len(e.suffix)}|{len(e.target)}|{e.duration}\n".encode())
    h.update(str(cache_dir).encode())
    return h.hexdigest()[:16]


def train(cfg: TrainConfig, resume: str = "auto", model: Optional[ALARMModel] = None) -> dict:
    """Run (or resume) training as the recipe says; returns the run summary (also ``<out_dir>/summary.json``).

    resume: "auto" (newest complete checkpoint in ``out_dir`` if any), "never" (refuse a folder that has
    checkpoints), or a checkpoint folder. ``model``: an already built model (else ``build_model(cfg)``).
    """
    world = init_world(cfg.run.device)
    try:
        return _train(cfg, resume, model, world)
    finally:
        shutdown(world)


def _train(cfg: TrainConfig, resume: str, model: Optional[ALARMModel], world: World) -> dict:
    run_dir = Path(cfg.run.out_dir)
    torch.manual_seed(cfg.run.seed + world.rank)
    model = (model if model is not None else build_model(cfg)).to(world.device)
    mcfg = model.config
    rate = mcfg.encoders[0].sample_rate
    prefix = model.tokenizer.encode(USER_PREFIX, add_special_tokens=False)
    header_len = len(model.tokenizer.encode(ASSISTANT_SUFFIX, add_special_tokens=False))

    # ---- data --------------------------------------------------------------------------------
    failure = None  # rank 0 tokenises once and the others read its cache; a failure there stops every rank
    tokens_dir, selected = str(run_dir / "tokens"), cfg.data.datasets
    if world.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            load_examples(cfg.data.train_manifest, model.tokenizer, cfg.data.max_seconds, tokens_dir, selected)
        except (ValueError, OSError) as exc:
            failure = exc
    if broadcast_object(None if failure is None else str(failure), world) is not None:
        raise failure if failure is not None else ValueError("rank 0 could not read the training data (see its log)")
    examples, skips = load_examples(cfg.data.train_manifest, model.tokenizer, cfg.data.max_seconds, tokens_dir,
                                    selected)
    if cfg.data.eval_manifest:
        train_ex, eval_ex = examples, load_examples(cfg.data.eval_manifest, model.tokenizer, cfg.data.max_seconds,
                                                    tokens_dir, selected)[0]
    else:
        train_ex, eval_ex = split_eval(examples, cfg.data.eval_fraction)
    budget_tokens = [llm_tokens(e, len(prefix), cfg.data.tokens_per_second, mcfg.max_length) for e in train_ex]
    fits = [len(prefix) + 2 + math.ceil(e.duration * cfg.data.tokens_per_second) + len(e.suffix) < mcfg.max_length
            for e in train_ex]
    skips += [Skip(e.id, e.audio, f"prompt and audio fill max_length {mcfg.max_length}: no target token left")
              for e, ok in zip(train_ex, fits, strict=True) if not ok]
    budget_tokens = [n for n, ok in zip(budget_tokens, fits, strict=True) if ok]
    train_ex = [e for e, ok in zip(train_ex, fits, strict=True) if ok]
    if not train_ex:
        raise ValueError(f"{cfg.data.train_manifest}: no trainable example (skipped: {len(skips)})")
    cache = _open_cache(cfg, model, train_ex, eval_ex, world) if cfg.data.cache else None
    costs = [example_cost(n, cfg.batch.attention_cost_tokens) for n in budget_tokens]
    sampler = PackingSampler(costs, cfg.batch.max_tokens, world.rank, world.world_size, cfg.batch.accumulation,
                             cfg.run.seed)
    schedule_steps = sampler.total_steps(cfg.run.epochs)  # the LR schedule's horizon: max_steps only stops early
    total_steps = schedule_steps if cfg.run.max_steps is None else min(schedule_steps, cfg.run.max_steps)
    dataset = ClipDataset(train_ex, rate, cfg.data.max_seconds, cache)
    # stage A's front ends: those made of device kernels run on the GPU inside the step; the others (all of them off
    # CUDA; MuQ's resampling and padding on CUDA) run in the collate function, i.e. in the DataLoader workers, off
    # the training process's path
    front_ends = model.worker_front_ends(world.device) if cache is None else None
    if front_ends is not None and world.is_main and cfg.data.num_workers == 0:
        print("alarm train: data.num_workers is 0, so the encoders' front ends run in the training process "
              "(set data.num_workers to compute them in DataLoader workers)", flush=True)
    collate_fn = collate(train_ex, prefix, header_len, rate, front_ends)

    # ---- optimizer and resume ------------------------------------------------------------------
    trainable, buffers = model.trainable_parameters(), model.training_buffers()
    params = list(trainable.values())
    if not params:
        raise ValueError("the model has no trainable parameter (check model.stage and init_adapters)")
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay, foreach=False)
    flat_cfg = cfg.flat()
    state = {"step": 0, "epoch": 0, "cursor": 0, "tokens": 0, "targets": 0, "audio_seconds": 0.0,
             "skipped_steps": 0, "skipped_clips": 0, "nonfinite_streak": 0}
    identity = {"world_size": world.world_size, "accumulation": cfg.batch.accumulation,
                "data_fingerprint": _data_fingerprint(train_ex, cfg.data.cache),
                "config_fingerprint": cfg.fingerprint(), "config": flat_cfg,
                "fingerprinted": sorted(k for k in flat_cfg if k not in RESUMABLE_CHANGES)}
    start = _start_checkpoint(resume, run_dir, world)
    if start is not None:
        check_resumable(checkpoint_state(start), identity)
        saved = load_checkpoint(start, world, trainable, buffers, optimizer)
        state.update({k: saved.get(k, state[k]) for k in state})  # nonfinite_streak: absent before it existed
    _check_finite_start(trainable, buffers, optimizer, start, run_dir)
    # the newest checkpoint saved outside a non-finite streak
    last_good = start if start is None or state["nonfinite_streak"] == 0 else _saved_before_streak(run_dir, start.name)
    sampler.load_state({"epoch": state["epoch"], "cursor": state["cursor"]})

    log = MetricsLogger(str(run_dir), total_steps, state["step"], world.is_main, cfg.run.progress)
    if world.is_main:
        n_train = sum(p.numel() for p in params)
        print(f"alarm train: {len(train_ex)} examples ({len(skips)} skipped), {len(eval_ex)} held out, "
              f"{world.world_size} rank(s) x {cfg.batch.accumulation} micro-batches/step, "
              f"{sampler.steps_per_epoch()} steps/epoch, "
              f"{total_steps} steps, {n_train:,} trainable parameters"
              + (f", resuming at step {state['step']} from {start}" if start is not None else ""), flush=True)
        for s in skips:
            log.log("skip", state["step"], id=s.id, reason=s.reason)
    all_skips = list(skips)

    # ---- the loop ------------------------------------------------------------------------------
    model.train()
    step = state["step"]
    last_eval = None
    while step < total_steps:
        it = iter(_loader(dataset, sampler, collate_fn, cfg, world))
        while sampler.cursor < sampler.steps_per_epoch() and step < total_steps:
            t_step = time.perf_counter()
            lr = learning_rate(step, cfg, schedule_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            n_micro = sampler.micro_batches(sampler.cursor)
            loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
            counts = [0, 0, 0.0, 0]  # targets, tokens, audio seconds, skipped clips
            before = {k: b.clone() for k, b in buffers.items()}  # a skipped step must not keep its BN statistics
            wait = 0.0
            for _ in range(n_micro):
                t_wait = time.perf_counter()
                pack = _next_pack(it)
                wait += time.perf_counter() - t_wait
                all_skips += pack.skips
                counts[3] += len(pack.skips)
                if pack.batch is None:
                    continue
                with _autocast(world, cfg):
                    out = model.forward_batch(pack.batch.to(world.device, non_blocking=True), reduction="sum")
                out.loss.backward()
                loss_sum += out.loss.detach()
                counts[0] += out.n_targets
                counts[1] += out.n_tokens
                counts[2] += pack.audio_seconds
            sampler.cursor += 1
            totals = torch.cat([loss_sum[None], torch.tensor(counts, dtype=torch.float64, device=world.device)])
            flat = _flat_grads(params)
            all_reduce_sum(flat, world, f"the gradient all-reduce of step {step + 1}")
            all_reduce_sum(totals, world, f"the loss all-reduce of step {step + 1}")
            _average_running_stats(buffers, world)
            flat /= totals[1].clamp(min=1.0)
            _set_grads(params, flat)
            # one device-to-host read per step for everything logged below
            totals = torch.cat([totals, torch.linalg.vector_norm(flat).to(totals.dtype)[None]]).tolist()
            n_targets = max(1.0, totals[1])
            grad_norm, loss = totals[5], totals[0] / n_targets
            if math.isfinite(loss) and math.isfinite(grad_norm):
                if cfg.optim.grad_clip > 0 and grad_norm > cfg.optim.grad_clip:
                    for p in params:
                        p.grad.mul_(cfg.optim.grad_clip / (grad_norm + 1e-6))
                optimizer.step()
                state["nonfinite_streak"] = 0
            else:
                state["skipped_steps"] += 1
                state["nonfinite_streak"] += 1
                with torch.no_grad():
                    for k, b in buffers.items():
                        b.copy_(before[k])
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state.update(step=step, epoch=sampler.epoch, cursor=sampler.cursor)
            state["tokens"] += int(totals[2])
            state["targets"] += int(totals[1])
            state["audio_seconds"] += totals[3]
            state["skipped_clips"] += int(totals[4])
            seconds = time.perf_counter() - t_step
            if cfg.run.log_every and (step % cfg.run.log_every == 0 or step == total_steps):
                log.log("train", step, loss=loss, grad_norm=grad_norm, lr=lr, tokens_per_s=float(totals[2]) / seconds,
                        audio_h_per_s=float(totals[3]) / 3600 / seconds, data_wait=wait / seconds,
                        peak_mem_gib=_peak_memory_gib(world), step_s=seconds, skipped_steps=state["skipped_steps"],
                        skipped_clips=state["skipped_clips"])
            streak, limit = state["nonfinite_streak"], cfg.optim.nonfinite_step_limit
            if limit and streak >= limit:  # every rank holds the same all-reduced loss: all stop here alike
                raise NonFiniteError(
                    f"step {step}: {streak} steps in a row had a non-finite loss or gradient (last: loss={loss:.4g} "
                    f"grad_norm={grad_norm:.4g}; optim.nonfinite_step_limit={limit}); they were skipped, nothing "
                    f"non-finite was saved; last good checkpoint (saved before the streak): {last_good or 'none'} "
                    "(damaged data, too high a learning rate, bf16 overflow?)")
            if eval_ex and cfg.run.eval_every and step % cfg.run.eval_every == 0:
                last_eval = evaluate(model, eval_ex, prefix, header_len, rate, cfg, world, cache)
                log.log("eval", step, **last_eval)
            if world.is_main and cfg.run.sample_every and step % cfg.run.sample_every == 0:
                for row in _samples(model, eval_ex or train_ex, cfg.run.samples):
                    log.log("sample", step, **row)
            if cfg.run.save_every and step % cfg.run.save_every == 0 and step < total_steps:
                saved_at = save_checkpoint(str(run_dir), step, world, trainable, buffers, optimizer,
                                           {**state, **identity}, cfg.run.keep_last)
                last_good = saved_at if state["nonfinite_streak"] == 0 else last_good
        if sampler.cursor >= sampler.steps_per_epoch():
            sampler.load_state({"epoch": sampler.epoch + 1, "cursor": 0})
            state.update(epoch=sampler.epoch, cursor=0)

    # ---- the end -------------------------------------------------------------------------------
    final_ckpt = save_checkpoint(str(run_dir), step, world, trainable, buffers, optimizer, {**state, **identity},
                                 cfg.run.keep_last)  # NonFiniteError before anything is written: no final/, no "done"
    all_skips = list({s.id: s for s in gather_lists(all_skips, world)}.values())  # each clip once
    summary = {"steps": step, "tokens": state["tokens"], "targets": state["targets"],
               "audio_hours": state["audio_seconds"] / 3600, "skipped_steps": state["skipped_steps"],
               "skipped_clips": len(all_skips), "checkpoint": str(final_ckpt), "model": str(run_dir / "final")}
    if eval_ex and cfg.run.eval_every:
        if last_eval is None or step % cfg.run.eval_every:  # the last step's eval, unless it just ran
            last_eval = evaluate(model, eval_ex, prefix, header_len, rate, cfg, world, cache)
            log.log("eval", step, **last_eval)
        summary["eval"] = last_eval
    if world.is_main:
        model.save_pretrained(str(run_dir / "final"))
        summary["skips_by_reason"] = write_skip_report(str(run_dir / "skipped.json"), all_skips)
        log.log("end", step, **{k: v for k, v in summary.items() if isinstance(v, (int, float))})
        log.close()
        if cfg.run.plot:
            summary["plot"] = plot_metrics(str(run_dir / "metrics.jsonl"), str(run_dir / "loss.png"))
        atomic_write_json(run_dir / "summary.json", summary)
    barrier(world)
    return summary


def _open_cache(cfg: TrainConfig, model: ALARMModel, examples: List[Example], held_out: List[Example],
                world: World) -> FeatureCache:
    """The run's feature cache, refused when built for other features or other audio, or when it lacks
    held-out examples (which would silently drop out of every evaluation)."""
    index_path = Path(cfg.data.cache) / "index.json"
    if not index_path.is_file():
        raise ValueError(f"{cfg.data.cache}: no complete feature cache here (index.json missing; run `alarm cache`)")
    built = json.loads(index_path.read_text(encoding="utf-8"))["key"]
    cache = FeatureCache.open(cfg.data.cache, cache_key(model, built.get("level", "?"), built.get("dtype", "?")))
    undecodable = {s["audio"] for s in cache.index.get("skipped", [])}
    uncached = [e.id for e in held_out if cache.audio_sha256(e.id) is None and e.audio not in undecodable]
    if uncached:
        raise ValueError(f"{cfg.data.cache}: {len(uncached)} held-out example(s) are not in the feature cache "
                         f"(first: {uncached[0]}); rebuild it with `alarm cache` and the same data.eval_manifest")
    examples = examples + held_out
    if cfg.data.cache_verify:
        stale = None  # rank 0 hashes the audio; every rank learns the outcome and fails alike (none left waiting)
        if world.is_main:
            stale = [e.id for e in examples if cache.audio_sha256(e.id) not in (None, file_sha256(e.audio))]
        stale = broadcast_object(stale, world)
        if stale:
            raise ValueError(f"{cfg.data.cache}: stale feature cache: the audio of {len(stale)} clip(s) changed "
                             f"since it was built (first: {stale[0]}); rebuild it with `alarm cache`")
    return cache

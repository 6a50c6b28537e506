"""The trainer under the faults that happen to long runs (issue 19), on CPU:

- SIGKILL of the whole process group (main process and DataLoader worker) at moments drawn from a seeded
  generator, with dropout 0.1 (CA fusion: nn.Dropout and packed_attention's Philox dropout), one DataLoader
  worker and 2 micro-batches per step; ``--resume auto`` after each kill must give the uninterrupted run's
  losses and weights bit for bit. The schedule: a kill right after checkpoint 2 and one right after
  checkpoint 4 (two resumes in epoch 0), one at a random moment after a random step of epoch 1 (so the run
  resumed from step 4 crossed the epoch boundary at step 6), one more at a random moment, then a run to the
  end. Seeds: ``ALARM_FAULT_SEEDS`` (comma-separated, default "0").
- damaged checkpoints: a flipped byte in each kind of checkpoint file, a truncated file, a missing file, a
  damaged COMPLETE marker; the issue's 64 zeroed bytes in the newest checkpoint (the run falls back to the
  previous one and ends bit-identical), every checkpoint damaged (one clear line), a checkpoint holding NaN
  weights (stopped, naming the step and the last good checkpoint);
- a failing write (ENOSPC injected half-way through a checkpoint file);
- a streak of non-finite steps;
- a damaged cache shard read by a DataLoader worker;
- a rank killed mid-run under 2-process gloo (then both ranks resume, bit for bit).
"""
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from train_runs import REPO, alarm, env, losses, train_rows, write_corpus, write_recipe

from alarm.cli import main
from alarm.fileio import CorruptFileError
from alarm.train.checkpoint import COMPLETE, latest_checkpoint, load_checkpoint, verify_checkpoint
from alarm.train.distributed import World

SEEDS = [int(s) for s in os.environ.get("ALARM_FAULT_SEEDS", "0").split(",")]
DROPOUT = {"model": {"fusion": "CA", "n_encoders": 2, "dropout": 0.1, "ca_attention_dropout": 0.1},
           "data": {"num_workers": 1}}  # with write_recipe: 12 examples, 6 steps per epoch, 12 steps, save_every 2
CHECKPOINT_FILES = ["trainable.safetensors", "buffers.safetensors", "optimizer.safetensors", "optimizer.json",
                    "state.json", "rng-0.safetensors", COMPLETE]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    return folder, write_corpus(folder)


@pytest.fixture(scope="module")
def dropout_run(corpus):
    """The uninterrupted run with dropout, a worker and accumulation: the reference every fault is held to."""
    folder, manifest = corpus
    out = folder / "uninterrupted"
    r = alarm("train", "--config", str(write_recipe(folder, manifest, out, **DROPOUT)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(losses(out)) == list(range(1, 13))
    return out


def _copy_run(reference: Path, to: Path, manifest: Path) -> Path:
    """A copy of a finished run and its recipe (the copy's out_dir)."""
    shutil.copytree(reference, to)
    return write_recipe(to.parent, manifest, to, **DROPOUT)


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _assert_same_run(run: Path, reference: Path) -> None:
    """Every logged loss (each step, each time it was run) and the final weights, buffers, optimizer moments and
    saved model equal the reference, bit for bit."""
    ref = losses(reference)
    rows = train_rows(run)
    assert {r["step"] for r in rows} == set(ref)
    wrong = [(r["step"], r["loss"], ref[r["step"]]) for r in rows if r["loss"] != ref[r["step"]]]
    assert not wrong, f"losses differ (step, got, want): {wrong}"
    for name in ("trainable.safetensors", "buffers.safetensors", "optimizer.safetensors"):
        assert _same_tensors(load_file(str(latest_checkpoint(str(run)) / name)),
                             load_file(str(latest_checkpoint(str(reference)) / name))), name
    assert _same_tensors(load_file(str(run / "final" / "audio_side.safetensors")),
                         load_file(str(reference / "final" / "audio_side.safetensors")))


def _start(recipe: Path, log: Path, extra_env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alarm", "train", "--config", str(recipe)], cwd=REPO,
                            env={**env(), **(extra_env or {})}, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_then_kill(proc: subprocess.Popen, ready, delay: float, timeout: float = 240) -> bool:
    """Wait until ``ready()`` (or the end of the run), sleep ``delay`` s, SIGKILL the process group (main process
    and DataLoader worker, as a lost node would); True when it was killed."""
    deadline = time.time() + timeout
    while proc.poll() is None and not ready():
        assert time.time() < deadline, "the run neither got there nor ended"
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.parametrize("seed", SEEDS)
def test_random_kills_with_dropout_and_workers_resume_bit_for_bit(corpus, dropout_run, seed):
    folder, manifest = corpus
    out = folder / f"killed-{seed}"
    recipe = write_recipe(folder, manifest, out, **DROPOUT)
    rng = random.Random(seed)
    complete = lambda step: (out / "checkpoints" / f"step-{step:08d}" / COMPLETE).is_file()  # noqa: E731
    plan = [("right after checkpoint", 2, 0.0), ("right after checkpoint", 4, 0.0),
            ("after step", rng.randint(7, 9), rng.uniform(0.0, 0.3)),
            ("after step", rng.randint(9, 11), rng.uniform(0.0, 0.3))]
    history = []
    for n, (when, step, delay) in enumerate(plan):
        seen = len(train_rows(out)) if (out / "metrics.jsonl").is_file() else 0
        ready = (lambda s=step: complete(s)) if when == "right after checkpoint" else \
            (lambda s=step, k=seen: any(r["step"] >= s for r in train_rows(out)[k:]))
        log = folder / f"killed-{seed}-{n}.log"
        killed = _wait_then_kill(_start(recipe, log), ready, delay)
        started = re.search(r"resuming at step (\d+)", log.read_text())
        history.append((when, step, round(delay, 3), int(started.group(1)) if started else 0, killed))
    log = folder / f"killed-{seed}-end.log"
    proc = _start(recipe, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    starts = [h[3] for h in history]
    message = f"seed {seed}: (kill, at, delay s, resumed from, killed) = {history}"
    print(message)  # the schedule this seed drew (pytest -rA shows it)
    assert sum(h[4] for h in history) >= 3, message
    assert starts[0] == 0 and 0 < starts[1] < 6 and 0 < starts[2] < 6, message  # two resumes in epoch 0
    assert history[2][4], message  # the run resumed in epoch 0 was killed in epoch 1: it crossed the boundary
    _assert_same_run(out, dropout_run)


def test_the_step_draws_only_from_torch_generators(corpus, tmp_path):
    """The random streams a checkpoint saves are all a step draws from: Python's and NumPy's global generators
    are left alone by a whole run with dropout (in process, so they can be watched)."""
    from alarm.train import load_config, train

    folder, manifest = corpus
    recipe = write_recipe(tmp_path, manifest, tmp_path / "run", **{**DROPOUT, "data": {"num_workers": 0}},
                          run={"epochs": 1, "max_steps": 2, "save_every": 1})
    py, np_state = random.getstate(), np.random.get_state()
    assert train(load_config(str(recipe)))["steps"] == 2
    assert random.getstate() == py
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]


def _flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_flipped_byte_in_any_checkpoint_file_is_named(dropout_run, tmp_path, name):
    ckpt = tmp_path / "step"
    shutil.copytree(latest_checkpoint(str(dropout_run)), ckpt)
    assert verify_checkpoint(ckpt) is True
    _flip_byte(ckpt / name, 0.9 if name.endswith(".safetensors") else 0.5)
    # a flipped COMPLETE names the file its damaged line belongs to, or itself when the line no longer parses
    with pytest.raises(CorruptFileError, match=r"step/(\S+\.(safetensors|json)|COMPLETE)(:\d+)?: "):
        verify_checkpoint(ckpt)
    if name != COMPLETE:
        with pytest.raises(CorruptFileError, match=f"step/{re.escape(name)}: corrupt or incomplete"):
            verify_checkpoint(ckpt)
        # loading checks what it reads, whatever was verified before
        model, trainable, buffers, optimizer = _training_state(ckpt)
        with pytest.raises(CorruptFileError, match=re.escape(name)):
            load_checkpoint(ckpt, World(0, 1, 0, torch.device("cpu")), trainable, buffers, optimizer)


def _training_state(ckpt: Path):
    """A model of the dropout recipe and the trainer's view of it (what load_checkpoint fills)."""
    from alarm.train import build_model, load_config
    cfg = load_config(None, [f"data.train_manifest={ckpt}", "model.preset=tiny", "model.fusion=CA",
                             "model.n_encoders=2", "model.stage=A"])
    model = build_model(cfg)
    trainable = model.trainable_parameters()
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=1e-3, foreach=False)
    return model, trainable, model.training_buffers(), optimizer


@pytest.mark.parametrize("damage", ["truncated", "missing", "no COMPLETE"])
def test_truncated_or_missing_checkpoint_files_are_named(dropout_run, tmp_path, damage):
    ckpt = tmp_path / "step"
    shutil.copytree(latest_checkpoint(str(dropout_run)), ckpt)
    target = ckpt / ("optimizer.safetensors" if damage != "no COMPLETE" else COMPLETE)
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
        match = "optimizer.safetensors: corrupt or incomplete"
    else:
        target.unlink()
        match = "optimizer.safetensors: missing" if damage == "missing" else "incomplete .COMPLETE missing"
    with pytest.raises(CorruptFileError, match=match):
        verify_checkpoint(ckpt)


def test_sha256sum_checks_a_checkpoint_independently(dropout_run):
    """COMPLETE is coreutils' format: each line's digest is the sha256 of the named file."""
    ckpt = latest_checkpoint(str(dropout_run))
    lines = (ckpt / COMPLETE).read_text().splitlines()
    names = sorted(p.name for p in ckpt.iterdir() if p.name != COMPLETE)
    assert sorted(line.split("  ", 1)[1] for line in lines) == names
    for line in lines:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((ckpt / name).read_bytes()).hexdigest() == digest, name


def test_damaged_newest_checkpoint_falls_back_and_ends_bit_for_bit(corpus, dropout_run, tmp_path, capsys):
    """The issue's case: 64 bytes in the middle of the newest checkpoint's weights overwritten. The check names
    the file; ``--resume auto`` says so, resumes from the previous checkpoint and ends exactly as the
    uninterrupted run (its last two steps redone)."""
    folder, manifest = corpus
    run = tmp_path / "copy"
    recipe = _copy_run(dropout_run, run, manifest)
    weights = run / "checkpoints" / "step-00000012" / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    weights.write_bytes(bytes(data))
    shutil.rmtree(run / "final")
    assert main(["train", "--check-checkpoints", str(run)]) == 1  # in process: the same code as the command
    shown = capsys.readouterr().out
    assert f"step-00000012: DAMAGED: {weights}: corrupt or incomplete" in shown
    assert "step-00000010: intact" in shown and f"--resume auto would start from {run / 'checkpoints'}" in shown
    r = alarm("train", "--config", str(recipe))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"alarm train: checkpoint step-00000012 is damaged: {weights}: corrupt or incomplete" in r.stderr
    assert "falling back to step-00000010, the newest intact checkpoint" in r.stderr
    assert "resuming at step 10" in r.stdout
    _assert_same_run(run, dropout_run)
    assert main(["train", "--check-checkpoints", str(run)]) == 0


def test_no_intact_checkpoint_stops_with_one_line(corpus, dropout_run, tmp_path):
    folder, manifest = corpus
    run = tmp_path / "copy"
    recipe = _copy_run(dropout_run, run, manifest)
    shutil.rmtree(run / "final")
    _flip_byte(run / "checkpoints" / "step-00000012" / "buffers.safetensors")
    state = run / "checkpoints" / "step-00000010" / "state.json"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    r = alarm("train", "--config", str(recipe))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "done" not in r.stdout, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"alarm: error: {run / 'checkpoints'}: no intact checkpoint to resume from (damaged: "
                    "step-00000012, step-00000010); restore one from a copy, or start again in a new run.out_dir")
    assert not (run / "final").exists()


def test_checkpoint_with_nonfinite_weights_stops_naming_step_and_last_good(corpus, dropout_run, tmp_path):
    """A checkpoint that verifies but holds NaN weights (written before checksums and finite checks existed)
    stops the run instead of training on it; final/ is never written."""
    folder, manifest = corpus
    run = tmp_path / "copy"
    recipe = _copy_run(dropout_run, run, manifest)
    shutil.rmtree(run / "final")
    for ckpt in (run / "checkpoints").iterdir():  # what an older version wrote: no checksums
        (ckpt / COMPLETE).write_text(f"{int(ckpt.name.split('-')[1])}\n")
    path = run / "checkpoints" / "step-00000012" / "trainable.safetensors"
    weights = load_file(str(path))
    name = sorted(weights)[0]
    weights[name][..., 0] = float("nan")
    save_file(weights, str(path))
    r = alarm("train", "--config", str(recipe))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "checkpoint step-00000012 was written by an older version without checksums: loaded unverified" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"alarm: error: step 12: checkpoint {run / 'checkpoints' / 'step-00000012'} holds a "
                           f"non-finite trainable parameter {name}"), last
    assert last.endswith(f"last good checkpoint: {run / 'checkpoints' / 'step-00000010'} "
                         f"(--resume {run / 'checkpoints' / 'step-00000010'})"), last
    assert not (run / "final").exists()
    # the suggested checkpoint must be intact: an incomplete step-10 is passed over for the one before it
    (run / "checkpoints" / "step-00000010" / COMPLETE).unlink()
    older = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name < "step-00000010")
    last = alarm("train", "--config", str(recipe)).stderr.strip().splitlines()[-1]
    want = f"{run / 'checkpoints' / older[-1]} (--resume {run / 'checkpoints' / older[-1]})" if older else "none"
    assert last.endswith(f"last good checkpoint: {want}"), last


_ENOSPC = """
import errno, os, sys
import alarm.train.checkpoint as ckpt
real = ckpt.atomic_write_bytes
def full_disk(path, data):  # the disk fills half-way through step 4's optimizer state
    if "step-00000004" in str(path) and path.name == "optimizer.safetensors":
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real(path, data)
ckpt.atomic_write_bytes = full_disk
from alarm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_failing_write_keeps_the_previous_checkpoint(corpus, dropout_run, tmp_path):
    folder, manifest = corpus
    out = tmp_path / "full"
    recipe = write_recipe(tmp_path, manifest, out, **DROPOUT)
    r = subprocess.run([sys.executable, "-c", _ENOSPC, "train", "--config", str(recipe)], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    ckpts = out / "checkpoints"
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"alarm: error: checkpoint {ckpts / 'step-00000004'} could not be written (No space left on "
                    f"device: {ckpts / 'step-00000004.tmp' / 'optimizer.safetensors'}); the previous checkpoint "
                    f"{ckpts / 'step-00000002'} is intact; free space or fix the disk, then run again with "
                    "--resume auto"), last
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002"]  # the unfinished folder is gone
    assert verify_checkpoint(ckpts / "step-00000002") is True
    r = alarm("train", "--config", str(recipe))
    assert r.returncode == 0 and "resuming at step 2" in r.stdout, r.stderr[-3000:]
    _assert_same_run(out, dropout_run)


def test_a_streak_of_nonfinite_steps_stops_the_run(corpus, tmp_path):
    """lr 1e30 blows the weights up at step 1; every later step is non-finite and skipped (weights and BatchNorm
    statistics left alone), and the fifth in a row stops the run: no final/, no "done", no non-finite value in
    any checkpoint."""
    folder, manifest = corpus
    out = tmp_path / "diverged"
    recipe = write_recipe(tmp_path, manifest, out, optim={"lr": 1e30, "warmup_steps": 0})
    r = alarm("train", "--config", str(recipe))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "done" not in r.stdout, r.stderr[-3000:]
    rows = train_rows(out)
    bad = [row["step"] for row in rows if not np.isfinite(row["loss"])]
    assert len(bad) == 5 and bad == list(range(bad[0], bad[0] + 5)) and rows[-1]["step"] == bad[-1]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"alarm: error: step {bad[-1]}: 5 steps in a row had a non-finite loss or gradient "
                           "(last: loss=nan"), last
    assert "optim.nonfinite_step_limit=5" in last and "last good checkpoint (saved before the streak): " in last
    assert not (out / "final").exists() and not (out / "summary.json").exists()
    for ckpt in (out / "checkpoints").iterdir():
        for name in ("trainable.safetensors", "buffers.safetensors", "optimizer.safetensors"):
            assert all(bool(torch.isfinite(t).all()) for t in load_file(str(ckpt / name)).values()), (ckpt, name)


def test_a_damaged_cache_shard_stops_training_naming_it(corpus, tmp_path, capsys):
    """Read by a DataLoader worker, a flipped byte in a shard ends the run in one line naming the shard and the
    clip (the worker's traceback is not the message); `alarm cache --check` names it too."""
    folder, manifest = corpus
    cache = tmp_path / "cache"
    recipe = write_recipe(tmp_path, manifest, tmp_path / "run", data={"num_workers": 1, "cache": str(cache)})
    r = alarm("cache", "--config", str(recipe), "--out", str(cache), "--shard-size", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    shard = cache / "shard-00001.safetensors"
    _flip_byte(shard, 0.7)
    r = alarm("train", "--config", str(recipe))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"alarm: error: {re.escape(str(shard))}: corrupt: the features of clip c\d+ differ from "
                        r"the checksum recorded when the cache was built; rerun `alarm cache` with the same "
                        r"arguments: it recomputes only the damaged shards", last), last
    assert main(["cache", "--check", str(cache)]) == 1
    assert f"alarm cache: damaged: {shard}: corrupt or incomplete" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(recipe: Path, logs: Path) -> list:
    """Rank 0 and rank 1 of a 2-process gloo run, started as two nodes would start them (no torchrun agent)."""
    port = str(_free_port())
    return [_start(recipe, logs / f"rank{rank}.log", {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                                      "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)})
            for rank in (0, 1)]


def _wait_all(procs: list, timeout: float = 300) -> list:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def test_a_rank_killed_mid_run_stops_the_other_then_both_resume_bit_for_bit(corpus, tmp_path):
    """Rank 1 of two gloo ranks (dropout, a worker each) is killed after step 3: rank 0 must stop at its next
    collective with one line saying so, not wait. Both then resume (--resume auto) and end as an uninterrupted
    2-rank run, bit for bit: each rank's generators were restored."""
    folder, manifest = corpus
    runs = {}
    for name in ("uninterrupted", "killed"):
        (tmp_path / name).mkdir()
        runs[name] = write_recipe(tmp_path / name, manifest, tmp_path / name / "run", **DROPOUT,
                                  batch={"accumulation": 1})
    assert _wait_all(_two_ranks(runs["uninterrupted"], tmp_path / "uninterrupted")) == [0, 0]
    out = tmp_path / "killed" / "run"
    procs = _two_ranks(runs["killed"], tmp_path / "killed")
    assert _wait_then_kill(procs[1], lambda: (out / "metrics.jsonl").is_file() and
                           any(r["step"] >= 3 for r in train_rows(out)), 0.0)
    killed_at = time.time()
    assert _wait_all(procs[:1], timeout=120) == [2]
    assert time.time() - killed_at < 120
    last = (tmp_path / "killed" / "rank0.log").read_text().strip().splitlines()[-1]
    assert re.match(r"alarm: error: rank 0 of 2 stopped: .+ failed because another rank is gone \(it died or was "
                    r"killed: see its log", last), last
    assert _wait_all(_two_ranks(runs["killed"], tmp_path / "killed")) == [0, 0]
    assert "resuming at step" in (tmp_path / "killed" / "rank0.log").read_text()
    _assert_same_run(out, tmp_path / "uninterrupted" / "run")

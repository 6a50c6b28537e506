"""Saves are atomic and honour the umask: ``alarm.fileio`` and ``ALARMModel.save_pretrained``.

Model folders carry the weights' sha256 (``SHA256SUMS``): ``from_pretrained`` refuses damaged weights naming
the file, and still loads a folder saved before checksums existed, with a warning.

The kill test forks a writer that saves two model versions (different weights and configs) in a loop
and SIGKILLs it at random moments (after 0-3 completed saves, then 0-10 ms): the folder must always hold
exactly one whole version, bit for bit."""
import hashlib
import json
import os
import random
import signal
import stat
import time

import pytest
import torch
from safetensors.torch import load_file

from alarm.fileio import TMP_PREFIX, CorruptFileError, atomic_write_folder, atomic_write_json, atomic_write_text
from alarm.model import ALARMConfig, ALARMModel
from alarm.model.alarm_model import CHECKSUMS_NAME, CONFIG_NAME, WEIGHTS_NAME, verify_saved_model

pytestmark = pytest.mark.usefixtures("one_thread")
MODEL_FILES = sorted([CONFIG_NAME, WEIGHTS_NAME, CHECKSUMS_NAME])


@pytest.fixture(scope="module")
def small_model():
    return ALARMModel(ALARMConfig.tiny("sum", n_encoders=1))


def _leftovers(parent):
    return sorted(p for p in os.listdir(parent) if p.startswith(TMP_PREFIX))


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_honour_the_umask(tmp_path, small_model, umask, mask):
    os.umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"k": 1})
    small_model.save_pretrained(str(tmp_path / "m"))
    for p in (tmp_path / "a.txt", tmp_path / "b.json", tmp_path / "m" / CONFIG_NAME, tmp_path / "m" / WEIGHTS_NAME):
        assert _mode(p) == 0o666 & ~mask, p
    assert _mode(tmp_path / "m") == 0o777 & ~mask


def test_folder_write_failure_keeps_the_old_folder(tmp_path):
    folder = tmp_path / "f"
    atomic_write_folder(folder, lambda tmp: atomic_write_text(os.path.join(tmp, "a"), "old"))

    def broken(tmp):
        atomic_write_text(os.path.join(tmp, "a"), "new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_folder(folder, broken)
    assert (folder / "a").read_text() == "old" and _leftovers(tmp_path) == []
    atomic_write_folder(folder, lambda tmp: atomic_write_text(os.path.join(tmp, "a"), "new"))
    assert (folder / "a").read_text() == "new" and _leftovers(tmp_path) == []


def test_folder_swap_without_rename_exchange(tmp_path, monkeypatch):
    """Where the atomic exchange is unavailable: two renames, and a kill between them is undone by the
    next write (the old folder, moved aside, is put back before anything else)."""
    import alarm.fileio as fileio

    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    folder = tmp_path / "f"
    for text in ("old", "new"):
        atomic_write_folder(folder, lambda tmp, t=text: atomic_write_text(os.path.join(tmp, "a"), t))
        assert (folder / "a").read_text() == text and _leftovers(tmp_path) == []
    os.rename(folder, tmp_path / f"{TMP_PREFIX}f-old-x1")  # as a kill between the two renames leaves it

    def broken(tmp):
        raise RuntimeError("killed again")

    with pytest.raises(RuntimeError):
        atomic_write_folder(folder, broken)
    assert (folder / "a").read_text() == "new" and _leftovers(tmp_path) == []


def test_save_keeps_other_files_in_the_folder(tmp_path, small_model):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "optim").mkdir()
    (folder / "optim" / "state.bin").write_bytes(b"123")
    os.chmod(folder / "notes.txt", 0o400)  # read-only: carried over untouched
    small_model.save_pretrained(str(folder))
    small_model.save_pretrained(str(folder))
    assert sorted(os.listdir(folder)) == sorted([CONFIG_NAME, WEIGHTS_NAME, CHECKSUMS_NAME, "notes.txt", "optim"])
    assert (folder / "notes.txt").read_text() == "mine" and _mode(folder / "notes.txt") == 0o400
    assert (folder / "optim" / "state.bin").read_bytes() == b"123"
    assert _leftovers(tmp_path) == []


def test_save_cleans_leftovers_of_a_killed_save(tmp_path, small_model):
    folder = tmp_path / "m"
    small_model.save_pretrained(str(folder))
    stale = tmp_path / f"{TMP_PREFIX}m-abc123"
    stale.mkdir()
    (stale / WEIGHTS_NAME).write_bytes(b"\0" * 1000)
    small_model.save_pretrained(str(folder))
    assert _leftovers(tmp_path) == [] and sorted(os.listdir(folder)) == MODEL_FILES


def _versions(model):
    """Two (state dict, config JSON) versions that differ in every tensor and in the config."""
    base = {k: v.detach().clone() for k, v in model.audio.state_dict().items()}
    bumped = {k: (v + 1 if v.is_floating_point() else v + 1) for k, v in base.items()}
    return [(base, 4096), (bumped, 4097)]


def _saver_loop(model, folder, versions, done_fd):
    """Forked child: save version 1, 0, 1, ... until killed, writing one byte to ``done_fd`` after each save."""
    try:
        k = 1
        while True:
            state, max_length = versions[k % 2]
            model.audio.load_state_dict(state)
            model.config.max_length = max_length
            model.save_pretrained(folder)
            os.write(done_fd, b".")
            k += 1
    finally:
        os._exit(1)


def test_kill_during_save_leaves_old_or_new_whole(tmp_path, small_model):
    folder = str(tmp_path / "m")
    versions = _versions(small_model)
    small_model.config.max_length = versions[0][1]
    small_model.save_pretrained(folder)  # version 0 (the fixture's weights, max_length 4096)
    rng = random.Random(0)
    seen = set()
    deadline = time.monotonic() + 8.0
    trials = 0
    while trials < 40 and time.monotonic() < deadline:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _saver_loop(small_model, folder, versions, write_fd)
        os.close(write_fd)
        for _ in range(rng.randint(0, 3)):  # let 0-3 saves complete, then kill at a random moment
            assert os.read(read_fd, 1) == b"."
        time.sleep(rng.uniform(0.0, 0.01))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        trials += 1
        cfg = json.loads(open(os.path.join(folder, CONFIG_NAME), encoding="utf-8").read())
        weights = load_file(os.path.join(folder, WEIGHTS_NAME))
        assert _recorded_sha256(folder) == hashlib.sha256(open(os.path.join(folder, WEIGHTS_NAME), "rb").read()
                                                          ).hexdigest()  # the checksum belongs to these weights
        which = {4096: 0, 4097: 1}[cfg["max_length"]]
        want = versions[which][0]
        assert weights.keys() == want.keys()
        for name, tensor in want.items():
            assert torch.equal(weights[name], tensor), (trials, which, name)
        seen.add(which)
    assert trials >= 10
    assert seen == {0, 1}, "the kills never landed after a complete save of each version"
    small_model.audio.load_state_dict(versions[0][0])
    small_model.config.max_length = 4096
    small_model.save_pretrained(folder)  # the next save removes whatever the kills left
    assert _leftovers(tmp_path) == [] and sorted(os.listdir(folder)) == MODEL_FILES
    loaded = ALARMModel.from_pretrained(folder, tokenizer=small_model.tokenizer, llm=small_model.llm)
    for name, tensor in versions[0][0].items():
        assert torch.equal(loaded.audio.state_dict()[name], tensor), name


def _recorded_sha256(folder) -> str:
    """The weights' digest in SHA256SUMS, read as ``sha256sum -c`` would (``<hex>  <name>``)."""
    lines = open(os.path.join(folder, CHECKSUMS_NAME), encoding="utf-8").read().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"  {WEIGHTS_NAME}"), lines
    return lines[0].split("  ")[0]


@pytest.mark.parametrize("damage", ["flip", "truncate", "zero64", "sums"])
def test_damaged_weights_are_refused_naming_the_file(tmp_path, small_model, damage):
    folder = tmp_path / "m"
    small_model.save_pretrained(str(folder))
    weights = folder / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    if damage == "flip":  # one bit in the tensor data (the file still parses: only the checksum can tell)
        data[len(data) - 7] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "zero64":  # the bit rot: 64 bytes in the middle overwritten
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    if damage == "sums":
        (folder / CHECKSUMS_NAME).write_text("not a checksum line\n")
        match = f"{CHECKSUMS_NAME}:1: not a sha256sum line"
    else:
        weights.write_bytes(bytes(data))
        match = f"{WEIGHTS_NAME}: corrupt or incomplete"
    with pytest.raises(CorruptFileError, match=match):
        ALARMModel.from_pretrained(str(folder), tokenizer=small_model.tokenizer, llm=small_model.llm)
    target = ALARMModel(ALARMConfig.tiny("sum", n_encoders=1))
    with pytest.raises(CorruptFileError, match=match):  # stage B copying a stage-A adapter checks it too
        target.load_adapter("whisper", str(folder))
    with pytest.raises(CorruptFileError, match=match):
        verify_saved_model(str(folder))


def test_folder_saved_before_checksums_loads_with_a_warning(tmp_path, small_model):
    folder = tmp_path / "m"
    small_model.save_pretrained(str(folder))
    assert verify_saved_model(str(folder)) is True
    (folder / CHECKSUMS_NAME).unlink()  # what an older version wrote
    with pytest.warns(UserWarning, match="saved before checksums existed"):
        loaded = ALARMModel.from_pretrained(str(folder), tokenizer=small_model.tokenizer, llm=small_model.llm)
    for name, tensor in small_model.audio.state_dict().items():
        assert torch.equal(loaded.audio.state_dict()[name], tensor), name
    assert verify_saved_model(str(folder)) is False
    small_model.save_pretrained(str(folder))  # saving again adds them
    assert _recorded_sha256(folder) == hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()

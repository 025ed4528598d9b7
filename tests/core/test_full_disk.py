"""A full disk: one line that says so, nothing half-written that a later run trusts, and the same
command works once space is freed. The disk is a small tmpfs mounted for the test (root only:
skipped where mounting is not allowed)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from p2m.tasks.core.config import Settings, TrainConfig
from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.run_store import disk_full_error, read_json, rows_to_dataset, save_dataset, write_json

from tests.conftest import REPO


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a folder on a fresh tmpfs of `size` bytes (unmounted after the test)."""
    mounted = []

    def mount(size: int):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder, leave: int = 0):
    """Fill the filesystem of `folder` until `leave` bytes are free; returns the filler file."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_errors_that_mean_a_full_disk_are_recognised_however_wrapped(tmp_path):
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert "is full" in str(disk_full_error(wrapped, tmp_path))
    # safetensors' own error carries no errno, only the words
    assert disk_full_error(Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"), tmp_path)
    assert disk_full_error(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert disk_full_error(ValueError("bad value"), tmp_path) is None
    # torch's vague message counts only when the disk is nearly full (this one is not)
    assert disk_full_error(RuntimeError("[enforce fail] file write failed"), tmp_path) is None


def test_an_artifact_written_on_a_full_disk_leaves_the_old_one_whole(small_disk):
    disk = small_disk(512 * 1024)
    write_json(disk / "metrics.json", {"old": True})
    save_dataset(rows_to_dataset([{"input": "a", "output": "b"}]), disk / "splits")
    fill(disk, leave=8 * 1024)
    with pytest.raises(OSError) as e:
        write_json(disk / "metrics.json", {"big": "x" * 100_000})
    assert disk_full_error(e.value, disk)
    with pytest.raises(Exception) as e:
        save_dataset(rows_to_dataset([{"input": "x" * 1000, "output": "y"}] * 200), disk / "splits")
    assert disk_full_error(e.value, disk)
    assert read_json(disk / "metrics.json") == {"old": True}
    import datasets

    assert list(datasets.load_from_disk(str(disk / "splits"))["input"]) == ["a"]
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "metrics.json", "splits"]  # no temporary left


def _splits(folder):
    import datasets

    rows = [{"input": f"number {i}", "output": str(i)} for i in range(32)]
    datasets.DatasetDict({k: rows_to_dataset(rows) for k in ("train", "validation", "test")}).save_to_disk(
        str(folder / "splits")
    )
    return folder / "splits"


def test_a_full_disk_mid_checkpoint_says_so_and_the_same_training_resumes(small_disk, tmp_path, monkeypatch):
    from p2m.tasks.stages.train import train_student
    from transformers import Trainer

    disk = small_disk(64 * 1024 * 1024)
    splits = _splits(tmp_path)
    choice = {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    cfg = TrainConfig(epochs=3, batch_size=8)
    real_save, saves = Trainer._save_checkpoint, []

    def save_then_fill(self, model, trial):
        saves.append(self.state.global_step)
        if len(saves) == 2:  # the disk fills up while the second checkpoint is written
            fill(disk, leave=16 * 1024)
        return real_save(self, model, trial)

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_fill)
    with pytest.raises(P2MError, match="is full.*run the same command again"):
        train_student(splits, choice, "Write the number.", cfg, disk / "run", Settings().home)
    assert not (disk / "run" / "model").exists()
    monkeypatch.setattr(Trainer, "_save_checkpoint", real_save)

    (disk / "filler").unlink()  # space freed: the same call resumes from the one whole checkpoint
    record = train_student(splits, choice, "Write the number.", cfg, disk / "run", Settings().home)
    assert record["resumed"] and record["steps"] == 3 * saves[0]
    assert (disk / "run" / "model" / "model.safetensors").exists()
    assert read_json(disk / "run" / "train.json")["steps"] == record["steps"]


def test_p2m_says_the_disk_is_full_in_one_line(small_disk, tmp_path):
    """`p2m train` on a run folder whose disk has no room for a checkpoint: exit 2, one line; then it works."""
    disk = small_disk(64 * 1024 * 1024)
    run = disk / "run"
    run.mkdir()
    _splits(run)
    write_json(run / "spec.json", {"instruction": "Write the number.", "demonstrations": []})
    write_json(
        run / "model_choice.json", {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    )
    env = os.environ | {"P2M_TRAIN__EPOCHS": "1"}
    fill(disk, leave=32 * 1024)
    done = subprocess.run(
        [sys.executable, "-m", "p2m.flows.cli", "train", str(run)], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert done.returncode == 2, done.stderr[-2000:]
    # The stage's progress lines, then the error as one line, with no traceback.
    assert "Traceback" not in done.stderr and "is full" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]
    (disk / "filler").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "p2m.flows.cli", "train", str(run)], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "model" / "model.safetensors").exists()

"""The run directory (training/run_dir.py): checkpoints written atomically, so that a kill or a
full disk leaves the previous one whole (a full disk is one line naming what it needed, also for the run
that fills it), and one writer per run directory, a stale lock taken over once. Resuming from those
checkpoints is test_resume.py's."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import pytorch_lightning as L
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from tests.helpers import ROOT
from tests.helpers.records import logged_steps
from tests.helpers.runs import ENV, KILL_RUN, TIMEOUT_S, command, run_train
from training import run_dir as run_dir_module
from training.run_dir import (
    AtomicCheckpointIO,
    NoSpaceForCheckpoint,
    RunDirectoryBusy,
    RunDirLock,
    validation_follows,
)

RUN = KILL_RUN


def test_atomic_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2}, path)
    assert torch.load(path)["step"] == 2 and torch.load(tmp_path / "last.prev.ckpt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.prev.ckpt"]  # no partial file left

    class Full(Exception):
        pass

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise Full

    with monkeypatch.context() as patched, pytest.raises(Full):
        patched.setattr(torch, "save", full_disk)
        io.save_checkpoint({"step": 3}, path)
    assert torch.load(path)["step"] == 2  # the write that failed replaced nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_both_checkpoints(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    last, previous = tmp_path / "last.ckpt", tmp_path / "last.prev.ckpt"
    io.save_checkpoint({"global_step": 6, "w": torch.zeros(3)}, last)
    io.save_checkpoint({"global_step": 7, "w": torch.ones(3)}, last)
    before = last.read_bytes(), previous.read_bytes()

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_dir_module.os, "fsync", full)
    with pytest.raises(NoSpaceForCheckpoint) as caught:
        io.save_checkpoint({"global_step": 8, "w": torch.full((1000,), 2.0)}, last)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message and "MB are free" in message
    assert "needs 0.00" not in message and "last.ckpt still holds step 7" in message
    assert (last.read_bytes(), previous.read_bytes()) == before
    assert {p.name for p in tmp_path.iterdir()} == {"last.ckpt", "last.prev.ckpt"}  # no partial file left
    assert isinstance(caught.value, OSError)  # train.py reports an OSError as one line (training/reporting.py)
    # a fresh process (resumed run) names the step from the file itself
    with pytest.raises(NoSpaceForCheckpoint, match="still holds step 7"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 9}, last)


@pytest.mark.integration
def test_a_second_process_on_a_busy_run_directory_fails_at_once(tmp_path):
    run_dir = tmp_path / "run"
    with open(tmp_path / "first.log", "w") as out:
        first = subprocess.Popen(
            command(*RUN, "trainer.max_steps=100000", run_dir=run_dir),
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not logged_steps(run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        second = run_train(*RUN, run_dir=run_dir)
        assert second.returncode == 1
        (line,) = [x for x in second.stderr.splitlines() if x.startswith("error: ")]
        assert f"is in use by process {first.pid} on {socket.gethostname()}" in line and ".lock" in line
        assert time.monotonic() - started < 60  # at once: no training
        assert first.poll() is None  # the first one goes on
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=TIMEOUT_S)
    assert not (run_dir / ".lock").exists()


def test_a_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} {socket.gethostname()} 2026-01-01 00:00:00\n")
    with pytest.warns(UserWarning, match=f"left by process {dead.pid}, which no longer runs"):
        with RunDirLock(tmp_path):
            assert (tmp_path / ".lock").read_text().startswith(f"{os.getpid()} ")
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text(f"{os.getpid()} another-host 2026-01-01 00:00:00\n")
    with pytest.raises(RunDirectoryBusy, match=f"in use by process {os.getpid()} on another-host"):
        RunDirLock(tmp_path).acquire()


def test_a_lock_found_again_after_taking_over_a_stale_one_is_busy(tmp_path, monkeypatch):
    """A stale lock (its process of this host is gone) is taken over once; if a lock is there again
    (another process took it over first), ``acquire`` raises instead of returning without it."""
    lock = tmp_path / ".lock"
    lock.write_text(f"999999 {socket.gethostname()} 2026-01-01 00:00:00\n")
    monkeypatch.setattr(run_dir_module, "_alive", lambda pid: False)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # the lock reappears at once
    with pytest.warns(UserWarning, match="no longer runs: taking it over"):
        with pytest.raises(RunDirectoryBusy, match="in use by process 999999"):
            RunDirLock(tmp_path).acquire()
    monkeypatch.undo()
    held = RunDirLock(tmp_path)
    with pytest.warns(UserWarning, match="no longer runs: taking it over"):
        held.acquire()  # a real takeover: the stale lock is replaced by this process's
    assert held.held and lock.read_text().startswith(f"{os.getpid()} ")
    held.release()


class Follows(L.Callback):
    """Records, at every training batch end, ``validation_follows`` and then whether a validation
    actually ran before the next batch (or the end of the fit)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.said: list[bool] = []
        self.ran: list[bool] = []
        self.stop_at = stop_at  # a step after which the fit is asked to stop (as early stopping does)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.stop_at:
            trainer.should_stop = True
        self.said.append(validation_follows(trainer))
        self.ran.append(False)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.ran and not trainer.sanity_checking:
            self.ran[-1] = True


@pytest.mark.parametrize(
    "schedule",
    [
        {"val_check_interval": 3, "check_val_every_n_epoch": None},  # steps counted across epochs
        {"val_check_interval": 1.0, "check_val_every_n_epoch": 1},  # every epoch's end
        {"val_check_interval": 0.5, "check_val_every_n_epoch": 1},  # twice an epoch
        {"val_check_interval": 1.0, "check_val_every_n_epoch": 2},  # every other epoch
        {"val_check_interval": 2, "check_val_every_n_epoch": 1, "limit_val_batches": 0},  # no validation
        {"val_check_interval": 1.0, "check_val_every_n_epoch": 1, "stop_at": 5},  # asked to stop mid-epoch
        {"val_check_interval": 1.0, "check_val_every_n_epoch": 1, "stop_at": 5, "min_steps": 10},  # not yet
    ],
    ids=["every-3-steps", "epoch-end", "half-epochs", "every-2nd-epoch", "none", "stop", "stop-before-min"],
)
def test_validation_follows_says_when_lightning_validates(schedule, tmp_path):
    """The rule that puts last.ckpt after a due validation, read from the trainer's public state,
    agrees at every step with the validations Lightning runs."""
    schedule = dict(schedule)
    follows = Follows(schedule.pop("stop_at", None))
    trainer = L.Trainer(
        max_steps=23,  # not a whole number of epochs of 8 batches: the fit ends mid-epoch
        limit_train_batches=8,
        limit_val_batches=schedule.pop("limit_val_batches", 2),
        **schedule,
        callbacks=[follows],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    # the fit's length: all 23 steps, or the step it was asked to stop at, or its minimum length if later
    stopped = 23 if follows.stop_at is None else max(follows.stop_at, schedule.get("min_steps", 0))
    assert len(follows.said) == stopped
    assert follows.said == follows.ran


def test_a_run_whose_disk_fills_stops_with_one_line(compose_cfg, tmp_path, monkeypatch, capsys):
    """The disk fills while the second checkpoint (step 10) is written: one line naming the directory,
    the space and step 5 that last.ckpt still holds; both checkpoints as they were."""
    from train import train
    from training.reporting import as_command

    writes, fsync = [], os.fsync

    def filling(descriptor):
        writes.append(descriptor)
        if len(writes) > 2:  # the file and the directory of the first checkpoint, then a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(descriptor)

    monkeypatch.setattr(run_dir_module.os, "fsync", filling)
    cfg = compose_cfg(*KILL_RUN, "trainer.max_steps=12", "logger=csv", "trainer.enable_progress_bar=false")
    with pytest.raises(SystemExit) as stopped:
        as_command(train)(cfg)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert stopped.value.code == 1 and len(errors) == 1, errors
    assert f"no space left on the disk of {tmp_path} for a checkpoint" in errors[0]
    assert "MB are free; last.ckpt still holds step 5" in errors[0]
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 5

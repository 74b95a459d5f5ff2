"""The run machinery at its ends: a run shorter than ``unitarity_every`` still logs the unitarity
error (measured at the last step, as validation is), and a run directory's stale lock is taken
over once, never leaving ``acquire`` with neither the lock nor an error."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from helpers import FAST, read_metrics

from train import train
from training import run_dir
from training.run_dir import RunDirectoryBusy, RunDirLock

TINY_COPY = ["task=copy", "optim=projunn_t", "task.T=5", "task.batch_size=4", "task.eval_batches=1"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "end",
    [["trainer.max_steps=3"], ["trainer.max_steps=-1", "trainer.max_epochs=1", "task.steps_per_epoch=3"]],
    ids=["max_steps", "max_epochs"],
)
def test_a_run_shorter_than_unitarity_every_is_measured_at_its_last_step(compose_cfg, tmp_path, end):
    cfg = compose_cfg(*TINY_COPY, "model.hidden_size=8", "unitarity_every=50", *FAST, *end)
    train(cfg)
    rows = read_metrics(tmp_path)
    measured = [r for r in rows if r.get("unitarity/max_error")]
    last_train_step = max(int(r["step"]) for r in rows if r.get("train/loss"))
    assert [int(r["step"]) for r in measured] == [last_train_step]
    assert measured[0]["unitarity/rnn.weight_hh"] and float(measured[0]["unitarity/max_error"]) < 1e-5


def test_a_lock_found_again_after_taking_over_a_stale_one_is_busy(tmp_path, monkeypatch):
    """A stale lock (its process of this host is gone) is taken over once; if a lock is there again
    (another process took it over first), ``acquire`` raises instead of returning without it."""
    lock = tmp_path / ".lock"
    lock.write_text(f"999999 {socket.gethostname()} 2026-01-01 00:00:00\n")
    monkeypatch.setattr(run_dir, "_alive", lambda pid: False)
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

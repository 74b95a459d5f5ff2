"""scripts/reproduction/replay.py: a run's steps replayed from one of its checkpoints are the run's own steps
(the losses of metrics.csv, exactly), and a variant changes what it says it changes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from scripts.reproduction import replay
from scripts.reproduction.authors import extract
from tests.helpers.records import read_metrics
from tests.helpers.runs import KILL_RUN, QUIET, run_train

pytestmark = pytest.mark.integration  # runs train.py


@pytest.fixture(scope="module")
def run_with_checkpoints(tmp_path_factory):
    """``KILL_RUN`` (30 steps, a cosine schedule) keeping a checkpoint every 5 steps."""
    run_dir = tmp_path_factory.mktemp("replay") / "run"
    keep = run_dir.parent / "every5"
    result = run_train(
        *KILL_RUN,
        *QUIET,
        "trainer.enable_checkpointing=true",
        "+callbacks.keep._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        "+callbacks.keep.every_n_train_steps=5",
        "+callbacks.keep.save_top_k=-1",
        f"+callbacks.keep.dirpath={keep}",
        run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir, keep / "epoch=0-step=15.ckpt"


def test_replayed_steps_are_the_runs_own(run_with_checkpoints):
    run_dir, checkpoint = run_with_checkpoints
    logged = {int(row["step"]): float(row["train/loss"]) for row in read_metrics(run_dir) if row["train/loss"]}
    again = replay.Replay(run_dir, checkpoint, "as-run")
    rows = [again.step() for _ in range(10)]
    assert [row["step"] for row in rows] == list(range(15, 25))
    assert [row["loss"] for row in rows] == [pytest.approx(logged[s], rel=1e-7) for s in range(15, 25)]
    assert all(row["step rnn.weight_hh"] > 0 for row in rows)


def test_a_frozen_part_takes_no_step(run_with_checkpoints):
    run_dir, checkpoint = run_with_checkpoints
    as_run, frozen = (replay.Replay(run_dir, checkpoint, v) for v in ("as-run", "unitary-frozen"))
    before = frozen.model.rnn.weight_hh.detach().clone()
    first = [(as_run.step(), frozen.step()) for _ in range(3)]
    assert first[0][0]["loss"] == first[0][1]["loss"]  # the same weights before the first step
    assert first[2][0]["loss"] != first[2][1]["loss"]
    assert all("step rnn.weight_hh" not in row for _, row in first)
    assert torch.equal(frozen.model.rnn.weight_hh.detach(), before)


def test_a_variant_starts_at_its_step(run_with_checkpoints):
    run_dir, checkpoint = run_with_checkpoints
    as_run, later = (
        replay.Replay(run_dir, checkpoint, "as-run"),
        replay.Replay(run_dir, checkpoint, "unitary-frozen", at=17),
    )
    rows = [(as_run.step(), later.step()) for _ in range(4)]  # steps 15..18
    assert [a == b for a, b in rows] == [True, True, False, False]
    assert "step rnn.weight_hh" in rows[1][1] and "step rnn.weight_hh" not in rows[2][1]
    assert rows[3][0]["loss"] != rows[3][1]["loss"]
    with pytest.raises(SystemExit, match="after it"):
        replay.Replay(run_dir, checkpoint, "as-run", at=10)


@pytest.mark.skipif(not os.environ.get("LOCKSTEP_AUTHORS"), reason="LOCKSTEP_AUTHORS=<checkout of projUNN> not set")
def test_the_authors_code_replays_the_same_steps_from_a_checkpoint(tmp_path):
    """The copy preset at a small size: from a checkpoint mid-run, the authors' code and ours, both with
    the top-k sampler, take the same steps (the lockstep's agreement, from trained weights and state)."""
    run_dir, keep = tmp_path / "run", tmp_path / "every5"
    small = ["experiment=copy_T1000", "task.T=5", "task.batch_size=8", "model.hidden_size=16", "trainer.max_steps=20"]
    keeping = [f"+callbacks.keep.{k}" for k in ("every_n_train_steps=5", "save_top_k=-1", f"dirpath={keep}")]
    callback = "+callbacks.keep._target_=pytorch_lightning.callbacks.ModelCheckpoint"
    result = run_train(*small, *QUIET, "trainer.enable_checkpointing=true", callback, *keeping, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = keep / "epoch=0-step=10.ckpt"
    with tempfile.TemporaryDirectory() as tmp:
        folders = extract(Path(os.environ["LOCKSTEP_AUTHORS"]), Path(tmp))
        theirs = replay.AuthorsReplay(run_dir, checkpoint, folders)
        ours = replay.Replay(run_dir, checkpoint, "topk")
        for _ in range(5):
            a, b = theirs.step(), ours.step()
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
            assert a["step rnn.weight_hh"] == pytest.approx(b["step rnn.weight_hh"], rel=1e-3)


@pytest.mark.parametrize(
    ("variant", "says"),
    [("gentle", "unknown variant 'gentle'"), ("eps=abc", "must be a positive number"), ("clip=-1", "positive")],
)
def test_a_bad_variant_is_refused(capsys, variant, says):
    with pytest.raises(SystemExit):
        replay.main(["run", "ckpt", "--variants", variant])
    assert says in capsys.readouterr().err

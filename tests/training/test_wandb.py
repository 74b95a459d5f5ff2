"""wandb (offline) holds the run's curves as metrics.csv does, also after a resume: read back from
the offline run's own record file (wandb's format: a LevelDB-style log of protobuf ``Record``s); the
runs of one seed group share a wandb group."""

from __future__ import annotations

from pathlib import Path

import pytest

import train
from tests.helpers.hooks import SignalAt, add
from tests.helpers.records import read_metrics, wandb_history
from tests.helpers.runs import KILL_RUN, MAX_STEPS
from training.reporting import as_command

pytest.importorskip("wandb.proto.wandb_internal_pb2")


def csv_values(run_dir: Path) -> dict[tuple[int, str], float]:
    values = {}
    for row in read_metrics(run_dir):
        for key, value in row.items():
            if key != "step" and value != "":
                assert (int(row["step"]), key) not in values
                values[int(row["step"]), key] = float(value)
    return values


@pytest.mark.integration
def test_a_resumed_run_continues_in_a_new_wandb_run_that_holds_every_step_once(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = [*KILL_RUN, "logger=default", "logger.wandb.mode=offline", "trainer.enable_progress_bar=false"]

    command = as_command(train.train)  # what train.py runs: closes the wandb run however the fit ends
    with pytest.raises(SystemExit) as stopped:
        command(compose_cfg(*args, *add("signal", SignalAt, step=17), run_dir=tmp_path))
    assert stopped.value.code == 130
    first = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(first) == 1
    command(compose_cfg(*args, run_dir=tmp_path))  # the same command: resumes
    runs = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    assert len(runs) == 2 and runs[0] == first[0]
    name, values = wandb_history(runs[-1])
    assert name.endswith("(resumed)")
    expected = csv_values(tmp_path)
    assert {key for key in expected if key[0] < MAX_STEPS} <= set(values)  # every step of the csv, from step 0
    for key, logged in values.items():
        # one value per step and metric ("epoch" comes with both the training step's and the
        # validation's metrics from Lightning, the same value twice)
        assert len(logged) == 1 or (key[1] == "epoch" and len(set(logged)) == 1), f"{key} logged {logged}"
        assert logged[0] == pytest.approx(expected[key], rel=1e-6, abs=1e-12), key
    assert set(values) == set(expected)


def test_wandb_groups_the_runs_of_a_seed_group(compose_cfg):
    """A run's wandb group is its overrides but seed: the runs of one seed group share it."""
    from training.loggers import run_name

    names = {}
    for overrides in (("k=2", "seed=1"), ("seed=2", "k=2"), ("k=4", "seed=1")):
        compose_cfg(*overrides, "logger=csv")
        names[overrides] = run_name()
    assert names[("k=2", "seed=1")] == ("k=2,seed=1", "k=2")
    assert names[("seed=2", "k=2")][1] == "k=2"
    assert names[("k=4", "seed=1")][1] == "k=4"

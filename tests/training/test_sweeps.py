"""Real multiruns, as README gives them: two jobs in parallel (hydra/launcher=local, joblib), the
sweep's layout, its wandb run names, and scripts/results/compare.py and scripts/results/report.py on it; and a job
of submitit's launcher preempted, requeued and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.records import logged_steps, read_metrics, tables, train_rows, wandb_history
from tests.helpers.runs import ENV, KILL_AFTER_STEP, KILL_RUN, MAX_STEPS, QUIET, TIMEOUT_S, assert_same_run, start_twin
from training.record import METRICS

pytestmark = pytest.mark.integration  # every test here runs train.py or a script

SMALL = [
    "task=copy",
    "task.T=5",
    "task.batch_size=4",
    "task.eval_batches=1",
    "model.hidden_size=8",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=local",
        *SMALL,
        "k=1,2",
        "logger.wandb.mode=offline",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def test_the_sweep_directory_holds_one_run_per_point(sweep):
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    assert ["k=1" in p.name for p in jobs] == [True, False] and ["k=2" in p.name for p in jobs] == [False, True]
    for job in jobs:
        assert sorted(train_rows(read_metrics(job))) == [0, 1, 2]
        assert (job / "last.ckpt").is_file() and (job / ".hydra" / "overrides.yaml").is_file()
    assert (sweep / "multirun.yaml").is_file()


def test_wandb_runs_are_named_by_the_swept_override_and_grouped_by_the_sweep(sweep):
    names = sorted(wandb_history(path)[0] for path in sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert names == ["k=1", "k=2"]  # the swept key alone, although the workers never saw the command line


def test_the_offline_runs_hold_the_diagnostics_media(sweep):
    """At step 0 (the default interval, 500, starts there): the gradient-through-time plot, the
    eigenvalue phases and singular values as histograms, the captured fraction as a number."""
    for path in sweep.glob("*/wandb/offline-run-*/run-*.wandb"):
        _, values = wandb_history(path)
        at_zero = {key: value[-1] for (step, key), value in values.items() if step == 0}
        assert at_zero["grad_time/profile_table"]["_type"] == "table-file"  # (wandb.plot.line stores its table)
        assert at_zero["spectrum/phases/rnn.weight_hh"]["_type"] == "histogram"
        assert at_zero["spectrum/singular_values/rnn.weight_hh"]["_type"] == "histogram"
        assert 0 < at_zero["captured/rnn.weight_hh"] <= 1 + 1e-5
        assert (path.parent / "files" / "media" / "table").is_dir()


def test_compare_and_report_on_the_sweep(sweep, tmp_path):
    out = tmp_path / "comparison"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.results.compare", str(sweep), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (table,) = tables((out / "comparison.md").read_text())
    assert [row[0] for row in table[1:]] == ["k=1", "k=2"] and all(row[1] == "3" for row in table[1:])
    figures = (
        "loss_vs_step.png",
        "loss_vs_time.png",
        "unitarity_vs_step.png",
        "grad_time.png",
        "spectrum.png",
        "captured_vs_k.png",
    )
    for figure in figures:
        assert (out / figure).stat().st_size > 0
    report_command = [sys.executable, "-m", "scripts.results.report", str(sweep)]
    report = subprocess.run(report_command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    (rows,) = tables(report.stdout)
    assert [row[0] for row in rows[1:]] == ["copy, projUNN-T, k = 1", "copy, projUNN-T, k = 2"]
    assert all(row[2] == "3 steps" for row in rows[1:])


def test_a_preempted_submitit_job_is_requeued_and_resumes_to_the_same_result(tmp_path, record_property):
    """The SLURM path, with submitit's local executor standing in for SLURM
    (``hydra/launcher=submitit_local``, the same launcher code as ``hydra/launcher=slurm``): the
    job gets SIGUSR2, the signal SLURM sends before a preemption or time-out, between a checkpoint
    and its end; submitit checkpoints the Hydra job, which exits and is started again, and the
    second attempt resumes from ``last.ckpt`` and ends as a run that never stopped."""
    straight_dir = tmp_path / "straight"
    straight = start_twin(straight_dir)  # the twin runs meanwhile
    try:
        for attempt in range(4):  # a loaded machine may let the run finish before the signal lands
            sweep_dir = tmp_path / f"sweep{attempt}"
            signalled = preempt(sweep_dir, tmp_path / f"sweep{attempt}.log")
            (run_dir,) = [p.parent for p in sweep_dir.glob(f"*/{METRICS}")]
            if signalled is not None:
                break
        else:
            pytest.fail("could not signal the job between a checkpoint and the end in 4 attempts")
        assert straight.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        if straight.poll() is None:
            straight.kill()
            straight.wait()
    record_property("signalled_after_step", signalled)
    log = (run_dir / "train.log").read_text()
    assert log.count("resuming from") == 1 and f"resuming from {run_dir / 'last.ckpt'}" in log
    assert_same_run(straight_dir, run_dir, record_property)


def preempt(sweep_dir: Path, log: Path) -> int | None:
    """Start a one-job ``submitit_local`` sweep of ``KILL_RUN`` and send its training process
    SIGUSR2 once it has logged step ``KILL_AFTER_STEP`` (past its checkpoint at step 15); wait for
    the sweep to end. The step it was signalled after, or None if it ended first."""
    command = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        *QUIET,
        *KILL_RUN,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    signalled, deadline = None, time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None and signalled is None and time.monotonic() < deadline:
            runs = [p.parent for p in sweep_dir.glob(f"*/{METRICS}")]
            steps = logged_steps(runs[0]) if runs else []
            if max(steps, default=-1) >= KILL_AFTER_STEP and max(steps) < MAX_STEPS - 1:
                owner = (runs[0] / ".lock").read_text().split()  # "<pid> <host> <time>" of the training process
                os.kill(int(owner[0]), signal.SIGUSR2)
                signalled = max(steps)
            time.sleep(0.005)
        assert proc.wait(timeout=TIMEOUT_S) == 0, log.read_text()[-3000:]
        return signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_job_directory_names_stay_short():
    """A sweep job's directory is named by its overrides, cut to 120 characters with a hash of
    the whole (a long command line would pass the file system's 255-byte limit on a name)."""
    from training.hydra_callbacks import short_dirname

    assert short_dirname("k=1,task=copy") == "k=1,task=copy"
    long_a, long_b = ",".join(f"key{i}=a" for i in range(40)), ",".join(f"key{i}=b" for i in range(40))
    a, b = short_dirname(long_a), short_dirname(long_b)
    assert len(a) == len(b) == 120 and a != b and a.startswith("key0=a,key1=a")
    assert short_dirname(long_a) == a  # the same overrides, the same directory (a rerun resumes there)

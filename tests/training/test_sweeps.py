"""Real multiruns, as README gives them: two jobs in parallel (hydra/launcher=local, joblib), the
sweep's layout, its wandb run names, and scripts/results/compare.py and scripts/results/report.py on it; a
job directory's name kept short. (A job of submitit's launcher preempted, requeued and resumed:
test_resume.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.records import read_metrics, tables, train_rows, wandb_history

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


def test_job_directory_names_stay_short():
    """A sweep job's directory is named by its overrides, cut to 120 characters with a hash of
    the whole (a long command line would pass the file system's 255-byte limit on a name)."""
    from training.hydra_callbacks import short_dirname

    assert short_dirname("k=1,task=copy") == "k=1,task=copy"
    long_a, long_b = ",".join(f"key{i}=a" for i in range(40)), ",".join(f"key{i}=b" for i in range(40))
    a, b = short_dirname(long_a), short_dirname(long_b)
    assert len(a) == len(b) == 120 and a != b and a.startswith("key0=a,key1=a")
    assert short_dirname(long_a) == a  # the same overrides, the same directory (a rerun resumes there)

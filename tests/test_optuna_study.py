"""``hydra/sweeper=optuna_study`` (issue 23): Hydra's Optuna sweeper with its study in the sweep
directory, which the same command continues after an interruption; its default search space, and a
preset's in its place."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from helpers import FAST, ONE_THREAD, ROOT, read_metrics, train_rows

from training.record import METRICS

SMALL = ["task.T=5", "task.batch_size=4", "task.eval_batches=1", "model.hidden_size=8", "trainer.max_steps=20"]


def test_the_default_search_space_is_both_learning_rates_on_a_log_scale(compose_cfg):
    cfg = compose_cfg("hydra/sweeper=optuna_study")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.projunn_sweeper.resumable_optuna.ResumableOptunaSweeper"
    assert dict(sweeper.params) == {
        "optim.lr": "tag(log, interval(1e-4, 1e-2))",
        "optim.unitary_lr_scale": "tag(log, interval(1e-3, 1.0))",
    }
    assert sweeper.direction.name == "minimize" and sweeper.storage is None and sweeper.study_name is None
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed is None


@pytest.mark.integration
def test_an_interrupted_study_continues_where_it_stopped(tmp_path):
    """Three trials of ``debug=tiny`` (20 steps), searching the unitary learning-rate scale alone (a
    preset's ``search_space``); Ctrl-C (SIGINT) during the second trial's training, then the same
    command again: the second trial resumes in its own directory from the checkpoint Ctrl-C wrote,
    the third runs, and the study holds three complete trials, each the ``metric`` (last val/loss)
    of its run directory."""
    import optuna

    presets = tmp_path / "conf" / "experiment"
    presets.mkdir(parents=True)
    (presets / "search_unitary_lr.yaml").write_text(
        "# @package _global_\nsearch_space:\n  optim.unitary_lr_scale: tag(log, interval(0.01, 0.5))\n"
    )
    sweep = tmp_path / "study"
    command = [sys.executable, "train.py", "-m", "hydra/sweeper=optuna_study", "hydra.sweeper.n_trials=3"]
    command += [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=search_unitary_lr", *FAST, *SMALL]
    command += [f"hydra.sweep.dir={sweep}"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env=ONE_THREAD, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while first.poll() is None and time.monotonic() < deadline:
            second = [p.parent for p in sweep.glob(f"1_*/{METRICS}")]
            if second and any(r.get("train/loss") for r in read_metrics(second[0])):
                first.send_signal(signal.SIGINT)
                break
            time.sleep(0.01)
        assert first.wait(timeout=600) == 130, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.load_study(study_name=sweep.name, storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    (run0,) = sweep.glob("0_*")
    before = (run0 / METRICS).read_text()

    again = subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "trial 1 was interrupted: running it again" in log
    assert f"study {sweep.name} in {storage}: 2 of 3 trials done" in log
    study = optuna.load_study(study_name=sweep.name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in runs] == ["0", "1", "2"]  # one directory per trial, none redone
    assert (run0 / METRICS).read_text() == before
    assert (runs[1] / "train.log").read_text().count("resuming from") == 1
    for trial, run in zip(study.trials, runs):
        assert set(trial.params) == {"optim.unitary_lr_scale"} and 0.01 <= trial.params["optim.unitary_lr_scale"] <= 0.5
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        assert f"optim.unitary_lr_scale={trial.params['optim.unitary_lr_scale']}" in overrides
        rows = read_metrics(run)
        assert sorted(train_rows(rows)) == list(range(20))  # every step once, the resumed trial's too
        assert trial.value == pytest.approx([float(r["val/loss"]) for r in rows if r.get("val/loss")][-1])

    # Started once more, the study is complete: no trial runs.
    done = subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "3 of 3 trials done" in log and "Launching" not in log
    assert len(optuna.load_study(study_name=sweep.name, storage=storage).trials) == 3

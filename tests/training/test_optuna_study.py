"""``hydra/sweeper=optuna_study`` (issue 23): an Optuna search with its study in the sweep directory,
which the same command continues after an interruption; its default search space, a preset's in its
place and the command line's over both; the direction of the search."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.helpers import ROOT
from tests.helpers.records import read_metrics, table_rows, train_rows
from tests.helpers.runs import FAST, ONE_THREAD
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
    assert sweeper.n_trials == 20 and sweeper.n_jobs == 1 and sweeper.max_failure_rate == 0


def test_a_mistyped_sweeper_setting_fails_at_composition_naming_its_key(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="n_trials"):
        compose_cfg("hydra/sweeper=optuna_study", "hydra.sweeper.n_trials=many")
    with pytest.raises(ConfigCompositionException, match="direction"):
        compose_cfg("hydra/sweeper=optuna_study", "hydra.sweeper.direction=maximise")


def run_study(hydra_sweep_runner, sweep, task, *overrides):
    """``task`` as train.py, in this process, through Hydra's launcher: the trials of the study it
    leaves in ``sweep``, the search's results file and the numbers of its job directories."""
    import optuna

    with hydra_sweep_runner(
        calling_file=__file__,
        calling_module=None,
        task_function=task,
        config_path="../../conf",
        config_name="config",
        overrides=["hydra/sweeper=optuna_study", "hydra.job_logging.root=null", *overrides],  # pytest's logging stays
        temp_dir=sweep,
    ):  # it deletes the sweep directory when it ends
        study = optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep / 'optuna.db'}")
        jobs = sorted(int(p.name.split("_")[0]) for p in sweep.iterdir() if p.is_dir())
        return study.trials, OmegaConf.load(sweep / "optimization_results.yaml"), jobs


@pytest.mark.parametrize("direction, best", [("minimize", min), ("maximize", max)])
def test_the_best_trial_is_the_smallest_metric_or_the_largest_by_direction(
    hydra_sweep_runner, tmp_path, direction, best
):
    """Five trials, two launched at a time, whose metric is the learning rate they drew; trial i
    runs as job i."""
    trials, results, jobs = run_study(
        hydra_sweep_runner,
        tmp_path / "study",
        lambda cfg: cfg.optim.lr,
        f"hydra.sweeper.direction={direction}",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.n_jobs=2",
    )
    values = [t.value for t in trials]
    assert len(set(values)) == 5 and [t.number for t in trials] == jobs == list(range(5))
    assert results.best_value == best(values) == results.best_params["optim.lr"]


def test_the_command_line_replaces_a_key_of_a_presets_search_space_or_fixes_it(hydra_sweep_runner, tmp_path):
    """A search space given as a preset's (``search_space``) in place of ``params``: the command
    line's sweep of ``k`` replaces the preset's, its fixed ``optim.lr`` takes that key out of the
    search; ``seed`` keeps the preset's integer range."""
    jobs = []

    def task(cfg):
        jobs.append((cfg.optim.lr, cfg.optim.unitary_lr_scale, cfg.k, cfg.seed))
        return float(cfg.seed)

    search_space = "{optim.lr:'tag(log,interval(1e-4,1e-2))',k:'range(1,9)',seed:'range(0,10,3)'}"
    trials, _, _ = run_study(
        hydra_sweep_runner,
        tmp_path / "study",
        task,
        f"+search_space={search_space}",
        "k=choice(2,4)",
        "optim.lr=0.003",
        "hydra.sweeper.n_trials=6",
    )
    assert [set(t.params) for t in trials] == [{"k", "seed"}] * 6
    default_scale = OmegaConf.load(ROOT / "conf" / "optim" / "projunn_t.yaml").unitary_lr_scale
    assert [(0.003, default_scale, t.params["k"], t.params["seed"]) for t in trials] == jobs
    assert {t.params["k"] for t in trials} <= {2, 4} and {t.params["seed"] for t in trials} <= {0, 3, 6, 9}


def test_a_trial_left_before_its_job_started_is_failed_and_a_failing_job_stops_the_search(hydra_sweep_runner, tmp_path):
    """A study holding a running trial that recorded no overrides (its process died before the
    launch): a second start marks it failed, not run, and goes on; a job that raises stops the
    search with the job's error (``max_failure_rate`` 0), its trial marked failed."""
    import optuna

    sweep = tmp_path / "study"
    sweep.mkdir()
    optuna.create_study(study_name=sweep.name, storage=f"sqlite:///{sweep / 'optuna.db'}").ask()

    def task(cfg):
        if cfg.optim.lr > 5e-3:
            raise RuntimeError(f"diverged at lr={cfg.optim.lr}")
        return cfg.optim.lr

    trials, results, jobs = run_study(
        hydra_sweep_runner, sweep, task, "optim.lr=interval(1e-4, 1e-3)", "hydra.sweeper.n_trials=3"
    )
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert jobs == [1, 2] and results.best_value == min(t.value for t in trials[1:])

    with pytest.raises(RuntimeError, match="diverged at lr="):
        run_study(hydra_sweep_runner, tmp_path / "failing", task, "optim.lr=interval(6e-3, 1e-2)")
    study = optuna.load_study(study_name="failing", storage=f"sqlite:///{tmp_path / 'failing' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


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

    # The report's table of the search: a row per trial, with what the study holds.
    def report(folder):
        command = [sys.executable, "-m", "scripts.results.report", str(folder), "--search"]
        return subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=300)

    table = report(sweep)
    assert table.returncode == 0, table.stderr[-3000:]
    rows = table_rows(table.stdout)
    ranked = sorted(study.trials, key=lambda t: t.value)  # val/loss: the study minimises
    assert [row["trial"] for row in rows] == ["0", "1", "2"] and {row["state"] for row in rows} == {"complete"}
    for trial, row in zip(study.trials, rows):
        assert float(row["optim.unitary_lr_scale"]) == pytest.approx(trial.params["optim.unitary_lr_scale"], rel=1e-2)
        assert float(row["val/loss, told the study"]) == pytest.approx(trial.value, abs=5e-3)
        assert row["rank"] == str(ranked.index(trial) + 1) and row["trained"] == "20 of 20 steps"
    missing = report(tmp_path)
    assert missing.returncode == 1 and "no study in" in missing.stderr

    # Started once more, the study is complete: no trial runs.
    done = subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "3 of 3 trials done" in log and "Launching" not in log
    assert len(optuna.load_study(study_name=sweep.name, storage=storage).trials) == 3

"""Resuming, each way a run stops and goes on: checkpoints read back with a fallback (a truncated last.ckpt
gives way to the previous one); SIGINT / SIGTERM that stop at a step with a checkpoint; a SIGKILL, and a
crash during an evaluation or before the first checkpoint; a run continued in a fresh directory from
only the files git holds, or from a record made by older code; a preempted SLURM job requeued. Each
resumed run equals one that never stopped. The same command continues a run, does not start a finished
one over, and a checkpoint of another configuration is refused. (Writing checkpoints and the run
directory's lock: test_run_dir.py; a torn record file: test_torn_records.py.)

Runs are real ``python train.py`` processes where the process is the point (a signal, a kill, a
requeue); the rest runs in-process, a crash then being an exception raised from a callback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from scripts.results.record import held_by_git
from tests.helpers import ROOT
from tests.helpers.hooks import CrashAt, SignalAt, SimulatedCrash, add
from tests.helpers.records import FIXTURE_9AADA1C, load_checkpoint, logged_steps, max_abs_diff, read_metrics, train_rows
from tests.helpers.runs import (
    ENV,
    FAST,
    KILL_AFTER_STEP,
    KILL_RUN,
    MAX_STEPS,
    QUIET,
    TIMEOUT_S,
    assert_one_error_line,
    assert_same_run,
    command,
    run_train,
    start_twin,
)
from training.interrupts import Interrupted
from training.record import METRICS, SUMMARY
from training.run_dir import (
    checkpoint_to_resume,
    unreadable,
)

RUN = KILL_RUN  # copy, k = 2, a cosine schedule, checkpoints every 5 steps, 30 steps


# ---------------------------------------------------------------------------------------------
# checkpoints written atomically, read back with a fallback
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A short run with checkpoints at steps 5, 10, ...: its last.ckpt and last.prev.ckpt."""
    run_dir = tmp_path_factory.mktemp("finished")
    result = run_train(*RUN, "trainer.max_steps=12", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.integration
@pytest.mark.parametrize("keep", [0, 10, 0.5, -1], ids=["empty", "10-bytes", "half", "all-but-one-byte"])
def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path, keep):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    last, previous = finished_run / "last.ckpt", finished_run / "last.prev.ckpt"
    data = last.read_bytes()
    cut = {0: 0, 10: 10, 0.5: len(data) // 2, -1: len(data) - 1}[keep]
    (run_dir / "last.ckpt").write_bytes(data[:cut])
    (run_dir / "last.prev.ckpt").write_bytes(previous.read_bytes())
    assert unreadable(run_dir / "last.ckpt") and not unreadable(run_dir / "last.prev.ckpt")
    with pytest.warns(UserWarning, match=r"last.ckpt cannot be read .*; resuming from .*last.prev.ckpt"):
        assert checkpoint_to_resume(run_dir, True, None) == str(run_dir / "last.prev.ckpt")
    (run_dir / "last.prev.ckpt").unlink()
    with pytest.raises(
        ValueError, match=r"last.ckpt cannot be read .* no earlier checkpoint: start over with resume=false"
    ):
        checkpoint_to_resume(run_dir, True, None)
    assert checkpoint_to_resume(run_dir, False, None) is None


@pytest.mark.integration
def test_resuming_from_a_truncated_checkpoint_on_the_command_line(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.ckpt").write_bytes((finished_run / "last.ckpt").read_bytes()[:1000])
    (run_dir / "last.prev.ckpt").write_bytes((finished_run / "last.prev.ckpt").read_bytes())
    resumed = run_train(*RUN, run_dir=run_dir)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "last.prev.ckpt" in resumed.stderr
    assert load_checkpoint(run_dir / "last.ckpt")["global_step"] == MAX_STEPS
    (run_dir / "last.ckpt").write_bytes(b"")
    (run_dir / "last.prev.ckpt").unlink()
    failed = run_train(*RUN, run_dir=run_dir)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    (line,) = [x for x in failed.stderr.splitlines() if x.startswith("error: ")]
    assert "last.ckpt cannot be read" in line and "resume=false" in line


# ---------------------------------------------------------------------------------------------
# SIGINT and SIGTERM stop at a step with a checkpoint; the resumed run equals one that never stopped
# ---------------------------------------------------------------------------------------------
def start_and_signal(run_dir: Path, log: Path, signum: int, after_step: int) -> subprocess.CompletedProcess | None:
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command(*RUN, run_dir=run_dir), cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.PIPE, text=True
        )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if max(logged_steps(run_dir), default=-1) >= after_step:
                proc.send_signal(signum)
                _, stderr = proc.communicate(timeout=TIMEOUT_S)
                return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
            time.sleep(0.005)
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    result = run_train(*RUN, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.integration
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_a_step_and_the_resumed_run_equals_the_uninterrupted_one(
    straight_run, tmp_path, signum, status
):
    for attempt in range(3):  # a loaded machine may finish before the signal lands
        run_dir = tmp_path / f"stopped{attempt}"
        result = start_and_signal(run_dir, tmp_path / f"stopped{attempt}.log", signum, after_step=12)
        if result is not None:
            break
    else:
        pytest.fail("the run ended before the signal in 3 attempts")
    assert result.returncode == status, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    name = signal.Signals(signum).name
    assert lines[-1].startswith(f"stopped by {name} after step ") and f"hydra.run.dir={run_dir}" in lines[-1]
    stopped_at = load_checkpoint(run_dir / "last.ckpt")["global_step"]
    assert 12 < stopped_at < MAX_STEPS and f"after step {stopped_at};" in lines[-1]  # the checkpoint is at the stop
    assert not [r for r in read_metrics(run_dir) if r.get("test/loss")]  # no final validation or test
    assert not (run_dir / ".lock").exists()

    resumed = run_train(*RUN, run_dir=run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_checkpoint(straight_run / "last.ckpt"), load_checkpoint(run_dir / "last.ckpt")
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    assert max_abs_diff(a["state_dict"], b["state_dict"]) <= 1e-6
    assert max_abs_diff(a["optimizer_states"], b["optimizer_states"]) <= 1e-6
    rows_a, rows_b = train_rows(read_metrics(straight_run)), train_rows(read_metrics(run_dir))
    assert sorted(rows_a) == sorted(rows_b) == list(range(MAX_STEPS))
    for step in range(MAX_STEPS):
        assert abs(float(rows_a[step]["train/loss"]) - float(rows_b[step]["train/loss"])) <= 1e-6


# ---------------------------------------------------------------------------------------------
# a signal at any step, in-process; the same command continues a run; another configuration's checkpoint
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("signal_at", [9, 14, 29], ids=["before-a-validation", "before-a-checkpoint", "last-step"])
def test_a_signal_at_any_step_resumes_to_the_uninterrupted_run(compose_cfg, tmp_path, signal_at):
    """In-process, with the signal raised during a chosen step: one a validation follows (step 9),
    one a periodic checkpoint follows (step 14), the last one."""
    args = [*RUN, "logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    straight = tmp_path / "straight"
    straight.mkdir()
    train.train(compose_cfg(*args, run_dir=straight))
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    with pytest.raises(Interrupted) as info:
        train.train(compose_cfg(*args, *add("signal", SignalAt, step=signal_at), run_dir=stopped))
    assert info.value.code == 130 and f"after step {signal_at + 1};" in str(info.value)
    assert load_checkpoint(stopped / "last.ckpt")["global_step"] == signal_at + 1
    # the handlers are put back (Python's own, or SIG_IGN where a shell started the tests in the background)
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    train.train(compose_cfg(*args, run_dir=stopped))
    a, b = load_checkpoint(straight / "last.ckpt"), load_checkpoint(stopped / "last.ckpt")
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    assert max_abs_diff(a["state_dict"], b["state_dict"]) <= 1e-6
    rows_a, rows_b = read_metrics(straight), read_metrics(stopped)
    if signal_at == MAX_STEPS - 1:
        # Resumed at its very end, a run only tests, and Lightning then logs the test at global_step − 1
        # (29) where the uninterrupted run logs it at global_step (30): a known quirk of its step count.
        assert rows_a[-1]["test/loss"] and (rows_a[-1]["step"], rows_b[-1]["step"]) == (
            str(MAX_STEPS),
            str(MAX_STEPS - 1),
        )
        rows_b[-1]["step"] = rows_a[-1]["step"]
    assert [(r["step"], bool(r["train/loss"]), bool(r["val/loss"]), bool(r["test/loss"])) for r in rows_a] == [
        (r["step"], bool(r["train/loss"]), bool(r["val/loss"]), bool(r["test/loss"])) for r in rows_b
    ]  # every row once, validations and the test at the same steps
    for x, y in zip(rows_a, rows_b):
        for column in ("train/loss", "val/loss", "test/loss"):
            if x[column]:
                assert abs(float(x[column]) - float(y[column])) <= 1e-6, (x["step"], column)


@pytest.mark.integration
def test_resume_continues_the_run(compose_cfg, tmp_path):
    """A run stopped at step 4 and resumed from last.ckpt ends where an uninterrupted run ends."""
    args = [
        "task=copy",
        "task.T=5",
        "task.batch_size=4",
        "model.hidden_size=8",
        "test=false",
        "logger=csv",
        "trainer.val_check_interval=100",
        "trainer.enable_progress_bar=false",
        "checkpoint_every=4",
    ]
    straight = tmp_path / "straight"
    straight.mkdir()
    train.train(compose_cfg(*args, "trainer.max_steps=8", run_dir=straight))
    cfg = compose_cfg(*args, "trainer.max_steps=4")
    train.train(cfg)
    cfg = compose_cfg(*args, "trainer.max_steps=8")  # same run directory: resumes from last.ckpt
    train.train(cfg)
    a = torch.load(straight / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    losses = lambda d: [r["train/loss"] for r in read_metrics(d) if r.get("train/loss")]
    assert losses(straight) == losses(tmp_path)


@pytest.mark.integration
def test_checkpoint_from_another_configuration(compose_cfg, tmp_path):
    small = tmp_path / "hidden8"
    small.mkdir()
    train.train(compose_cfg("task.T=5", "task.batch_size=4", "model.hidden_size=8", "test=false", *FAST, run_dir=small))
    result = run_train(
        "task.T=5",
        "task.batch_size=4",
        "model.hidden_size=16",
        "trainer.max_steps=3",
        f"ckpt_path={small / 'last.ckpt'}",
        run_dir=tmp_path / "hidden16",
    )
    line = assert_one_error_line(
        result,
        f"error: checkpoint {small / 'last.ckpt'} does not match this configuration: size mismatch for model.rnn.",
    )
    assert "torch.Size([8, 10])" in line and "torch.Size([16, 10])" in line
    assert not (tmp_path / "hidden16" / METRICS).exists()


# ---------------------------------------------------------------------------------------------
# SIGKILL mid-training, then the same command: the same result as a run that never stopped
# ---------------------------------------------------------------------------------------------
def start_and_kill(run_dir: Path, log: Path) -> bool:
    """Start a training run and SIGKILL its process group once it has logged step ``KILL_AFTER_STEP``.
    False if the run ended by itself first."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command(*KILL_RUN, run_dir=run_dir),
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if max(logged_steps(run_dir), default=-1) >= KILL_AFTER_STEP:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                assert proc.returncode == -signal.SIGKILL
                return True
            time.sleep(0.005)
        assert proc.poll() is not None, f"the run did not reach step {KILL_AFTER_STEP} in {TIMEOUT_S} s"
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.integration
def test_sigkill_mid_training_then_resume_equals_uninterrupted_run(tmp_path, record_property):
    straight_dir = tmp_path / "straight"
    straight = start_twin(straight_dir)  # the twin runs meanwhile
    try:
        for attempt in range(4):  # a loaded machine may let the run finish before the kill lands
            killed_dir = tmp_path / f"killed{attempt}"
            killed = start_and_kill(killed_dir, tmp_path / f"killed{attempt}.log")
            if not killed or not (killed_dir / "last.ckpt").is_file():
                continue
            resumed_from = load_checkpoint(killed_dir / "last.ckpt")["global_step"]
            logged_before = logged_steps(killed_dir)
            # A real interruption: the checkpoint is mid-run and rows after it were logged (to be redone).
            if 0 < resumed_from < MAX_STEPS and max(logged_before) >= resumed_from:
                record_property("killed_after_step", max(logged_before))
                record_property("resumed_from_step", resumed_from)
                break
        else:
            pytest.fail("could not kill the run between a checkpoint and the end in 4 attempts")
        # The killed sitting left its record as far as its checkpoint (written after each one), never ahead of it.
        summary = json.loads((killed_dir / SUMMARY).read_text())
        assert summary["status"] == "unfinished" and 0 < summary["steps"]["done"] <= resumed_from
        assert summary["sittings"][-1]["to_step"] == summary["steps"]["done"]
        assert straight.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        if straight.poll() is None:
            straight.kill()
            straight.wait()

    resumed = run_train(*KILL_RUN, run_dir=killed_dir)  # the same command: resume=true and last.ckpt is there
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {killed_dir / 'last.ckpt'}" in resumed.stdout + resumed.stderr
    assert_same_run(straight_dir, killed_dir, record_property)


# ---------------------------------------------------------------------------------------------
# a crash during the validation that follows a checkpoint (the default settings,
# checkpoint_every=100 and val_check_interval=200, make every validation follow one)
# ---------------------------------------------------------------------------------------------
CRASHES = [("validation", 10), ("validation", 20), ("test", 20)]


@pytest.mark.integration
@pytest.mark.parametrize("phase,crash_at", CRASHES, ids=["mid-run-validation", "final-validation", "test"])
def test_crash_during_evaluation_after_a_checkpoint_then_resume_redoes_it(compose_cfg, tmp_path, phase, crash_at):
    """As a SIGKILL there would (checked by hand with real kills), an exception in the validation
    due after step ``crash_at``, or in the test after fitting, leaves the run directory as it is;
    the same command then continues to the uninterrupted run's rows and returned metric."""
    args = [
        "task.T=5",
        "task.batch_size=4",
        "task.eval_batches=1",
        "model.hidden_size=8",
        *QUIET,
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "checkpoint_every=5",
    ]
    straight = tmp_path / "straight"
    straight.mkdir()
    metric_straight = train.train(compose_cfg(*args, run_dir=straight))

    crash = add("crash", CrashAt, hook=f"{phase}_start", step=crash_at if phase == "validation" else "null")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with pytest.raises(SimulatedCrash):
        train.train(compose_cfg(*args, *crash, run_dir=crashed))
    assert 0 < load_checkpoint(crashed / "last.ckpt")["global_step"] <= crash_at
    metric_resumed = train.train(compose_cfg(*args, run_dir=crashed))  # the same command: resumes from last.ckpt

    assert metric_straight is not None and metric_resumed == metric_straight  # what a sweeper receives
    # The interrupted evaluation was redone, once. (The test row's step is left out: a fit resumed at
    # max_steps has nothing to run, and Lightning then labels the test row one step lower.)
    vals = lambda d: [(r["step"], r["val/loss"]) for r in read_metrics(d) if r.get("val/loss")]
    tests = lambda d: [r["test/loss"] for r in read_metrics(d) if r.get("test/loss")]
    assert vals(crashed) == vals(straight) and tests(crashed) == tests(straight)
    losses = lambda d: {s: r["train/loss"] for s, r in train_rows(read_metrics(d)).items()}
    assert losses(crashed) == losses(straight)


@pytest.mark.integration
def test_crash_before_the_first_checkpoint_then_restart_logs_each_step_once(compose_cfg, tmp_path):
    """Killed before its first checkpoint, a run restarts from scratch in the same directory: the
    rows of the lost attempt are dropped, as rows after a checkpoint are on a resume."""
    args = [
        "task.T=5",
        "task.batch_size=4",
        "task.eval_batches=1",
        "model.hidden_size=8",
        *QUIET,
        "test=false",
        "trainer.max_steps=8",
        "trainer.val_check_interval=100",
        "checkpoint_every=5",
    ]
    straight = tmp_path / "straight"
    straight.mkdir()
    train.train(compose_cfg(*args, run_dir=straight))

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with pytest.raises(SimulatedCrash):
        train.train(compose_cfg(*args, *add("crash", CrashAt, hook="train_batch_end", step=3), run_dir=crashed))
    assert not (crashed / "last.ckpt").exists() and logged_steps(crashed)[:1] == [0]
    train.train(compose_cfg(*args, run_dir=crashed))  # nothing to resume from: starts over
    losses = lambda d: {s: r["train/loss"] for s, r in train_rows(read_metrics(d)).items()}
    assert losses(crashed) == losses(straight)


# ---------------------------------------------------------------------------------------------
# a run continued in a fresh directory from the files git holds, or from a record made by older code;
# a finished one is not started over
# ---------------------------------------------------------------------------------------------
def stop_with_sigint(run_dir: Path, log: Path) -> None:
    """Start ``KILL_RUN`` and stop it with SIGINT (the end of a sitting) once it logged step ``KILL_AFTER_STEP``."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command(*KILL_RUN, run_dir=run_dir), cwd=ROOT, env=ENV, stdout=out, stderr=out)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None and max(logged_steps(run_dir), default=-1) < KILL_AFTER_STEP:
            assert time.monotonic() < deadline, f"the run did not reach step {KILL_AFTER_STEP}"
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT_S) == 128 + signal.SIGINT, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration
def test_a_run_continues_from_the_files_git_holds_in_a_fresh_directory(tmp_path, record_property):
    """A sitting ends (SIGINT); its record is made (scripts/results/record.py); only the files .gitignore lets
    git hold are copied to a fresh directory, as a clone on another machine has them; the same
    command continues there and ends as the run that never stopped, and its summary has both sittings."""
    straight = subprocess.Popen(
        command(*KILL_RUN, run_dir=tmp_path / "straight"), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL
    )
    first = ROOT / "outputs" / f".test-record-{os.getpid()}"  # inside the repository: .gitignore applies
    try:
        stop_with_sigint(first, tmp_path / "first.log")
        summary = json.loads((first / "summary.json").read_text())
        assert summary["status"] == "unfinished" and 0 < summary["steps"]["done"] < summary["steps"]["of"] == 30
        recorded = subprocess.run(
            [sys.executable, "-m", "scripts.results.record", str(first.relative_to(ROOT))],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert recorded.returncode == 0, recorded.stderr
        assert "unfinished" in recorded.stdout and "git holds" in recorded.stdout
        names = {p.relative_to(first).as_posix() for p in held_by_git(first)}
        assert {"last.ckpt", "last.prev.ckpt", "metrics.csv", "summary.json", ".hydra/config.yaml"} <= names
        assert not names & {".lock", "train.log"} and not any(n.startswith("wandb/") for n in names)
        fresh = tmp_path / "clone" / "run"
        for name in names:
            (fresh / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(first / name, fresh / name)
    finally:
        shutil.rmtree(first, ignore_errors=True)
    continued = run_train(*KILL_RUN, run_dir=fresh)
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert straight.wait(timeout=TIMEOUT_S) == 0
    assert_same_run(tmp_path / "straight", fresh, record_property)
    summary = json.loads((fresh / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == {"done": 30, "of": 30}
    assert [s["to_step"] for s in summary["sittings"]][-1] == 30 and len(summary["sittings"]) == 2
    assert summary["sittings"][1]["from_step"] == summary["sittings"][0]["to_step"]


def test_a_finished_record_is_not_started_over_by_the_same_command(compose_cfg, tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished"}))
    (tmp_path / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    from train import train

    with pytest.raises(ValueError, match="holds the record of a finished run"):
        train(compose_cfg(*KILL_RUN, "logger=csv"))
    assert (tmp_path / "metrics.csv").read_text() == "step,train/loss\n0,1.0\n"  # the record untouched


@pytest.mark.integration
def test_a_record_made_before_the_recut_continues_and_reports(tmp_path, record_property):
    """The files git held of ``KILL_RUN`` stopped at step 19 by the code of 9aada1c (before the run
    record's re-cut; tests/fixtures/record_9aada1c) continue with today's code to the run that never
    stopped, and the report reads the result: the long paper runs started before it go on."""
    straight = start_twin(tmp_path / "straight")
    resumed = tmp_path / "clone" / "run"
    shutil.copytree(FIXTURE_9AADA1C, resumed)
    continued = run_train(*KILL_RUN, run_dir=resumed)
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert "dirpath has changed" not in continued.stderr  # its checkpoint named where it was made
    assert "callbacks used to create the checkpoint" not in continued.stderr  # its StepCheckpoint state: dropped
    assert straight.wait(timeout=TIMEOUT_S) == 0
    assert_same_run(tmp_path / "straight", resumed, record_property)
    assert str(tmp_path).encode() not in (resumed / "last.ckpt").read_bytes()  # names no path of this machine
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished" and [s["commit"][:7] for s in summary["sittings"]][0] == "9aada1c"
    report_command = [sys.executable, "-m", "scripts.results.report", str(resumed)]
    report = subprocess.run(report_command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert report.returncode == 0 and "30 steps" in report.stdout, report.stdout + report.stderr


# ---------------------------------------------------------------------------------------------
# preemption on SLURM: the submitit launcher requeues, the requeued job resumes (submitit's local
# executor standing in for SLURM)
# ---------------------------------------------------------------------------------------------
def test_slurm_launcher_requeues_and_a_requeued_job_resumes(compose_cfg, tmp_path):
    from hydra.utils import get_class

    cfg = compose_cfg("hydra/launcher=slurm", *FAST)
    launcher = cfg.hydra.launcher
    cls = get_class(launcher._target_)
    assert cls.__name__ == "SlurmLauncher" and cls.__module__.startswith("hydra_plugins.hydra_submitit_launcher")
    assert callable(getattr(cls, "checkpoint", None))  # submitit calls it on preemption/timeout to resubmit
    assert launcher.max_num_timeout > 0 and launcher.additional_parameters.requeue is True
    assert cfg.resume is True and cfg.ckpt_path is None
    # The requeued job runs in the same run directory and finds last.ckpt there.
    assert checkpoint_to_resume(tmp_path, cfg.resume, cfg.ckpt_path) is None
    torch.save({"global_step": 3}, tmp_path / "last.ckpt")
    assert checkpoint_to_resume(tmp_path, cfg.resume, cfg.ckpt_path) == str(tmp_path / "last.ckpt")
    assert checkpoint_to_resume(tmp_path, False, cfg.ckpt_path) is None


@pytest.mark.integration
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

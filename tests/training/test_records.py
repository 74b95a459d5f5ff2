"""Run records kept in git (training/summary.py, scripts/results/record.py, .gitignore): metrics.csv thinned
by a rule of the step alone, curves rounded, summary.json over sittings, a full disk while a
checkpoint is written, and a run continued from only the files git holds, in a fresh directory,
against the run that never stopped."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scripts.results.record import held_by_git
from tests.helpers import ROOT
from tests.helpers.records import FIXTURE_9AADA1C, logged_steps
from tests.helpers.runs import (
    ENV,
    KILL_AFTER_STEP,
    KILL_RUN,
    TIMEOUT_S,
    assert_same_run,
    command,
    run_train,
    start_twin,
)
from training import run_dir as run_dir_module
from training.summary import RunSummary, compact_diagnostics, stride, thin_metrics, write_summary

COLUMNS = [
    "step",
    "epoch",
    "grad_time/first",
    "time/step_s",
    "train/loss",
    "unitarity/max_error",
    "val/loss",
    "test/acc",
]


def write_rows(path: Path, steps: range) -> None:
    """A metrics.csv as a run writes it: a training row per step, validation every 25 steps (in the
    same row), diagnostics every 40, and a test row after the last step."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for step in steps:
            row = {
                "step": step,
                "epoch": 0,
                "time/step_s": 0.1,
                "train/loss": 1 / (step + 1),
                "unitarity/max_error": 1e-6,
            }
            if step % 25 == 24:
                row["val/loss"] = 2 / (step + 1)
            if step % 40 == 0:
                row["grad_time/first"] = 3.0
            writer.writerow(row)
        writer.writerow({"step": steps[-1], "test/acc": 0.5})


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_thinning_keeps_every_row_a_table_or_curve_reads(tmp_path):
    path = tmp_path / "metrics.csv"
    write_rows(path, range(1000))
    full = rows(path)
    assert thin_metrics(path, 10) == (len(full), len(rows(path)))
    kept = rows(path)
    steps = [int(r["step"]) for r in kept if r["train/loss"]]
    assert [s for s in steps if s % 10 == 9] == list(range(9, 1000, 10))  # every 10th step's row
    for column in ("val/loss", "grad_time/first", "test/acc"):  # all of them, unchanged
        assert [r[column] for r in kept if r[column]] == [r[column] for r in full if r[column]]
    assert kept[-1] == full[-1] | {"time/train_s": ""} and 999 in steps  # the last step (the test row)
    total = [r["time/train_s"] for r in kept if r["step"] == "999" and r["time/train_s"]]
    assert float(total[0]) == pytest.approx(0.1 * 1000)  # the training time of every step, those left out too
    strip = [{k: v for k, v in r.items() if k != "time/train_s"} for r in kept]
    assert all(r in full for r in strip) and len(kept) < len(full) / 5


def test_thinning_twice_or_across_a_resume_keeps_the_same_rows(tmp_path):
    once, twice, resumed = tmp_path / "once.csv", tmp_path / "twice.csv", tmp_path / "resumed.csv"
    for path in (once, twice):
        write_rows(path, range(1000))
    thin_metrics(once, 20)
    thin_metrics(twice, 20)
    thin_metrics(twice, 20)
    # a sitting ends at step 500 (thinned for git), the next appends steps 500..999 to that file
    write_rows(resumed, range(500))
    thin_metrics(resumed, 20)
    head = [r for r in rows(resumed) if not r["test/acc"]]
    write_rows(tmp_path / "tail.csv", range(500, 1000))
    with resumed.open("w", newline="") as f:  # as MetricsCSV appends: under the header it found
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "time/train_s"])
        writer.writeheader()
        writer.writerows(head + rows(tmp_path / "tail.csv"))
    thin_metrics(resumed, 20)
    assert rows(once) == rows(twice) == rows(resumed)


@pytest.mark.parametrize("planned,every", [(30, 1), (2000, 1), (2001, 2), (20_000, 10), (46_900, 50), (100_000, 50)])
def test_stride_keeps_at_most_2000_step_rows(planned, every):
    assert stride(planned) == every and planned / every <= 2000


def test_curves_are_rounded_to_six_significant_digits(tmp_path):
    path = tmp_path / "diagnostics.jsonl"
    records = [{"step": 0, "grad_time": [1 / 3, 2e-9 / 7, float("inf")], "spectrum": {"eig": [123456.789]}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    compact_diagnostics(path)
    (back,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert back == {"step": 0, "grad_time": [0.333333, 2.85714e-10, float("inf")], "spectrum": {"eig": [123457.0]}}


def trainer_at(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, current_epoch=0, max_steps=1000, max_epochs=None)


def test_summary_keeps_the_sittings_and_the_last_and_best_metrics(tmp_path):
    write_rows(tmp_path / "metrics.csv", range(400))
    first = RunSummary()
    first.from_step = 0
    write_summary(tmp_path, first, ["task=copy"], trainer_at(400), finished=False)
    write_rows(tmp_path / "metrics.csv", range(1000))
    second = RunSummary()
    second.started += 1  # another sitting
    second.from_step = 400
    summary = write_summary(tmp_path, second, ["task=copy"], trainer_at(1000), finished=True)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["command"] == "python train.py task=copy" and summary["status"] == "finished"
    assert summary["steps"] == {"done": 1000, "of": 1000}
    assert [(s["from_step"], s["to_step"]) for s in summary["sittings"]] == [(0, 400), (400, 1000)]
    assert summary["sittings"][1]["torch"] == torch.__version__ and summary["sittings"][1]["machine"]["cpus"]
    assert summary["final"]["val/loss"] == pytest.approx(2 / 1000) and summary["best"]["val/loss"] == pytest.approx(
        2 / 1000
    )
    assert summary["final"]["test/acc"] == 0.5 and summary["median_step_s"] == pytest.approx(0.1)


def test_a_sitting_records_the_commit_it_started_from(tmp_path, monkeypatch):
    import training.summary

    write_rows(tmp_path / "metrics.csv", range(10))
    monkeypatch.setattr(training.summary, "commit", lambda: "started-here")
    sitting = RunSummary()
    sitting.from_step = 0
    monkeypatch.setattr(training.summary, "commit", lambda: "checked-out-later")  # the checkout moved mid-run
    summary = write_summary(tmp_path, sitting, ["task=copy"], trainer_at(10), finished=False)
    assert summary["sittings"][0]["commit"] == "started-here"


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
    assert straight.wait(timeout=TIMEOUT_S) == 0
    assert_same_run(tmp_path / "straight", resumed, record_property)
    assert str(tmp_path).encode() not in (resumed / "last.ckpt").read_bytes()  # names no path of this machine
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished" and [s["commit"][:7] for s in summary["sittings"]][0] == "9aada1c"
    report_command = [sys.executable, "-m", "scripts.results.report", str(resumed)]
    report = subprocess.run(report_command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert report.returncode == 0 and "30 steps" in report.stdout, report.stdout + report.stderr


def test_a_thinned_record_gives_the_figures_of_the_full_one(tmp_path):
    """scripts.results.compare on a record thinned by scripts.results.record: the steps done and the diagnostics'
    share of the step time are the full record's (they were 1,126 steps and 30.54 % on the pMNIST
    record, where the run took 46,800 steps and its diagnostics 0.7 % of the time)."""
    from scripts.results.compare import load, measure, steps_done

    full, thinned = tmp_path / "full", tmp_path / "thinned"
    for run in (full, thinned):
        shutil.copytree(FIXTURE_9AADA1C, run)
    before, after = thin_metrics(thinned / "metrics.csv", every=5)
    assert after < before
    a, b = load(full), load(thinned)
    assert steps_done(a) == steps_done(b) == 19
    share = "diagnostics / step time"
    assert 0 < measure(a)[share] == pytest.approx(measure(b)[share], rel=1e-9)


def test_a_run_read_mid_sitting_gives_the_figures_of_its_summary(tmp_path):
    """Rows a sitting logged after its last summary.json are not mixed into the figures read with it."""
    from scripts.results.compare import load, steps_done

    run = tmp_path / "run"
    shutil.copytree(FIXTURE_9AADA1C, run)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    with (run / "metrics.csv").open("a") as f:
        f.write(",".join("25" if c == "step" else "0.5" if c == "train/loss" else "" for c in header) + "\n")
    assert steps_done(load(run)) == json.loads((run / "summary.json").read_text())["steps"]["done"] == 19

"""Run records kept in git (training/summary.py, scripts/results/record.py, .gitignore): metrics.csv thinned
by a rule of the step alone, curves rounded, summary.json over sittings; a thinned record, or one read
mid-sitting, gives the figures of the full one. (A run continued from only the files git holds:
test_resume.py.)"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers.records import FIXTURE_9AADA1C
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

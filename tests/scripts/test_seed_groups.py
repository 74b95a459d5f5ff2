"""Runs that differ only by seed as one entry (issue 23): scripts/results/compare.py's and scripts/results/report.py's
groups as mean ± std and n, checked against a hand computation from the runs' metrics.csv; the
bands of the plots; ``compare.py --baseline``'s differences and 95 % intervals on runs whose
outcome is known. (The wandb group of a seed group: tests/training/test_wandb.py.) The runs are written
here in the format a run writes (metrics.csv, .hydra/), except for one real ``seed=0,1,2 k=1,2`` sweep (integration)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from scripts.results import compare, report
from tests.helpers import ROOT
from tests.helpers.records import read_metrics, tables
from tests.helpers.runs import FAST, ONE_THREAD, run_sweep
from training.record import METRICS

STEPS = 40
# Student's t quantiles t(0.975, df) from a printed table, independent of the code under test.
T_975 = {2: 4.302653, 4: 2.776445}
# How comparison.md writes each metric checked here (README's "mean ± std", the digits it shows).
FORMATS = {"final train/loss": ".4g", "val/loss": ".4g", "test/loss": ".4g", "test/acc": ".4g"}
FORMATS |= {"median step (ms)": ".2f", "max unitarity error": ".2e"}


def write_run(run_dir, overrides, *, seed, test_acc, best=None, choices=None, config=None, epochs=1):
    """A run directory as train.py leaves it: metrics.csv (one row per step, columns ``step`` and the
    metric names in order, validation every 10 steps, ``epochs`` epochs, the final test at step
    ``STEPS``, with ``test/acc_best`` when ``best`` is given) and .hydra/."""
    rng = np.random.default_rng(seed + 100 * len(str(run_dir)))
    columns = ["step", "epoch", "test/acc", "test/acc_best", "test/loss", "time/step_s", "time/update_s"]
    columns += ["train/loss", "unitarity/max_error", "val/acc", "val/loss"]
    rows = []
    for step in range(STEPS):
        epoch = max(0, (step + 1) * epochs // STEPS - 1)
        row = {"step": step, "epoch": epoch, "train/loss": 2 * math.exp(-step / 20)}
        row["train/loss"] += 0.1 * rng.random()
        row.update({"time/step_s": 0.05 + 0.01 * rng.random(), "time/update_s": 0.01 + 0.005 * rng.random()})
        row["unitarity/max_error"] = 1e-7 * (1 + rng.random())
        if step % 10 == 9:
            row.update({"val/loss": row["train/loss"] + rng.random(), "val/acc": rng.random()})
        rows.append(row)
    rows.append({"step": STEPS, "epoch": rows[-1]["epoch"], "test/acc": test_acc, "test/loss": 1 + rng.random()})
    if best is not None:
        rows[-1]["test/acc_best"] = best
    run_dir.mkdir(parents=True)
    with open(run_dir / METRICS, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    hydra = run_dir / ".hydra"
    hydra.mkdir()
    (hydra / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    k = int(next((o.split("=")[1] for o in overrides if o.startswith("k=")), 1))
    composed = {"seed": seed, "k": k, "optim": {"projector": "T"}, "model": {}, "trainer": {"max_steps": STEPS}}
    (hydra / "config.yaml").write_text(yaml.safe_dump({**composed, **(config or {})}))
    runtime = {"choices": {"task": "copy", "optim": "projunn_t", **(choices or {})}}
    (hydra / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": runtime}}))


@pytest.fixture
def sweep(tmp_path):
    """``seed=0,1,2 k=1,2``, numbered as a sweep numbers its jobs; k=2 has a test accuracy higher
    than k=1's by 0.10, 0.11, 0.12 for seeds 0, 1, 2; k=4 ran seeds 3, 4, 5 with k=1's accuracies + 0.05."""
    base = [0.50, 0.60, 0.58]
    job = 0
    for seed in range(3):
        for k, acc in ((1, base[seed]), (2, base[seed] + 0.10 + 0.01 * seed)):
            write_run(tmp_path / f"{job}_k={k},seed={seed}", [f"k={k}", "task.T=5"], seed=seed, test_acc=acc)
            job += 1
    for seed in range(3):
        write_run(
            tmp_path / f"{job}_k=4,seed={seed + 3}", ["k=4", "task.T=5"], seed=seed + 3, test_acc=base[seed] + 0.05
        )
        job += 1
    return tmp_path


def by_hand(runs) -> dict[str, tuple[float, float]]:
    """``(mean, sample std)`` over ``runs`` of some metrics of comparison.md, from metrics.csv read with csv."""

    def last(rows, key):
        return [float(r[key]) for r in rows if r.get(key)][-1]

    def stats(values):
        mean = sum(values) / len(values)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    per_run = []
    for run in runs:
        rows = read_metrics(run)
        losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
        steps = sorted(float(r["time/step_s"]) for r in rows if r.get("time/step_s"))
        per_run.append(
            {
                "final train/loss": sum(losses[-max(1, len(losses) // 20) :]) / max(1, len(losses) // 20),
                "val/loss": last(rows, "val/loss"),
                "test/loss": last(rows, "test/loss"),
                "test/acc": last(rows, "test/acc"),
                "median step (ms)": 1e3 * np.median(steps),
                "max unitarity error": max(
                    float(r["unitarity/max_error"]) for r in rows if r.get("unitarity/max_error")
                ),
            }
        )
    return {key: stats([r[key] for r in per_run]) for key in per_run[0]}


def parse(cell: str) -> tuple[float, float]:
    mean, std = cell.split(" ± ")
    return float(mean.rstrip("%")), float(std.rstrip("%"))


def table_rows(markdown: str, index: int = 0) -> dict[str, dict[str, str]]:
    header, *rows = tables(markdown)[index]
    return {row[0]: dict(zip(header, row)) for row in rows}


def test_a_seed_sweep_is_one_row_per_group_with_mean_std_and_n(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    assert compare.main([str(sweep), "--out", str(out)]) == 0
    rows = table_rows((out / "comparison.md").read_text())
    assert list(rows) == ["k=1", "k=2", "k=4"]
    for label, row in rows.items():
        assert row["n"] == "3" and row["steps"] == str(STEPS)
        runs = sorted(p for p in sweep.iterdir() if p.name.split("_")[1].startswith(label + ","))
        assert len(runs) == 3
        for metric, (mean, std) in by_hand(runs).items():
            spec = FORMATS[metric]
            assert row[metric] == f"{mean:{spec}} ± {std:{spec}}", (label, metric)
        assert row["best test/acc"] == "–"  # not logged by these runs


def test_each_plot_has_one_band_per_group(sweep, tmp_path, monkeypatch):
    """The loss and unitarity plots draw, for each group, its mean curve and one shaded band (min–max)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    seen = {}

    def savefig(self, path, **kwargs):
        ax = self.axes[0]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        seen[os.path.basename(path)] = (bands, [t.get_text() for t in ax.get_legend().get_texts()], ax.get_title())

    monkeypatch.setattr(Figure, "savefig", savefig)
    groups = compare.groups(compare.find_runs([sweep]))
    data = {label: [compare.load(run) for run in runs] for label, runs in groups.items()}
    compare.plot(data, tmp_path, groups)
    assert set(seen) == {"loss_vs_step.png", "loss_vs_time.png", "unitarity_vs_step.png"}
    for name, (bands, legend, title) in seen.items():
        assert len(bands) == 3, name  # k=1, 2, 4
        assert "min–max" in title
        assert any(text.startswith("k=2") and "(n = 3)" in text for text in legend)
    # A band spans its runs: at step 0 of k=1 it runs from the lowest to the highest train loss.
    losses = [compare.load(run)["train/loss"].iloc[0] for run in groups["k=1"]]
    data = {"k=1": [compare.load(run) for run in groups["k=1"]]}
    seen.clear()
    compare.plot(data, tmp_path)
    (band,), _, _ = seen["loss_vs_step.png"]
    edge = band.get_paths()[0].vertices
    at_zero = edge[np.isclose(edge[:, 0], 0), 1]
    assert at_zero.min() == pytest.approx(min(losses)) and at_zero.max() == pytest.approx(max(losses))


def test_baseline_differences_have_their_95_percent_intervals(sweep, tmp_path, capsys):
    assert compare.main([str(sweep), "--out", str(tmp_path), "--baseline", "k=1"]) == 0
    printed = capsys.readouterr().out
    rows = {(row[0], row[1]): row for row in tables(printed)[1][1:]}
    header = tables(printed)[1][0]
    assert header[4:] == ["difference", "95 % interval", "excludes 0", "method"]
    # k=2 - k=1, paired by seed: differences 0.10, 0.11, 0.12: mean 0.11, sd 0.01, t(0.975, 2).
    paired = rows[("k=2", "test/acc")]
    half = T_975[2] * 0.01 / math.sqrt(3)
    low, high = (float(x) for x in paired[5].strip("[]").split(", "))
    assert float(paired[4]) == pytest.approx(0.11, rel=1e-3)
    assert (low, high) == pytest.approx((0.11 - half, 0.11 + half), rel=1e-3)
    assert paired[6] == "yes" and paired[7] == "paired by seed, n = 3"
    # k=4 - k=1, other seeds: Welch; equal variances and n give df = 2 (n - 1) = 4 exactly.
    welch = rows[("k=4", "test/acc")]
    base = [0.50, 0.60, 0.58]
    mean = sum(base) / 3
    se = math.sqrt(2 * sum((b - mean) ** 2 for b in base) / 2 / 3)
    low, high = (float(x) for x in welch[5].strip("[]").split(", "))
    assert float(welch[4]) == pytest.approx(0.05, rel=1e-3)
    assert (low, high) == pytest.approx((0.05 - T_975[4] * se, 0.05 + T_975[4] * se), rel=1e-3)
    assert welch[6] == "no" and welch[7] == "Welch, n = 3, 3, df = 4.0"
    assert "Differences against k=1" in (tmp_path / "comparison.md").read_text()


def test_group_by_named_keys_and_one_line_errors(sweep, tmp_path, capsys):
    assert compare.main([str(sweep), "--out", str(tmp_path), "--by", "task.T"]) == 0
    (row,) = table_rows(capsys.readouterr().out).values()
    assert row["n"] == "9"
    assert compare.main([str(sweep), "--out", str(tmp_path), "--baseline", "k=3"]) == 1
    assert capsys.readouterr().err.strip() == "error: --baseline k=3 is not a group; the groups: k=1, k=2, k=4"
    assert compare.main([str(sweep), "--out", str(tmp_path), "--by", "lr"]) == 1
    assert capsys.readouterr().err.strip() == "error: --by lr: no run has an override of lr"


def test_report_rows_are_seed_groups_and_paper_rows_say_how_many_runs(tmp_path, capsys):
    """Two complete runs of the pMNIST preset (seeds 0 and 1): one row, mean ± std of their best
    test accuracies, "2 runs" against the paper's mean of 3; one seed alone says "1 run"."""
    best = {0: 0.941, 1: 0.947}
    for seed, acc in best.items():
        run = tmp_path / "pmnist" / f"seed{seed}"
        write_run(
            run,
            ["experiment=pmnist", "optim=projunn_d"],
            seed=seed,
            test_acc=acc - 0.01,
            best=acc,
            choices={"experiment": "pmnist", "optim": "projunn_d", "task": "pmnist"},
            config={"model": {"hidden_size": 170}, "trainer": {"max_epochs": 100, "max_steps": -1}},
            epochs=100,
        )
    runs = sorted((tmp_path / "pmnist").iterdir())
    report.main([str(tmp_path / "pmnist")])
    (row,) = table_rows(capsys.readouterr().out).values()
    mean, std = 100 * (best[0] + best[1]) / 2, 100 * abs(best[0] - best[1]) / math.sqrt(2)
    assert row["run"] == "projUNN-D, n = 170, k = 1" and row["paper (%)"] == "94.30" and row["runs"] == "2"
    assert row["best test acc (%)"] == f"{mean:.2f} ± {std:.2f}"
    assert row["trained"] == "100 of 100 epochs"
    assert row["command"] == "`python train.py -m experiment=pmnist optim=projunn_d seed=0,1`"
    assert row["run dir"] == ", ".join(f"`{run}`" for run in runs)
    report.main([str(tmp_path / "pmnist"), "--paper", "pmnist"])
    paper = table_rows(capsys.readouterr().out)["projUNN-D, n = 170, k = 1"]
    expected = f"{mean:.2f} ± {std:.2f} (best test accuracy, mean ± std of 2 runs; the paper: mean of 3)"
    assert paper["this implementation (%)"] == expected
    report.main([str(runs[0]), "--paper", "pmnist"])
    paper = table_rows(capsys.readouterr().out)["projUNN-D, n = 170, k = 1"]
    assert paper["this implementation (%)"] == "94.10 (best test accuracy, 1 run; the paper: mean of 3)"


@pytest.mark.integration
def test_a_real_seed_sweep_compares_as_two_groups(tmp_path):
    """``python train.py -m seed=0,1,2 k=1,2 debug=tiny``, then compare.py: two groups of n = 3,
    their test loss the mean ± std of the runs' last test/loss in metrics.csv."""
    sweep = tmp_path / "sweep"
    small = ["task.T=5", "task.batch_size=4", "task.eval_batches=1", "model.hidden_size=8"]
    result = run_sweep(*FAST, *small, "seed=0,1,2", "k=1,2", sweep_dir=sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.results.compare", str(sweep), "--out", str(out), "--baseline", "k=1"],
        cwd=ROOT,
        env=ONE_THREAD,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows((out / "comparison.md").read_text())
    assert list(rows) == ["k=1", "k=2"]
    for label, row in rows.items():
        runs = [p for p in sweep.iterdir() if p.is_dir() and f",{label}," in f",{p.name.split('_', 1)[1]},"]
        assert row["n"] == "3" and len(runs) == 3
        losses = [[float(r["test/loss"]) for r in read_metrics(run) if r.get("test/loss")][-1] for run in runs]
        mean = sum(losses) / 3
        std = math.sqrt(sum((x - mean) ** 2 for x in losses) / 2)
        assert parse(row["test/loss"]) == pytest.approx((mean, std), rel=1e-3, abs=1e-6)
    differences = table_rows((out / "comparison.md").read_text(), 1)
    assert differences["k=2"]["method"] == "paired by seed, n = 3"  # (k=2's last row)
    for figure in ("loss_vs_step.png", "loss_vs_time.png", "unitarity_vs_step.png"):
        assert (out / figure).stat().st_size > 0


def test_accuracy_per_epoch_and_its_figure(tmp_path):
    """pMNIST's curves: the test (and validation) accuracy at each epoch's evaluation, indexed by the
    epochs done; the test after the fit (logged with the epoch counter past the last epoch) is not an
    epoch of its own; the figure is written with the paper's number across it."""
    import pandas as pd

    from scripts.results.compare import per_epoch, plot

    frame = pd.DataFrame(
        {
            "train/loss": [1.0, 0.9, 0.8, 0.7, None],
            "epoch": [0, 0, 1, 1, 2],
            "val/acc": [None, 0.5, None, 0.6, None],
            "test/acc": [None, 0.55, None, 0.62, 0.62],
        },
        index=pd.Index([0, 1, 2, 3, 4], name="step"),
    )
    assert per_epoch(frame, "test/acc").to_dict() == {1: 0.55, 2: 0.62}
    assert per_epoch(frame, "val/acc").to_dict() == {1: 0.5, 2: 0.6}
    assert per_epoch(frame.drop(columns="val/acc"), "val/acc").empty
    written = plot({"run": [frame]}, tmp_path, references={"paper (94.3)": 94.3})
    assert tmp_path / "accuracy_vs_epoch.png" in written

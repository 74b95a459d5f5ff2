"""scripts/reproduction/side_by_side.py: its refusals, its reading of both codes' outputs and its spread table,
on outputs written here. Against the authors' code: ``LOCKSTEP_AUTHORS=<checkout> pytest -m slow``."""

from __future__ import annotations

import _thread
import os
import socket
import statistics
import subprocess
import sys
import time

import pytest

from scripts.reproduction import side_by_side
from tests.helpers import ROOT
from training.record import METRICS


@pytest.mark.integration
def test_without_data_or_the_authors_code_it_says_what_it_needs_in_one_line(tmp_path, capsys):
    for args, needed in (
        (["pmnist"], "needs --data-root"),
        (["pmnist", "--data-root", str(tmp_path / "absent")], "needs --data-root"),
        (["cifar10", "--data-root", str(tmp_path)], "no --authors given"),
        (["pmnist", "--data-root", str(tmp_path), "--authors", str(tmp_path)], "is not a git checkout"),
    ):
        assert side_by_side.main([*args, "--out", str(tmp_path / "out")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needed in lines[0] and lines[0].startswith("side_by_side.py: "), lines
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / ".lock").write_text(f"{os.getpid()} {socket.gethostname()} 2026-01-01 00:00:00\n")
    assert side_by_side.main(["pmnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "busy")]) == 2
    assert f"busy is in use by process {os.getpid()}" in capsys.readouterr().err  # one comparison a folder
    assert side_by_side.main(["cifar10", "--variants", "E", "--report", "--out", str(tmp_path / "out")]) == 2
    assert "unknown variant E; expected one of T, D, resnet9, cayley" in capsys.readouterr().err
    # (its own --out: the default folder may hold the authors' patched script, which needs no --authors, and
    # a comparison under way, which this run would join)
    command = [sys.executable, "-m", "scripts.reproduction.side_by_side", "pmnist", "--data-root", str(tmp_path)]
    command += ["--out", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


def write_authors_log(path, accuracies, losses, steps):
    lines = [
        f"step_time {t}\nTrain Epoch: 0 (1%)\tLoss: {loss:.6f}\tAccuracy: 10.00%" for t, loss in zip(steps, losses)
    ]
    lines += [f"Test set accuracy:  tensor({a}) epoch {e + 1}" for e, a in enumerate(accuracies)]
    path.write_text("\n".join(lines) + "\n")


def write_metrics(run_dir, accuracies, losses, steps):
    run_dir.mkdir(parents=True)
    rows = ["step,epoch,test/acc,time/step_s,train/loss"]
    rows += [f"{i},0,,{t},{loss}" for i, (t, loss) in enumerate(zip(steps, losses))]
    rows += [f"{len(steps) + e},{e},{a},," for e, a in enumerate(accuracies)]
    (run_dir / METRICS).write_text("\n".join(rows) + "\n")


def test_the_table_gives_each_codes_mean_std_and_range_over_seeds(tmp_path):
    theirs = {0: [0.50, 0.60], 1: [0.54, 0.58], 2: [0.46, 0.65]}
    ours = {0: [0.52, 0.57], 1: [0.47, 0.70]}  # seed 2 not run yet
    for seed, accuracies in theirs.items():
        write_authors_log(tmp_path / f"authors_D_s{seed}.log", accuracies, [2.0, 1.8, 1.5 + seed], [0.3, 0.5, 0.7])
    for seed, accuracies in ours.items():
        write_metrics(tmp_path / f"ours_D_s{seed}", accuracies, [2.1, 1.2 + seed], [0.2, 0.4])
    args = ["pmnist", "--out", str(tmp_path), "--report", "--variants", "D", "--epochs", "2"]
    assert side_by_side.main(args) == 0
    table = (tmp_path / "table.md").read_text()

    def cell(values):
        values = [100 * v for v in values]
        mean, std = statistics.mean(values), statistics.stdev(values)
        return f"{mean:.1f} ± {std:.1f} (n = {len(values)}; {min(values):.1f}–{max(values):.1f})"

    epoch1_theirs, epoch1_ours = [a[0] for a in theirs.values()], [a[0] for a in ours.values()]
    assert f"| epoch 1 | {cell(epoch1_theirs)} | {cell(epoch1_ours)} | yes |" in table  # 49.5 in 46–54
    epoch2_theirs, epoch2_ours = [a[1] for a in theirs.values()], [a[1] for a in ours.values()]
    assert f"| epoch 2 | {cell(epoch2_theirs)} | {cell(epoch2_ours)} | yes |" in table  # 63.5 in 58–65
    assert (
        "authors' runs: median step 0.50, 0.50, 0.50 s; last training loss 1.500, 2.500, 3.500; "
        "training loss, mean over each quarter of the run: —; —; —\n"
    ) in table  # three losses a run: no quarters
    assert "preset's runs: median step 0.30, 0.30 s; last training loss 1.200, 2.200;" in table


def test_the_loss_curve_is_the_mean_over_each_quarter_of_the_run():
    assert side_by_side.quarters([4.0, 2.0, 3.0, 1.0]) == "4.000, 2.000, 3.000, 1.000"
    assert side_by_side.quarters([float(i) for i in range(10)]) == "0.500, 3.000, 5.500, 8.000"  # 2, 3, 2, 3 steps
    assert side_by_side.quarters([1.0, 2.0, 3.0]) == "—"


def test_a_run_is_finished_when_every_epoch_was_evaluated(tmp_path):
    args = side_by_side.argparse.Namespace(epochs=3, steps=None)
    write_metrics(tmp_path / "two", [0.4, 0.5], [1.0], [0.1])
    write_metrics(tmp_path / "four", [0.4, 0.5, 0.6, 0.6], [1.0], [0.1])  # 3 epochs, then the final test
    assert not side_by_side.finished(side_by_side.read_ours(tmp_path / "two"), args)
    assert side_by_side.finished(side_by_side.read_ours(tmp_path / "four"), args)
    assert side_by_side.read_ours(tmp_path / "absent").accuracies == []


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(
    "LOCKSTEP_AUTHORS" not in os.environ, reason="needs LOCKSTEP_AUTHORS=<checkout of the authors' code>"
)
def test_every_patch_applies_once_to_the_authors_scripts(tmp_path):
    for name, task in side_by_side.TASKS.items():
        for device in ("cpu", "cuda"):
            out = tmp_path / f"{name}_{device}"
            script = side_by_side.patched_script(task, side_by_side.Path(os.environ["LOCKSTEP_AUTHORS"]), out, device)
            text = script.read_text()
            assert all(new in text for _, new, _ in task.patches)
            assert (".cuda()" in text) == (device == "cuda")
            compile(text, str(script), "exec")


def test_the_difference_of_the_codes_has_its_welch_interval_and_the_rmsprop_variant_faces_their_T(tmp_path):
    from scipy import stats

    theirs, ours = [0.50, 0.54, 0.46], [0.52, 0.47, 0.45]
    for seed, (a, b) in enumerate(zip(theirs, ours)):
        (tmp_path / f"authors_T_s{seed}.log").write_text(  # their CIFAR10 script's lines, as patched
            f"step_time 0.3 loss 2.0\nstep_time 0.5 loss 1.5\nepoch test accuracy {a}\n"
        )
        write_metrics(tmp_path / f"ours_T-AuthorsRMSprop_s{seed}", [b], [2.1, 1.2], [0.2, 0.4])
    args = ["cifar10", "--out", str(tmp_path), "--report", "--variants", "T-AuthorsRMSprop", "--seeds", "0", "1", "2"]
    assert side_by_side.main(args) == 0
    table = (tmp_path / "table.md").read_text()
    assert "cifar10, T-AuthorsRMSprop (the authors' runs of T)" in table
    welch = stats.ttest_ind([100 * v for v in ours], [100 * v for v in theirs], equal_var=False)
    low, high = welch.confidence_interval(0.95)
    difference = 100 * (statistics.mean(ours) - statistics.mean(theirs))
    (row,) = [line for line in table.splitlines() if line.startswith("| epoch 1 |")]
    assert row.endswith(f"| {difference:+.1f} [{low:+.1f}, {high:+.1f}] |"), row


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(
    "LOCKSTEP_AUTHORS" not in os.environ, reason="needs LOCKSTEP_AUTHORS=<checkout of the authors' code>"
)
def test_a_step_limit_stops_both_codes_and_each_tests_once(tmp_path):
    """``--steps 2`` on pMNIST: the authors' patched script and the preset each train two steps on
    generated MNIST files and the table gives the test after them (the authors' script tests once)."""
    from tests.helpers.data import write_mnist

    write_mnist(tmp_path / "data", 512, 20)
    out = tmp_path / "out"
    args = ["pmnist", "--authors", os.environ["LOCKSTEP_AUTHORS"], "--data-root", str(tmp_path / "data")]
    args += ["--out", str(out), "--seeds", "0", "--variants", "D", "--steps", "2", "--jobs", "1"]
    assert side_by_side.main(args) == 0
    spec = side_by_side.TASKS["pmnist"]
    theirs = side_by_side.read_authors(spec, out / "authors_D_s0.log")
    ours = side_by_side.read_ours(out / "ours_D_s0")
    assert len(theirs.steps) == 2 and len(theirs.accuracies) == 1
    assert len(ours.losses) == 2 and ours.accuracies
    row = f"| step 2 | {side_by_side.summary(theirs.accuracies)} | {side_by_side.summary(ours.accuracies[-1:])} |"
    assert row in (out / "table.md").read_text()


def test_the_report_block_is_the_table_of_the_folder_at_the_tasks_defaults(tmp_path):
    """``scripts.results.report FOLDER --side-by-side pmnist`` (docs/reproduction.md's blocks) is what
    ``side_by_side pmnist --report`` writes for that folder, and its marker's arguments read back to it."""
    from scripts.results import report

    write_authors_log(tmp_path / "authors_D_s0.log", [0.50, 0.60, 0.70], [2.0, 1.0], [0.3, 0.5])
    write_metrics(tmp_path / "ours_D_s1", [0.52, 0.57], [2.1, 1.2], [0.2, 0.4])  # unfinished: 2 of 3 epochs
    assert side_by_side.main(["pmnist", "--out", str(tmp_path), "--report"]) == 0
    args = report.parser().parse_args([str(tmp_path), "--side-by-side", "pmnist"])
    body, _ = report.table(args)
    assert body == (tmp_path / "table.md").read_text() == side_by_side.report("pmnist", tmp_path)
    assert "| epoch 3 | 70.0 (n = 1; 70.0–70.0) | — | — | — |" in body and "pmnist, T:" in body
    assert report.parser().parse_args(report.arguments(args).split()) == args
    with pytest.raises(ValueError, match="one folder"):
        report.table(report.parser().parse_args([str(tmp_path), str(tmp_path), "--side-by-side", "pmnist"]))


def test_ctrl_c_starts_no_further_run_and_frees_the_folder(tmp_path, monkeypatch):
    """Ctrl-C during the first run (here: sent to the main thread while that run takes its time to end)
    ends the comparison there: the queued runs are not started (before, the pool went on through them
    all), and the folder's lock is released."""
    started = []

    def first_run_interrupted(code, variant, seed, args, script):
        started.append((code, variant, seed))
        _thread.interrupt_main()  # what the terminal's SIGINT does to the main thread
        time.sleep(0.5)  # the run's own process, which got the SIGINT too, ending
        return "exit -2"

    monkeypatch.setattr(side_by_side, "patched_script", lambda *args: tmp_path / "script.py")
    monkeypatch.setattr(side_by_side, "run_one", first_run_interrupted)
    with pytest.raises(KeyboardInterrupt):
        side_by_side.main(["pmnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "out"), "--jobs", "1"])
    assert started == [("authors", "D", 0)] and not (tmp_path / "out" / ".lock").exists()

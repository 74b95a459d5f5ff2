"""scripts/results/report.py: README's results tables from run directories (one real run of train.py on
generated MNIST files, then the table read back; one of the 1-Lipschitz preset and its certified
accuracies)."""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.data import write_mnist
from tests.helpers.records import read_metrics, table_rows
from tests.helpers.runs import ONE_THREAD
from training.record import METRICS

pytestmark = pytest.mark.integration  # every test here runs train.py or a script


def run(*command: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pmnist_run(tmp_path_factory):
    """Two epochs of the pMNIST preset (n = 170, k = 1, batch 128) on 256 generated MNIST images, as a
    user starts one."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, 256, 10)
    run_dir = tmp_path_factory.mktemp("runs") / "projunn_d"
    result = run(
        "train.py",
        "experiment=pmnist",
        f"data_root={root}",
        "trainer.max_epochs=2",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, root


def test_report_row_matches_the_run(pmnist_run):
    pmnist_run, root = pmnist_run
    result = run("-m", "scripts.results.report", str(pmnist_run))
    assert result.returncode == 0, result.stderr
    (row,) = table_rows(result.stdout)
    assert row["run"] == "projUNN-D, n = 170, k = 1"
    assert row["paper (%)"] == "94.30"  # Table 2, projUNN-D, n = 170, k = 1
    assert row["trained"] == "2 of 100 epochs"
    with open(pmnist_run / METRICS, newline="") as f:
        rows = list(csv.DictReader(f))
    tests = [float(r["test/acc"]) for r in rows if r.get("test/acc")]
    assert len(tests) == 3  # after each of the 2 epochs, and the final test
    assert row["test acc, last epoch (%)"] == f"{100 * tests[-1]:.2f}"
    assert row["best test acc (%)"] == f"{100 * max(tests[:2]):.2f}"
    assert row["test loss"] == f"{[float(r['test/loss']) for r in rows if r.get('test/loss')][-1]:.4g}"
    steps = sorted(float(r["time/step_s"]) for r in rows if r.get("time/step_s"))
    assert len(steps) == 2 * 2  # 256 images in batches of 128, two epochs
    assert float(row["median step (s)"]) > 0
    assert str(root).startswith("/")  # a machine's own folder: the command names a placeholder
    assert row["command"] == (
        "`python train.py experiment=pmnist data_root=<data_folder> trainer.max_epochs=2 logger=csv "
        "trainer.enable_progress_bar=false`"
    )
    assert row["run dir"] == f"`{pmnist_run}`"


def test_a_variation_of_a_preset_is_named_by_its_overrides_and_has_no_paper_number(pmnist_run, tmp_path):
    import shutil

    import yaml

    pmnist_run, _ = pmnist_run
    variation = tmp_path / "variation"
    shutil.copytree(pmnist_run, variation)
    overrides = variation / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump(yaml.safe_load(overrides.read_text()) + ["model.init=cayley"]))
    (row,) = table_rows(run("-m", "scripts.results.report", str(variation)).stdout)
    assert row["run"] == "projUNN-D, n = 170, k = 1 (model.init=cayley)" and row["paper (%)"] == "—"


def test_report_writes_the_readme_block_and_nothing_else(pmnist_run, tmp_path):
    pmnist_run, _ = pmnist_run
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- report:pmnist -->\nold table\n<!-- /report -->\nrest\n")
    result = run("-m", "scripts.results.report", str(pmnist_run), "--into", str(readme), "--section", "pmnist")
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert text.startswith(f"intro\n<!-- report:pmnist {pmnist_run} -->\n| run |")  # the marker keeps the arguments
    assert text.endswith("<!-- /report -->\nrest\n")
    assert "old table" not in text and "94.30" in text
    result = run("-m", "scripts.results.report", str(pmnist_run), "--into", str(readme), "--section", "cifar")
    assert result.returncode != 0 and "no '<!-- report:cifar -->'" in result.stderr


def test_report_without_runs_is_one_error(tmp_path):
    result = run("-m", "scripts.results.report", str(tmp_path))
    assert result.returncode != 0 and result.stderr.strip().startswith("error: no run directory")


def test_paper_tables_list_every_row_with_what_was_run(pmnist_run):
    pmnist_run, _ = pmnist_run
    result = run("-m", "scripts.results.report", str(pmnist_run), "--paper", "pmnist")
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in table_rows(result.stdout)}
    assert len(rows) == 13  # projUNN-D and -T at k = 1, 2, 4, 8, 16; expRNN, scoRNN, LSTM
    assert rows["projUNN-D, n = 170, k = 1"]["this implementation (%)"].endswith("after 2 of 100 epochs")
    assert rows["projUNN-D, n = 170, k = 1"]["run dir"] == f"`{pmnist_run}`"
    assert rows["projUNN-T, n = 170, k = 8"]["paper (%)"] == "94.10"
    assert rows["LSTM, n = 170"] == {
        "model": "LSTM, n = 170",
        "paper (%)": "92.00",
        "this implementation (%)": "not run",
        "command": "`python train.py experiment=pmnist_lstm model.hidden_size=170`",
        "run dir": "—",
    }
    cifar = table_rows(run("-m", "scripts.results.report", "--paper", "cifar10").stdout)
    assert [(r["model"], r["paper (%)"]) for r in cifar] == [
        ("projUNN-T, orthogonal ResNet9, k = 1", "80.75"),
        ("projUNN-D, orthogonal ResNet9, k = 1", "82.06"),
        ("Cayley convolutions, ResNet9", "81.70"),
        ("unconstrained ResNet9", "92.26"),
    ]


def test_the_three_readings_of_a_pmnist_run(tmp_path):
    """Final test accuracy, the test accuracy at the (first) epoch of best validation accuracy, the
    best test accuracy over epochs."""
    from scripts.results.report import readings

    rows = ["step,epoch,val/acc,test/acc", "9,0,0.5,0.52", "19,1,0.7,0.69", "29,2,0.7,0.71", "39,3,0.65,0.73"]
    (tmp_path / METRICS).write_text("\n".join([*rows, "40,3,,0.72"]) + "\n")
    assert readings(tmp_path) == pytest.approx({"final": 72.0, "at the best validation epoch": 69.0, "best": 73.0})
    (tmp_path / METRICS).write_text("step,epoch,test/acc\n9,0,0.5\n19,1,0.4\n")  # no validation set
    values = readings(tmp_path)
    assert values["final"] == pytest.approx(40.0) and values["best"] == pytest.approx(50.0)
    assert values["at the best validation epoch"] != values["at the best validation epoch"]  # NaN


def test_a_recurrent_run_stopped_before_its_first_evaluation_says_so(tmp_path):
    """A sitting that checkpointed before its first validation (copy's first 500 steps): the row says
    there is no evaluation yet and how far the run got, instead of failing the whole table."""
    import json

    from scripts.results.report import recurrent_result

    summary = {"status": "stopped", "final": {"train/loss": 0.05}, "best": {}, "steps": {"done": 400, "of": 20000}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert recurrent_result(tmp_path) == "no evaluation yet, 400 of 20,000 steps (unfinished, continuing)"
    summary["final"]["val/loss"] = 0.01
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert recurrent_result(tmp_path).startswith("validation MSE 0.01, 400 of 20,000 steps")


def test_table2_reads_a_finished_run_of_the_scripts_protocol(pmnist_run):
    pmnist_run, _ = pmnist_run
    result = run("-m", "scripts.results.report", str(pmnist_run), "--paper", "table2")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [r["model"] for r in rows][:3] == [
        "projUNN-D, n = 170, k = 1",
        "projUNN-T, n = 170, k = 1",
        "expRNN, n = 170",
    ]
    (script_d,) = [r for r in rows if r["protocol"].startswith("100 epochs") and r["model"].startswith("projUNN-D")]
    with open(pmnist_run / METRICS, newline="") as f:
        tests = [float(r["test/acc"]) for r in csv.DictReader(f) if r.get("test/acc")]
    assert script_d["n"] == "1" and script_d["paper (%)"] == "94.30"
    assert script_d["test acc, final (%)"] == f"{100 * tests[-1]:.2f}"
    assert script_d["test acc, best (%)"] == f"{100 * max(tests):.2f}"
    assert script_d["run dirs"] == f"`{pmnist_run}`" and rows[0]["run dirs"] == "not run"


def caption_run(pmnist_run, where, epochs, projector="D"):
    """A finished run of the caption's protocol made from the fixture's: relabelled ``pmnist_paper`` (and
    ``projector``), its metrics.csv one ``(val/acc, test/acc)`` pair an epoch, its summary finished."""
    import json
    import shutil

    import yaml

    shutil.copytree(pmnist_run, where)
    hydra = where / ".hydra" / "hydra.yaml"
    config = yaml.safe_load(hydra.read_text())
    config["hydra"]["runtime"]["choices"]["experiment"] = "pmnist_paper"
    hydra.write_text(yaml.safe_dump(config))
    run_config = yaml.safe_load((where / ".hydra" / "config.yaml").read_text())
    run_config["optim"]["projector"] = projector
    (where / ".hydra" / "config.yaml").write_text(yaml.safe_dump(run_config))
    rows = ["step,epoch,val/acc,test/acc"] + [f"{10 * e + 9},{e},{v},{t}" for e, (v, t) in enumerate(epochs)]
    (where / METRICS).write_text("\n".join(rows) + "\n")
    summary = json.loads((where / "summary.json").read_text())
    n = len(epochs)
    summary |= {"status": "finished", "steps": {"done": 10 * n, "of": 10 * n}, "epochs": {"done": n, "of": n}}
    (where / "summary.json").write_text(json.dumps(summary))
    return where


def test_table2_gap_parts_the_split_from_the_length(pmnist_run, tmp_path):
    """The gap table reads the released script's run at its end, and a run of the caption's protocol after
    its 100th epoch (the split's share) and at its end (the length's share); what is left is the paper's
    number minus the end. The caption's run: the fixture's run relabelled ``pmnist_paper``, with 200
    epochs of made-up test accuracies (0.8 + epoch/1000) and its best validation at epoch 150."""
    import shutil

    pmnist_run, _ = pmnist_run
    script = tmp_path / "script"
    shutil.copytree(pmnist_run, script)
    caption = caption_run(
        pmnist_run, tmp_path / "caption", [(0.9 if e == 149 else 0.5, 0.8 + e / 1000) for e in range(200)]
    )

    result = run("-m", "scripts.results.report", str(script), str(caption), "--paper", "table2-gap")
    assert result.returncode == 0, result.stderr
    d, t = table_rows(result.stdout)
    with open(pmnist_run / METRICS, newline="") as f:
        final = 100 * [float(r["test/acc"]) for r in csv.DictReader(f) if r.get("test/acc")][-1]
    assert d["model"] == "projUNN-D, n = 170, k = 1" and d["paper (%)"] == "94.30"
    assert d["released script: 100 epochs, all 60,000 (%)"] == f"{final:.2f}"
    assert d["caption's split, after 100 epochs (%)"] == "89.90"  # the 100th epoch is epoch 99
    assert d["after 200 epochs (%)"] == "99.90" and d["at the best validation epoch (%)"] == "94.90"
    assert d["split"] == f"{89.90 - final:+.2f}" and d["length"] == "+10.00" and d["left to the paper"] == "-5.60"
    assert d["n (script; caption)"] == "1; 1"
    assert t["released script: 100 epochs, all 60,000 (%)"] == "not run" and t["after 200 epochs (%)"] == "—"

    verdict = run("-m", "scripts.results.report", str(script), str(caption), "--paper", "table2-verdict")
    assert verdict.returncode == 0, verdict.stderr
    (line,) = verdict.stdout.splitlines()  # projUNN-T has no run: no sentence
    spread = statistics.stdev([80 + e / 10 for e in range(190, 200)])
    assert line.startswith("* **projUNN-D** (runs: 1 of the script's protocol, 1 finished of the caption's)")
    assert f"the released script ends at {final:.2f} %" in line and "is at 89.90 %" in line
    assert f"(the split: {89.90 - final:+.2f} points;" in line and f"standard deviation of {spread:.2f})" in line
    assert "its 200 epochs end at 99.90 % (length: +10.00); -5.60 points are left to the paper's 94.3 %." in line


def test_table2_budget_ranks_the_runs_after_the_short_budget_and_at_their_end(pmnist_run, tmp_path):
    """Two made-up caption runs of 20 epochs: D ahead after 5 epochs (0.7 against 0.6 validation
    accuracy), T ahead at its best validation epoch (0.95 at epoch 15 against 0.9): the table ranks them
    both ways and reads the test accuracy at the best validation epoch; the released script's run and a
    run no longer than the short budget are not rows."""
    pmnist_run, _ = pmnist_run
    d = caption_run(pmnist_run, tmp_path / "d", [(0.7 if e == 4 else 0.9 if e == 10 else 0.5, 0.6) for e in range(20)])
    t = caption_run(
        pmnist_run, tmp_path / "t", [(0.6 if e == 4 else 0.95 if e == 14 else 0.5, 0.7) for e in range(20)], "T"
    )
    short = caption_run(pmnist_run, tmp_path / "short", [(0.99, 0.99)] * 5)
    result = run(
        "-m", "scripts.results.report", str(pmnist_run), str(d), str(t), str(short), "--paper", "table2-budget"
    )
    assert result.returncode == 0, result.stderr
    rows = {r["run dir"]: r for r in table_rows(result.stdout)}
    assert set(rows) == {f"`{d}`", f"`{t}`"}
    rd, rt = rows[f"`{d}`"], rows[f"`{t}`"]
    assert rd["model"].startswith("projUNN-D") and rt["model"].startswith("projUNN-T")
    assert (rd["val acc after 5 epochs (%)"], rt["val acc after 5 epochs (%)"]) == ("70.00", "60.00")
    assert (rd["rank at 5"], rt["rank at 5"]) == ("1", "2")
    assert (rd["best val acc over the run (%)"], rt["best val acc over the run (%)"]) == ("90.00", "95.00")
    assert (rd["rank at the end"], rt["rank at the end"]) == ("2", "1")
    assert rd["test acc at that epoch (%)"] == "60.00" and rt["test acc, final (%)"] == "70.00"
    assert rd["lr"] == "0.001" and rd["unitary_lr_scale"] == "1" and rd["seed"] == "0"
    at_eleven = run("-m", "scripts.results.report", str(d), str(t), "--paper", "table2-budget", "--epochs", "11")
    assert [r["val acc after 11 epochs (%)"] for r in table_rows(at_eleven.stdout)] == ["90.00", "50.00"]


@pytest.mark.filterwarnings("ignore:(add|create)_trial is experimental")  # optuna 2
def test_the_verdict_sets_the_searchs_best_trial_beside_the_presets_own_setting(pmnist_run, tmp_path):
    """A made-up study of 5-epoch trials (two complete of a planned four, the fixture's run as each trial's
    record) beside a 20-epoch caption run of the preset's setting whose validation accuracy after epoch 5
    is 70 %: the verdict's learning-rate item names the best trial and says whether it leads the preset's
    reading; a third trial at 80 % turns it round."""
    import shutil

    import optuna
    import yaml

    pmnist_run, _ = pmnist_run
    paper = tmp_path / "paper"
    caption_run(pmnist_run, paper / "d", [(0.7 if e == 4 else 0.5, 0.6) for e in range(20)])
    search = tmp_path / "search"
    search.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{search / 'optuna.db'}", direction="maximize")
    space = {"optim.lr": optuna.distributions.LogUniformDistribution(1e-4, 1e-2)}

    def trial(number: int, lr: float, value: float) -> None:
        study.add_trial(optuna.trial.create_trial(params={"optim.lr": lr}, distributions=space, value=value))
        trial_dir = search / f"{number}_experiment=pmnist_paper,optim.lr={lr}"
        shutil.copytree(pmnist_run, trial_dir)
        hydra, config = trial_dir / ".hydra" / "hydra.yaml", trial_dir / ".hydra" / "config.yaml"
        settings = yaml.safe_load(hydra.read_text())
        settings["hydra"]["sweeper"]["n_trials"] = 4
        settings["hydra"]["runtime"]["choices"]["experiment"] = "pmnist_paper"
        hydra.write_text(yaml.safe_dump(settings))
        settings = yaml.safe_load(config.read_text())
        settings["trainer"]["max_epochs"] = 5
        config.write_text(yaml.safe_dump(settings))

    def learning_rate_item() -> str:
        result = run("-m", "scripts.results.report", str(paper), str(search), "--paper", "table2-verdict")
        assert result.returncode == 0, result.stderr
        (line,) = [line for line in result.stdout.splitlines() if line.startswith("* **The learning rate**")]
        return line

    trial(0, 2e-4, 0.5)
    trial(1, 3e-3, 0.6)
    line = learning_rate_item()
    assert f"`{search}`: 2 of 4 trials complete, 5 epochs each, seed 0)" in line
    assert "its best trial (optim.lr 0.003) reaches 60.00 % validation accuracy" in line
    assert "(lr 0.001, unitary_lr_scale 1) reads 70.00 % after the same 5 epochs" in line
    assert f"(`{paper / 'd'}`): no setting the search tried leads the preset's at its budget;" in line
    assert line.endswith("; its full-length run: not run.")
    trial(2, 5e-4, 0.8)
    line = learning_rate_item()
    assert "3 of 4 trials complete" in line and "its best trial (optim.lr 0.0005) reaches 80.00 %" in line
    assert line.endswith(
        "the search's setting leads at the short budget; its 200-epoch run decides; its full-length run: not run."
    )
    searched = caption_run(pmnist_run, paper / "searched", [(0.5 if e else 0.6, 0.9 - e / 100) for e in range(20)])
    overrides = searched / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump(yaml.safe_load(overrides.read_text()) + ["optim.lr=0.0005"]))
    line = learning_rate_item()
    assert "reads 70.00 % after the same 5 epochs" in line  # still the preset's own run
    assert line.endswith(f"its 20-epoch run (`{searched}`): 71.00 % final, 90.00 % at the best validation epoch.")


@pytest.mark.integration
def test_report_row_has_the_certified_accuracies(tmp_path, mnist):
    """scripts/results/report.py on a real (tiny) run of the preset cut short by a step budget: the row names the
    method and gives the final test's certified accuracies, and the budget in steps."""
    root, _ = mnist
    run_dir = tmp_path / "run"
    command = ["experiment=mnist_lipschitz", "model.hidden_size=16", f"data_root={root}", "trainer.max_steps=3"]
    command += ["task.batch_size=4", "logger=csv", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(
        [sys.executable, "train.py", *command], cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report_command = [sys.executable, "-m", "scripts.results.report", str(run_dir)]
    report = subprocess.run(report_command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    lines = [line for line in report.stdout.splitlines() if line.startswith("|")]
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in (lines[0], lines[2]))
    row = dict(zip(header, row))
    assert row["run"] == "1-Lipschitz MLP, projUNN-T, k = 1 (model.hidden_size=16, task.batch_size=4)"
    assert row["trained"] == "3 of 3 steps (the preset: 1 of 2 epochs)"
    final = read_metrics(run_dir)[-1]
    for radius in ("0.5", "1.0", "1.58"):
        assert row[f"certified at ε = {radius} (%)"] == f"{100 * float(final[f'test/cert_acc_{radius}']):.2f}"

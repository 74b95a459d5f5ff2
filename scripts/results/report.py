"""The results tables of README and docs/, from run directories: paper | this implementation | command |
run dir, one row per run or seed group, or per row of one of the paper's tables; kept in the files
between markers that ``--update`` rebuilds and ``--check`` checks (docs/results.md, "How the tables are made").

    python -m scripts.results.report outputs/readme/pmnist_epoch1/* --paper pmnist
    python -m scripts.results.report --check README.md docs/results.md
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import DictConfig

from training.build import compose
from training.record import SUMMARY, read_summary

from .. import ROOT, tables
from ..reproduction import pins, side_by_side
from .compare import find_runs, groups, load, mean_std, steps_done

# The paper's numbers, as data (docs/paper_numbers.yaml).
PAPER = yaml.safe_load((ROOT / "docs" / "paper_numbers.yaml").read_text())
PMNIST_K = tuple(PAPER["pmnist"]["k"])
RECURRENT = [(r["preset"], r["optim"], r["name"], r["paper"]) for r in PAPER["recurrent"]]
PAPER_RUNS = {"pmnist": PAPER["pmnist"]["runs"]}  # how many runs the paper's numbers are the mean of
CIFAR10 = {preset: (row["name"], row["accuracy"]) for preset, row in PAPER["cifar10"]["presets"].items()}
BASELINES = PAPER["pmnist"]["baselines"]


def hydra_files(run: Path) -> tuple[list[str], dict, dict]:
    """``(overrides, choices, config)`` as Hydra saved them in ``run/.hydra``."""
    folder = run / ".hydra"
    overrides = yaml.safe_load((folder / "overrides.yaml").read_text()) or []
    choices = yaml.safe_load((folder / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
    config = yaml.safe_load((folder / "config.yaml").read_text())
    return overrides, choices, config


def setting(choices: dict, config: dict) -> tuple[str, float | None]:
    """A name for the run's method and the paper's number for its setting (``None``: not in the paper's tables)."""
    experiment, optim = choices.get("experiment"), choices.get("optim")
    n, k = config["model"].get("hidden_size"), config.get("k")
    if experiment in BASELINES:
        return f"{BASELINES[experiment]['name']}, n = {n}", BASELINES[experiment]["by_n"].get(n)
    if experiment in ("pmnist", "pmnist_table2") and optim in ("projunn_t", "projunn_d"):
        projector = optim[-1].upper()
        by_k = PAPER["pmnist"][optim].get(n)
        paper = by_k[PMNIST_K.index(k)] if by_k and k in PMNIST_K else None
        return f"projUNN-{projector}, n = {n}, k = {k}", paper
    if experiment in CIFAR10:
        return CIFAR10[experiment]
    method = {"projunn_t": "projUNN-T", "projunn_d": "projUNN-D", "torch_orthogonal": "torch orthogonal"}.get(
        optim, optim
    )
    rank = f", k = {k}" if optim in ("projunn_t", "projunn_d") else ""
    if experiment == "mnist_lipschitz":  # not in the paper (issue 21)
        return f"1-Lipschitz MLP, {method}{rank}", None
    return f"{experiment or choices.get('task')}, {method}{rank}", None


@functools.cache
def preset(experiment: str) -> DictConfig:
    """The config ``experiment=NAME`` composes, with Hydra's own (which config groups it chose)."""
    return compose([f"experiment={experiment}"], with_hydra=True)


def preset_budget(experiment: str | None) -> tuple[int, str] | None:
    """``(number, "epochs" or "steps")`` the preset trains for; ``None`` for a run without a preset."""
    if experiment is None:
        return None
    trainer = preset(experiment).trainer
    return (trainer.max_epochs, "epochs") if trainer.max_epochs > 0 else (trainer.max_steps, "steps")


def preset_optim(experiment: str) -> str:
    """The ``optim`` config group the preset chooses (``projunn_d`` for pMNIST)."""
    return preset(experiment).hydra.runtime.choices["optim"]


# Overrides that do not change what a run is compared with: where data and outputs are, how long it ran.
NEUTRAL = (
    "experiment=",
    "data_root=",
    "trainer.max_epochs=",
    "trainer.max_steps=",
    "trainer.enable_progress_bar=",
    "logger",
    "hydra",
)


def measure(run: Path) -> tuple[dict, dict[str, float]]:
    """``(about, values)`` of one run: its name, the paper's number, its budget and command; and its
    numbers (accuracies in %), NaN where it did not log them."""
    overrides, choices, config = hydra_files(run)
    name, paper = setting(choices, config)
    changed = [o for o in overrides if not o.startswith(NEUTRAL + ("optim=", "k=", "task=", "seed="))]
    if changed and choices.get("experiment"):  # a variation of a preset: not the paper's setting
        name, paper = f"{name} ({', '.join(changed)})", None
    frame = load(run)
    trained = frame.dropna(subset=["train/loss"]) if "train/loss" in frame else frame.iloc[:0]
    budget = preset_budget(choices.get("experiment"))
    unit = budget[1] if budget else ("epochs" if config["trainer"].get("max_epochs", -1) > 0 else "steps")
    done = (int(trained["epoch"].max()) + 1 if unit == "epochs" else steps_done(frame)) if len(trained) else 0
    if counted := read_summary(run):  # metrics.csv may be thinned (scripts/results/record.py): the run's own count
        done = counted["epochs"]["done"] if unit == "epochs" else counted["steps"]["done"]
    trained_text = f"{done} of {budget[0]} {unit}" if budget else f"{done} {unit}"
    complete = budget is not None and done == budget[0]
    if unit == "epochs" and config["trainer"].get("max_steps", -1) > 0:  # a preset cut short by a step budget
        trained_text = f"{steps_done(frame)} of {config['trainer']['max_steps']} steps (the preset: {trained_text})"

    def column(key: str, reduce: str) -> float:
        return (
            float(getattr(frame[key].dropna(), reduce)()) if key in frame and frame[key].notna().any() else float("nan")
        )

    # Certified accuracies (a 1-Lipschitz model, tasks/lipschitz.py), smallest radius first.
    radii = sorted((c.removeprefix("test/cert_acc_") for c in frame if c.startswith("test/cert_acc_")), key=float)
    about = {
        "run": name,
        "paper": paper,
        "trained": trained_text,
        "complete": complete,
        "overrides": overrides,
        "seed": config.get("seed"),
    }
    values = {
        "test acc, last epoch (%)": 100 * last_evaluation(frame, "test/acc"),
        "best test acc (%)": 100 * column("test/acc_best", "max"),
        **{f"certified at ε = {r} (%)": 100 * last_evaluation(frame, f"test/cert_acc_{r}") for r in radii},
        "test loss": last_evaluation(frame, "test/loss"),
        "median step (s)": column("time/step_s", "median"),
        "max unitarity error": column("unitarity/max_error", "max"),
    }
    return about, values


FORMATS = {"test loss": ".4g", "median step (s)": ".3f", "max unitarity error": ".1e"}  # accuracies: ".2f"


def summary(runs: list[Path]) -> dict[str, str]:
    """The row of a group of runs that differ only by seed (or one run): each number as mean ± std
    over the runs (std: n − 1; one run: its value), the seeds in its command."""
    measured = [measure(run) for run in runs]
    about = measured[0][0]
    names = list(dict.fromkeys(key for _, values in measured for key in values))
    numbers = {
        key: mean_std([values.get(key, float("nan")) for _, values in measured], FORMATS.get(key, ".2f"), len(runs))
        for key in names
    }
    # a machine's own data folder is not part of the command a reader runs
    overrides = [
        "data_root=<data_folder>" if o.startswith(("data_root=/", "data_root=<")) else o for o in about["overrides"]
    ]
    command = "python train.py " + " ".join(overrides)
    if len(runs) > 1:
        seeds = ",".join(str(seed) for seed in sorted(a["seed"] for a, _ in measured))
        kept = [o for o in overrides if not o.startswith("seed=")]
        command = "python train.py -m " + " ".join(kept + [f"seed={seeds}"])
    return {
        "run": about["run"],
        "paper (%)": "—" if about["paper"] is None else f"{about['paper']:.2f}",
        "trained": "; ".join(dict.fromkeys(a["trained"] for a, _ in measured)),
        **{key: "—" if text == "–" else text for key, text in numbers.items()},
        "runs": str(len(runs)),
        "command": f"`{command}`",
        "run dir": ", ".join(f"`{run}`" for run in runs),
    }


def last_evaluation(frame: pd.DataFrame, column: str) -> float:
    """``column`` at the last evaluation (the final test when there was one)."""
    values = frame[column].dropna() if column in frame else []
    return float(values.iloc[-1]) if len(values) else float("nan")


def paper_rows(table: str, hidden_size: int) -> list[tuple[str, float, str]]:
    """``(name, paper %, command)`` for each row of the paper's ``table`` (``"pmnist"``, ``"cifar10"``)."""
    if table == "cifar10":
        return [
            (name, value, f"python train.py experiment={preset} trainer=gpu")
            for preset, (name, value) in CIFAR10.items()
        ]
    rows = []
    for projector in ("D", "T"):
        for k, value in zip(PMNIST_K, PAPER["pmnist"][f"projunn_{projector.lower()}"][hidden_size]):
            optim = f"optim=projunn_{projector.lower()}"
            command = f"python train.py experiment=pmnist {optim} k={k} model.hidden_size={hidden_size}"
            rows.append((f"projUNN-{projector}, n = {hidden_size}, k = {k}", value, command))
    for preset, baseline in BASELINES.items():
        if hidden_size in baseline["by_n"]:
            name, value = setting({"experiment": preset}, {"model": {"hidden_size": hidden_size}})
            rows.append((name, value, f"python train.py experiment={preset} model.hidden_size={hidden_size}"))
    return rows


def paper_table(runs: list[Path], table: str, hidden_size: int) -> list[dict[str, str]]:
    """One row per row of the paper's ``table``: the best test accuracy of the runs that trained the
    preset's whole budget, as mean ± std of n runs (saying n when it is below the paper's), or how
    far the others got, or "not run"."""
    done = [(run, *measure(run)) for run in runs]
    out = []
    for name, value, command in paper_rows(table, hidden_size):
        matching = [(run, about, values) for run, about, values in done if about["run"] == name]
        best = [values["best test acc (%)"] for _, about, values in matching if about["complete"]]
        if best:
            n, of = len(best), PAPER_RUNS.get(table)
            ours = mean_std(best, ".2f") + " (best test accuracy, " + (f"mean ± std of {n} runs" if n > 1 else "1 run")
            ours += f"; the paper: mean of {of})" if of and n < of else ")"
        elif matching:
            last = [values["test acc, last epoch (%)"] for _, _, values in matching]
            ours = "; ".join(
                f"{'—' if acc != acc else f'{acc:.2f}'} after {about['trained']}"
                for acc, (_, about, _) in zip(last, matching)
            )
        else:
            ours = "not run"
        out.append(
            {
                "model": name,
                "paper (%)": f"{value:.2f}",
                "this implementation (%)": ours,
                "command": f"`{command}`",
                "run dir": ", ".join(f"`{run}`" for run, _, _ in matching) or "—",
            }
        )
    return out


def recurrent_table(runs: list[Path]) -> list[dict[str, str]]:
    """One row per recurrent experiment of the paper (``RECURRENT``): its runs of the preset unchanged
    (but for where they write), with their final test numbers and how far they got (summary.json)."""
    found = paper_runs(runs)
    out = []
    for experiment, optim, name, paper in RECURRENT:
        matching = [run for run, e, o in found if (e, o) == (experiment, optim)]
        out.append(
            {
                "experiment": name,
                "paper": paper,
                "this implementation": "; ".join(recurrent_result(run) for run in matching) or "not run",
                "command": f"`python train.py experiment={experiment}"
                + ("" if optim == preset_optim(experiment) else f" optim={optim}")
                + "`",
                "run dir": ", ".join(f"`{run}`" for run in matching) or "—",
            }
        )
    return out


def plan_table(runs: list[Path]) -> list[dict[str, str]]:
    """The plan of the paper's recurrent runs: for each run that has a record, its budget, its median
    step time so far and what that makes on one core, in all and still to go."""
    out = []
    for experiment, optim, name, _ in RECURRENT:
        for run in [run for run in paper_runs(runs) if run[1:] == (experiment, optim)]:
            summary = read_summary(run[0])
            steps, step_s = summary["steps"], summary["median_step_s"]
            out.append(
                {
                    "run": name,
                    "budget (steps)": f"{steps['of']:,}",
                    "median step (s)": f"{step_s:.3f}",
                    "hours on one core": f"{steps['of'] * step_s / 3600:.1f}",
                    "done (steps)": f"{steps['done']:,}",
                    "hours to go": f"{(steps['of'] - steps['done']) * step_s / 3600:.1f}",
                    "sittings": str(len(summary["sittings"])),
                    "run dir": f"`{run[0]}`",
                }
            )
    return out


def paper_runs(runs: list[Path]) -> list[tuple[Path, str | None, str | None]]:
    """``(run, experiment, optim)`` of the runs that are a preset unchanged (but for where they write, the
    variant and the seed)."""
    found = []
    for run in runs:
        overrides, choices, _ = hydra_files(run)
        if (run / SUMMARY).is_file() and not [o for o in overrides if not o.startswith(NEUTRAL + ("optim=", "seed="))]:
            found.append((run, choices.get("experiment"), choices.get("optim")))
    return found


def recurrent_result(run: Path) -> str:
    """A run's last evaluation (the test set when it has one, else the validation set: pMNIST's accuracy,
    last and best; copy's loss and symbols recalled; adding's MSE) and how far it got."""
    summary = read_summary(run)
    final, best = summary["final"], summary["best"]
    where = "test" if "test/loss" in final else "val"
    name = {"test": "test", "val": "validation"}[where]
    if f"{where}/loss" not in final:  # a sitting stopped before its first evaluation
        text = "no evaluation yet"
    elif "test/acc_best" in final:  # pMNIST: the test set after every epoch
        text = f"{100 * final['test/acc']:.2f} % test accuracy (best {100 * best['test/acc']:.2f} %)"
    elif f"{where}/acc" in final:  # copy: the loss and the share of recalled symbols right
        text = f"{name} loss {final[f'{where}/loss']:.3g}, {100 * final[f'{where}/acc']:.2f} % of the symbols recalled"
    else:
        text = f"{name} MSE {final[f'{where}/loss']:.3g}"
    steps = f"{summary['steps']['done']:,} of {summary['steps']['of']:,} steps"
    return f"{text}, {steps}" + ("" if summary["status"] == "finished" else " (unfinished, continuing)")


# The rows of the Table 2 comparison (docs/results.md): the preset and variant, the row of the paper's
# Table 2 it answers (its runs: ``PAPER["pmnist"]``, n = 170, k = 1), and the protocol in words.
TABLE2 = [
    ("pmnist_paper", "projunn_d", "projUNN-D, n = 170, k = 1", "200 epochs, 54,000 images, a tenth held out"),
    ("pmnist_paper", "projunn_t", "projUNN-T, n = 170, k = 1", "200 epochs, 54,000 images, a tenth held out"),
    ("pmnist_exprnn", "exprnn", "expRNN, n = 170", "70 epochs, all 60,000 (expRNN's README command)"),
    ("pmnist", "projunn_d", "projUNN-D, n = 170, k = 1", "100 epochs, all 60,000 (the authors' released script)"),
    ("pmnist", "projunn_t", "projUNN-T, n = 170, k = 1", "100 epochs, all 60,000 (the authors' released script)"),
]


def readings(run: Path) -> dict[str, float]:
    """pMNIST's three readings of a run that evaluated the test set after every epoch, in %: the final
    test accuracy, the test accuracy at the epoch of best validation accuracy (the first such epoch;
    NaN without a validation set) and the best test accuracy over epochs (expRNN's convention)."""
    frame = load(run)
    tested = frame["test/acc"].dropna() if "test/acc" in frame else pd.Series(dtype=float)
    at_best_val = float("nan")
    if "val/acc" in frame and frame["val/acc"].notna().any():
        step = frame["val/acc"].idxmax()
        at_best_val = float(frame.at[step, "test/acc"]) if "test/acc" in frame else float("nan")
    last, best = (float(tested.iloc[-1]), float(tested.max())) if len(tested) else (float("nan"), float("nan"))
    return {"final": 100 * last, "at the best validation epoch": 100 * at_best_val, "best": 100 * best}


def table2(runs: list[Path]) -> list[dict[str, str]]:
    """One row per protocol of ``TABLE2``: the paper's number, the three ``readings`` as mean ± std of the
    finished runs of the preset (any seed; n of them), and how far an unfinished run got."""
    found, out = paper_runs(runs), []
    for experiment, optim, name, protocol in TABLE2:
        matching = [run for run, e, o in found if (e, o) == (experiment, optim)]
        finished = [run for run in matching if read_summary(run)["status"] == "finished"]
        read = [readings(run) for run in finished]
        paper_preset = "pmnist" if optim.startswith("projunn") else experiment  # the row of Table 2 it answers
        _, paper = setting({"experiment": paper_preset, "optim": optim}, {"model": {"hidden_size": 170}, "k": 1})
        row = {"model": name, "protocol": protocol, "paper (%)": f"{paper:.2f}", "n": str(len(read))}
        for reading in ("final", "at the best validation epoch", "best"):
            row[f"test acc, {reading} (%)"] = mean_std([r[reading] for r in read], ".2f") if read else "—"
        unfinished = [run for run in matching if run not in finished]
        row["unfinished"] = (
            "; ".join(
                f"{read_summary(run)['epochs']['done']} of {read_summary(run)['epochs']['of']} epochs: "
                + ", ".join(f"{v:.2f}" if v == v else "—" for v in readings(run).values())
                for run in unfinished
            )
            or "—"
        )
        row["run dirs"] = ", ".join(f"`{run}`" for run in matching) or "not run"
        out.append(row)
    return out


def accuracy_after(run: Path, epoch: int, column: str = "test/acc") -> float:
    """The accuracy (%; ``column``: the test set's or ``val/acc``) a run measured after its ``epoch``-th
    epoch (counted from 1); NaN before."""
    frame = load(run)
    if column not in frame or "epoch" not in frame:
        return float("nan")
    tested = frame[frame[column].notna() & (frame["epoch"] == epoch - 1)]
    return 100 * float(tested[column].iloc[0]) if len(tested) else float("nan")


def table2_budget(runs: list[Path], epochs: int) -> list[dict[str, str]]:
    """How well a short budget predicts the caption's 200 epochs: each finished run of ``pmnist_paper``
    longer than ``epochs`` (any variant, learning rate or seed), its validation accuracy after ``epochs``
    epochs (what a search trial of that budget and setting is told: the schedule's first drop comes at
    epoch 60, so the first epochs are the trial's), its best validation accuracy over the whole run (what
    the long run would be chosen by) and the test accuracy at that epoch; ranked by each."""
    found = []
    for run in runs:
        _, choices, config = hydra_files(run)
        counted = read_summary(run)
        if choices.get("experiment") != "pmnist_paper" or not counted or counted["status"] != "finished":
            continue
        if counted["epochs"]["of"] <= epochs:
            continue
        read = readings(run)
        found.append(
            {
                "run": run,
                "config": config,
                "short": accuracy_after(run, epochs, "val/acc"),
                "long": 100 * float(load(run)["val/acc"].max()),
                "test": read["at the best validation epoch"],
                "final": read["final"],
            }
        )

    def ranks(key: str) -> dict[int, int]:
        order = sorted(range(len(found)), key=lambda i: -found[i][key])
        return {i: rank + 1 for rank, i in enumerate(order)}

    short, long = ranks("short"), ranks("long")
    rows = []
    for i, f in enumerate(found):
        config = f["config"]
        optim = config["optim"]
        rows.append(
            {
                "model": f"projUNN-{optim['projector']}, n = {config['model']['hidden_size']}, k = {config['k']}",
                "lr": f"{optim['lr']:.3g}",
                "unitary_lr_scale": f"{optim.get('unitary_lr_scale', 1.0):.3g}",
                "seed": str(config["seed"]),
                f"val acc after {epochs} epochs (%)": f"{f['short']:.2f}",
                f"rank at {epochs}": str(short[i]),
                "best val acc over the run (%)": f"{f['long']:.2f}",
                "rank at the end": str(long[i]),
                "test acc at that epoch (%)": f"{f['test']:.2f}",
                "test acc, final (%)": f"{f['final']:.2f}",
                "run dir": f"`{f['run']}`",
            }
        )
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _signed(value: float, so_far: bool = False) -> str:
    return "—" if value != value else f"{value:+.2f}" + (" so far" if so_far else "")


def gap_figures(runs: list[Path]) -> list[dict]:
    """The numbers of ``table2_gap`` and ``table2_verdict``, per projUNN variant: the paper's; the final test
    accuracies of the finished runs of the released script's protocol (``script``); the caption's runs after
    their 100th epoch (``at_100``) and at their end (``end``: the finished runs', or else the last epoch of
    the longest unfinished one, ``epochs`` done); their test accuracy at the best validation epoch; and
    ``spread``, the standard deviation of the longest caption run's test accuracy over its last ten
    epochs (how much one run moves from epoch to epoch)."""
    found, out = paper_runs(runs), []
    for optim in ("projunn_d", "projunn_t"):
        script = [
            run for run, e, o in found if (e, o) == ("pmnist", optim) and read_summary(run)["status"] == "finished"
        ]
        caption = [run for run, e, o in found if (e, o) == ("pmnist_paper", optim)]
        finished = [run for run in caption if read_summary(run)["status"] == "finished"]
        _, paper = setting({"experiment": "pmnist", "optim": optim}, {"model": {"hidden_size": 170}, "k": 1})
        read = [readings(run) for run in finished]
        figures = {
            "model": f"projUNN-{optim[-1].upper()}, n = 170, k = 1",
            "paper": paper,
            "script": [readings(run)["final"] for run in script],
            "at_100": [v for v in (accuracy_after(run, 100) for run in caption) if v == v],
            "end": [r["final"] for r in read],
            "at_best_val": [r["at the best validation epoch"] for r in read],
            "finished": bool(finished),
            "epochs": 200 if finished else 0,
            "spread": float("nan"),
        }
        if caption:
            longest = max(caption, key=lambda r: read_summary(r)["epochs"]["done"])
            tested = load(longest)["test/acc"].dropna() * 100
            figures["spread"] = float(tested.iloc[-10:].std()) if len(tested) >= 10 else float("nan")
            if not finished:
                figures["end"] = [readings(longest)["final"]]
                figures["epochs"] = read_summary(longest)["epochs"]["done"]
        out.append(figures)
    return out


def table2_gap(runs: list[Path]) -> list[dict[str, str]]:
    """Where the gap between the released script's protocol and Table 2 goes, per projUNN variant: the
    script's 100 epochs on all 60,000 images; the caption's protocol (a tenth held out) after the same
    100 epochs (the split's share: its schedule is the script's up to there) and after its 200 (the
    length's share; an unfinished run gives its last epoch); the test accuracy at its best validation
    epoch; what is left to the paper. Means over the runs given (n of each)."""
    rows = []
    for f in gap_figures(runs):
        so_far = not f["finished"]
        end = mean_std(f["end"], ".2f") if f["finished"] else "—"
        if so_far and f["end"]:
            end = f"{f['end'][0]:.2f} after {f['epochs']} of 200 epochs (unfinished)"
        rows.append(
            {
                "model": f["model"],
                "paper (%)": f"{f['paper']:.2f}",
                "released script: 100 epochs, all 60,000 (%)": mean_std(f["script"], ".2f")
                if f["script"]
                else "not run",
                "caption's split, after 100 epochs (%)": mean_std(f["at_100"], ".2f") if f["at_100"] else "—",
                "after 200 epochs (%)": end,
                "at the best validation epoch (%)": mean_std(f["at_best_val"], ".2f") if f["at_best_val"] else "—",
                "split": _signed(_mean(f["at_100"]) - _mean(f["script"])),
                "length": _signed(_mean(f["end"]) - _mean(f["at_100"]), so_far),
                "left to the paper": _signed(f["paper"] - _mean(f["end"]), so_far),
                "n (script; caption)": f"{len(f['script'])}; {len(f['end']) if f['finished'] else 0}",
            }
        )
    return rows


def table2_verdict(runs: list[Path]) -> str:
    """``table2_gap`` in words, one item per variant, with the run's own epoch-to-epoch spread beside the
    split's share (so that a difference of one run against one run is not read as an effect)."""
    lines = []
    for f in gap_figures(runs):
        if not f["script"] or not f["end"]:
            continue
        split, end = _mean(f["at_100"]) - _mean(f["script"]), _mean(f["end"])
        so_far = "" if f["finished"] else " so far"
        done = "its 200 epochs end at" if f["finished"] else f"after {f['epochs']} of its 200 epochs it is at"
        text = f"* **{f['model'].split(',')[0]}** (runs: {len(f['script'])} of the script's protocol, "
        text += f"{len(f['end']) if f['finished'] else 0} finished of the caption's): the released script ends at "
        text += f"{_mean(f['script']):.2f} %"
        if f["at_100"]:
            text += (
                f"; the caption's protocol, after the same 100 epochs and schedule on a tenth fewer images, is at "
                f"{_mean(f['at_100']):.2f} % (the split: {split:+.2f} points; over its last ten epochs the run's "
                f"test accuracy moves with a standard deviation of {f['spread']:.2f}); {done} "
                f"{end:.2f} % (length: {end - _mean(f['at_100']):+.2f}{so_far})"
            )
        else:
            text += f"; the caption's protocol is at {end:.2f} % after {f['epochs']} of its 200 epochs"
        text += f"; {f['paper'] - end:.2f} points are left to the paper's {f['paper']:.1f} %{so_far}."
        lines.append(text)
    searches = sorted({run.parent for run in runs if (run.parent / "optuna.db").is_file()})
    lines += [line for folder in searches if (line := search_verdict(folder, runs).rstrip("\n"))]
    return "\n".join(lines) + "\n" if lines else "No run of either protocol has a record yet.\n"


def load_study(folder: Path):
    """``(study, ranked)``: the Optuna study of the search in ``folder`` (its ``optuna.db``) and its complete
    trials, best first."""
    import optuna

    storage = folder / "optuna.db"
    if not storage.is_file():
        raise ValueError(f"no study in {folder} (no optuna.db: python train.py -m hydra/sweeper=optuna_study ...)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{storage}"
    (name,) = [summary.study_name for summary in optuna.study.get_all_study_summaries(url)]
    study = optuna.load_study(study_name=name, storage=url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    ranked = sorted(complete, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    return study, ranked


def trial_run(folder: Path, number: int) -> Path | None:
    """The run directory of a search's trial ``number`` (Hydra names it ``<number>_<overrides>``)."""
    (run,) = [p for p in folder.glob(f"{number}_*") if p.is_dir()] or [None]
    return run


def search_verdict(folder: Path, runs: list[Path]) -> str:
    """The learning rate's item of ``table2_verdict``: the best trial of the search in ``folder`` against
    the preset's own setting read after the same number of epochs in a finished run of it among ``runs``
    (its first epochs are a trial's: the schedule's first drop comes at epoch 60)."""
    study, ranked = load_study(folder)
    if not ranked:
        return ""
    best = ranked[0]
    run = trial_run(folder, best.number)
    _, choices, config = hydra_files(run)
    planned = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]["sweeper"]["n_trials"]
    epochs, optim = config["trainer"]["max_epochs"], choices["optim"]
    reference = preset(choices["experiment"])
    same = [  # the preset's own setting, finished, with the trials' seed
        other
        for other, e, o in paper_runs(runs)
        if (e, o) == (choices["experiment"], optim)
        and read_summary(other)["status"] == "finished"
        and hydra_files(other)[2]["seed"] == config["seed"]
    ]
    params = ", ".join(f"{key} {value:.3g}" for key, value in best.params.items())
    text = f"* **The learning rate** (projUNN-{optim[-1].upper()}, the search on the held-out tenth, "
    text += f"`{folder}`: {len(ranked)} of {planned} trials complete, {epochs} epochs each, seed {config['seed']}): "
    text += f"its best trial ({params}) reaches {100 * best.value:.2f} % validation accuracy"
    if not same:
        return text + "; the preset's setting has no finished run to read at that budget.\n"
    own = accuracy_after(same[0], epochs, "val/acc")
    text += f"; the preset's own setting (lr {reference.optim.lr:.3g}, unitary_lr_scale "
    text += f"{reference.optim.unitary_lr_scale:.3g}) reads {own:.2f} % after the same {epochs} epochs of its "
    text += f"run with the same seed (`{same[0]}`)"
    text += (
        ": the search's setting leads at the short budget; its 200-epoch run decides"
        if 100 * best.value > own
        else ": no setting the search tried leads the preset's at its budget"
    )
    return text + long_run(runs, choices["experiment"], optim, best.params) + ".\n"


def long_run(runs: list[Path], experiment: str, optim: str, params: dict) -> str:
    """The full-length run of a search's setting among ``runs`` (the preset, the variant and ``params`` as
    overrides), in words: its three readings, or how far it got."""
    for run in runs:
        overrides, choices, _ = hydra_files(run)
        given = dict(o.split("=", 1) for o in overrides if "=" in o)
        if (choices.get("experiment"), choices.get("optim")) != (experiment, optim) or not read_summary(run):
            continue
        if (run.parent / "optuna.db").is_file():  # a trial of a search, not a long run
            continue
        if any(key not in given or float(given[key]) != value for key, value in params.items()):
            continue
        counted, read = read_summary(run), readings(run)
        final, chosen = read["final"], read["at the best validation epoch"]
        done, of = counted["epochs"]["done"], counted["epochs"]["of"]
        if counted["status"] == "finished":
            return f"; its {done}-epoch run (`{run}`): {final:.2f} % final, {chosen:.2f} % at the best validation epoch"
        return (
            f"; its {of}-epoch run (`{run}`) is under way: after {done} of {of} epochs, {final:.2f} % "
            f"test accuracy ({chosen:.2f} % at the best validation epoch so far)"
        )
    return "; its full-length run: not run"


def search_table(folder: Path) -> list[dict[str, str]]:
    """One row per trial of the search in ``folder`` (``hydra/sweeper=optuna_study``; its study in
    ``optuna.db``): the values it drew, what it trained, the value the study was told (the run's
    ``metric`` at its last evaluation), its rank among the complete trials and its last test accuracy,
    which a reader sees and the search never reads."""
    study, ranked = load_study(folder)
    rank = {t.number: i + 1 for i, t in enumerate(ranked)}
    rows = []
    for trial in study.trials:
        run = trial_run(folder, trial.number)
        metric = hydra_files(run)[2]["metric"] if run else "metric"
        scale = 100 if "acc" in metric else 1
        row = {"trial": str(trial.number), "state": trial.state.name.lower()}
        row |= {key: f"{value:.3g}" for key, value in trial.params.items()}
        if {"optim.lr", "optim.unitary_lr_scale"} <= set(trial.params):
            row["unitary lr"] = f"{trial.params['optim.lr'] * trial.params['optim.unitary_lr_scale']:.3g}"
        counted = (read_summary(run) if run else None) or {}
        unit = "epochs" if (counted.get("epochs") or {}).get("of") else "steps"
        row["trained"] = f"{counted[unit]['done']} of {counted[unit]['of']} {unit}" if counted else "—"
        row[f"{metric}, told the study" + (" (%)" if scale == 100 else "")] = (
            "—" if trial.value is None else f"{scale * trial.value:.2f}"
        )
        row["rank"] = str(rank.get(trial.number, "—"))
        test = 100 * last_evaluation(load(run), "test/acc") if run else float("nan")
        row["test acc, last epoch (%)"] = "—" if test != test else f"{test:.2f}"
        row["run dir"] = f"`{run}`" if run else "—"
        rows.append(row)
    return rows


def lockstep_table(record: Path, task: str | None) -> str:
    """One task of a recorded lockstep run, as ``python -m scripts.reproduction.lockstep`` printed it."""
    from ..reproduction.lockstep import table as lockstep

    if not record.exists():
        raise ValueError(f"no lockstep record {record} (python -m scripts.reproduction.lockstep ... --json {record})")
    runs = {run["task"]: run for run in json.loads(record.read_text())["tasks"]}
    if task not in runs:
        raise ValueError(f"{record} has no task {task!r}; it has {', '.join(runs)} (--lockstep-task)")
    return lockstep.markdown(runs[task])


def markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "No run has a record yet.\n"
    header = list(dict.fromkeys(key for row in rows for key in row))  # every row's columns, in order
    return tables.markdown(header, ([row.get(h, "—") for h in header] for row in rows))


MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+)(?P<args>[^\n>]*?) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (or folders of them)")
    parser.add_argument(
        "--paper",
        choices=("pmnist", "cifar10", "recurrent", "table2", "table2-gap", "table2-verdict", "table2-budget"),
        help="one row per row of this table of the paper (table2: pMNIST's protocols, three readings a run; "
        "table2-gap: the gap from the released script to Table 2, split and length apart; table2-verdict: "
        "the same in words; table2-budget: the caption's finished runs after --epochs and at their end)",
    )
    parser.add_argument(
        "--epochs", type=int, default=5, help="with --paper table2-budget: the short budget (a search trial's)"
    )
    parser.add_argument(
        "--hidden-size", type=int, default=170, choices=sorted(PAPER["pmnist"]["projunn_d"]), help="with --paper pmnist"
    )
    parser.add_argument(
        "--lockstep", type=Path, metavar="JSON", help="a recorded run of scripts.reproduction.lockstep (its --json)"
    )
    parser.add_argument("--lockstep-task", metavar="TASK", help="with --lockstep: the task of the run to show")
    parser.add_argument(
        "--pins", metavar="PRESET", help="the reproduction contract of a preset (docs/pins/PRESET.yaml)"
    )
    parser.add_argument(
        "--side-by-side",
        choices=sorted(side_by_side.TASKS),
        help="the authors' script beside the preset over seeds, from the folder given (default "
        "outputs/reproduction/TASK) at the task's default seeds and epochs (scripts.reproduction.side_by_side)",
    )
    parser.add_argument("--plan", action="store_true", help="the plan of the paper's recurrent runs (hours)")
    parser.add_argument(
        "--search", action="store_true", help="the trials of the search in the folder given (its hydra.sweep.dir)"
    )
    parser.add_argument("--by", help="one row per group of runs with the same values of these overrides (KEY,KEY...)")
    parser.add_argument(
        "--into", type=Path, help="write the table into this file's report block (README.md, docs/results.md)"
    )
    parser.add_argument("--section", help="the block's name, with --into")
    parser.add_argument("--update", nargs="+", type=Path, metavar="FILE", help="rewrite every report block of FILE")
    parser.add_argument(
        "--check", nargs="+", type=Path, metavar="FILE", help="fail if a report block of FILE differs from its runs"
    )
    return parser


def table(args: argparse.Namespace) -> tuple[str, int]:
    """The markdown table that ``args`` ask for, and how many runs it reads."""
    if args.pins:
        return pins.markdown(pins.load(args.pins)), 0
    if args.lockstep:
        return lockstep_table(args.lockstep, args.lockstep_task), 0
    if args.side_by_side:
        if len(args.runs) > 1:
            raise ValueError("--side-by-side reads one folder")
        return side_by_side.report(args.side_by_side, args.runs[0] if args.runs else None), 0
    if args.search:
        if len(args.runs) != 1:
            raise ValueError("--search reads one folder, the search's hydra.sweep.dir")
        return markdown(search_table(args.runs[0])), len(find_runs(args.runs))
    runs = find_runs(args.runs)
    if args.plan:
        return markdown(plan_table(runs)), len(runs)
    if args.paper == "recurrent":
        return markdown(recurrent_table(runs)), len(runs)
    if args.paper == "table2":
        return markdown(table2(runs)), len(runs)
    if args.paper == "table2-gap":
        return markdown(table2_gap(runs)), len(runs)
    if args.paper == "table2-verdict":
        return table2_verdict(runs), len(runs)
    if args.paper == "table2-budget":
        return markdown(table2_budget(runs, args.epochs)), len(runs)
    if args.paper:
        return markdown(paper_table(runs, args.paper, args.hidden_size)), len(runs)
    if not runs:
        raise ValueError(f"no run directory (with metrics.csv) in {', '.join(map(str, args.runs)) or '(none given)'}")
    return markdown([summary(group) for group in groups(runs, args.by.split(",") if args.by else None).values()]), len(
        runs
    )


def arguments(args: argparse.Namespace) -> str:
    """``args`` as the report block's marker keeps them (what --update and --check read back)."""
    words = [str(run) for run in args.runs]
    if args.paper:
        words += ["--paper", args.paper]
    if args.paper == "pmnist" and args.hidden_size != 170:
        words += ["--hidden-size", str(args.hidden_size)]
    if args.paper == "table2-budget" and args.epochs != 5:
        words += ["--epochs", str(args.epochs)]
    if args.by:
        words += ["--by", args.by]
    if args.plan:
        words += ["--plan"]
    if args.search:
        words += ["--search"]
    if args.pins:
        words += ["--pins", args.pins]
    if args.side_by_side:
        words += ["--side-by-side", args.side_by_side]
    if args.lockstep:
        words += ["--lockstep", str(args.lockstep), "--lockstep-task", args.lockstep_task]
    return " ".join(shlex.quote(word) for word in words)


def refreshed(text: str) -> tuple[str, list[str]]:
    """``text`` with every report block rebuilt from the arguments in its marker; the names of the
    blocks that changed."""
    changed = []

    def rebuild(match: re.Match) -> str:
        body, _ = table(parser().parse_args(shlex.split(match["args"])))
        if body != match["body"]:
            changed.append(match["name"])
        return match[1] + body + match[5]

    return MARKER.sub(rebuild, text), changed


def replace_section(text: str, section: str, body: str, args: str) -> str:
    blocks = [m for m in MARKER.finditer(text) if m["name"] == section]
    if not blocks:
        raise ValueError(f"no '<!-- report:{section} -->' ... '<!-- /report -->' block in the file")
    marker = f"<!-- report:{section}{' ' + args if args else ''} -->\n"
    return MARKER.sub(lambda m: marker + body + m[5] if m["name"] == section else m[0], text)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.update or args.check:
            stale = []
            for path in args.update or args.check:
                text, changed = refreshed(path.read_text())
                stale += [f"{path} ({name})" for name in changed]
                if args.update:
                    path.write_text(text)
            if args.check and stale:
                sys.exit(f"error: report blocks differ from their runs: {', '.join(stale)}")
            print(f"{'rewrote' if args.update else 'checked'} the report blocks; changed: {', '.join(stale) or 'none'}")
            return
        body, count = table(args)
        if args.into is None:
            print(body, end="")
            return
        if not args.section:
            sys.exit("error: --into needs --section")
        args.into.write_text(replace_section(args.into.read_text(), args.section, body, arguments(args)))
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"wrote the table of {count} runs into {args.into} ({args.section})")


if __name__ == "__main__":
    main()

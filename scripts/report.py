"""The results tables of docs/results.md, from run directories: paper | this implementation | command | run dir.

    python scripts/report.py outputs/readme/pmnist_epoch1/*                     # one row per run (or seed group)
    python scripts/report.py outputs/readme/pmnist_epoch1/* --paper pmnist      # one row per row of the paper's table
    python scripts/report.py outputs/readme/pmnist_epoch1/* --into docs/results.md --section pmnist-epoch1

With ``--into FILE``, the table replaces what lies between ``<!-- report:SECTION -->`` and
``<!-- /report -->`` in that file, so that no number in the results is typed by hand. ``--paper``
(``pmnist``: Table 2 at ``--hidden-size``, 170 by default; ``cifar10``) lists the paper's rows, each
with the runs given that match it: their accuracy when one trained the preset's whole budget,
otherwise how far they got, or "not run".

Each run directory holds ``metrics.csv`` and Hydra's ``.hydra/`` (the overrides it was started
with, the composed config and the config groups chosen). A run is matched to the paper's number
for its setting (Table 2 of the paper for pMNIST, its CIFAR10 table) and reported with the budget
it actually trained (epochs or steps out of the preset's), its test accuracy after the last
evaluation and the best over the epochs (``test/acc``, ``test/acc_best``), its certified
accuracies when it logged them (``test/cert_acc_<ε>``, the 1-Lipschitz MLP of
``experiment=mnist_lipschitz``), its last test loss, median step time and worst unitarity error.

Runs whose overrides differ only by ``seed`` are one row (``--by KEY,...``: runs with the same
values of these overrides), each number the mean ± std over them (std: the sample standard
deviation, n − 1), with their number in ``runs`` and the ``-m ... seed=0,1,2`` command that ran
them; the ``--paper`` rows give the best test accuracy of the runs that trained the whole budget as
mean ± std of n runs, and say so when n is below the paper's 3 (pMNIST).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import yaml
from compare import find_runs, groups, load, mean_std

# Kiani et al. 2022, Table 2 (pMNIST test accuracy %, 3 runs, hidden size n): projUNN by rank k,
# the two groups of the table in its order (its first group is labelled projUNN-D; the label of the
# second, projUNN-T, is lost in the copy read here), and the baselines it quotes.
PMNIST_K = (1, 2, 4, 8, 16)
PMNIST = {
    "D": {
        116: (92.8, 93.0, 93.0, 92.9, 93.2),
        170: (94.3, 94.3, 94.4, 94.7, 94.3),
        360: (96.4, 96.4, 96.3, 96.3, 96.5),
        512: (97.0, 97.0, 96.8, 96.9, 97.0),
    },
    "T": {
        116: (92.5, 92.6, 92.5, 93.0, 92.8),
        170: (94.4, 94.3, 94.4, 94.1, 94.3),
        360: (96.3, 96.3, 96.4, 96.2, 96.4),
        512: (96.7, 96.7, 96.8, 96.8, 96.7),
    },
}
PMNIST_BASELINES = {
    "pmnist_exprnn": {170: 94.9, 360: 96.2, 512: 96.6},
    "pmnist_scornn": {170: 94.8, 360: 96.2, 512: 96.6},
    "pmnist_lstm": {116: 91.8, 170: 92.0, 360: 92.9, 512: 92.0},
}
PAPER_RUNS = {"pmnist": 3}  # how many runs the paper's numbers are the mean of (its CIFAR10 table does not say)
# The paper's CIFAR10 table (ResNet9, test accuracy %).
CIFAR10 = {
    "cifar10_projunn_t": ("projUNN-T, orthogonal ResNet9, k = 1", 80.75),
    "cifar10_projunn_d": ("projUNN-D, orthogonal ResNet9, k = 1", 82.06),
    "cifar10_cayley": ("Cayley convolutions, ResNet9", 81.70),
    "cifar10_resnet9": ("unconstrained ResNet9", 92.26),
}


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
    if experiment in PMNIST_BASELINES:
        name = {"pmnist_exprnn": "expRNN", "pmnist_scornn": "scoRNN", "pmnist_lstm": "LSTM"}[experiment]
        return f"{name}, n = {n}", PMNIST_BASELINES[experiment].get(n)
    if experiment in ("pmnist", "pmnist_table2") and optim in ("projunn_t", "projunn_d"):
        projector = optim[-1].upper()
        by_k = PMNIST[projector].get(n)
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


def preset_budget(experiment: str | None) -> tuple[int, str] | None:
    """``(number, "epochs" or "steps")`` the preset trains for; ``None`` for a run without a preset."""
    if experiment is None:
        return None
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        trainer = compose(config_name="config", overrides=[f"experiment={experiment}"]).trainer
    return (trainer.max_epochs, "epochs") if trainer.max_epochs > 0 else (trainer.max_steps, "steps")


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
    done = (int(trained["epoch"].max()) + 1 if unit == "epochs" else len(trained)) if len(trained) else 0
    trained_text = f"{done} of {budget[0]} {unit}" if budget else f"{done} {unit}"
    complete = budget is not None and done == budget[0]
    if unit == "epochs" and config["trainer"].get("max_steps", -1) > 0:  # a preset cut short by a step budget
        trained_text = f"{len(trained)} of {config['trainer']['max_steps']} steps (the preset: {trained_text})"

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
    command = "python train.py " + " ".join(about["overrides"])
    if len(runs) > 1:
        seeds = ",".join(str(seed) for seed in sorted(a["seed"] for a, _ in measured))
        kept = [o for o in about["overrides"] if not o.startswith("seed=")]
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
        for k, value in zip(PMNIST_K, PMNIST[projector][hidden_size]):
            optim = f"optim=projunn_{projector.lower()}"
            command = f"python train.py experiment=pmnist {optim} k={k} model.hidden_size={hidden_size}"
            rows.append((f"projUNN-{projector}, n = {hidden_size}, k = {k}", value, command))
    for preset, by_n in PMNIST_BASELINES.items():
        if hidden_size in by_n:
            name, _ = setting({"experiment": preset}, {"model": {"hidden_size": hidden_size}})
            rows.append(
                (name, by_n[hidden_size], f"python train.py experiment={preset} model.hidden_size={hidden_size}")
            )
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


def markdown(rows: list[dict[str, str]]) -> str:
    header = list(dict.fromkeys(key for row in rows for key in row))  # every row's columns, in order
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.get(h, "—") for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- report:{re.escape(section)} -->\n).*?(<!-- /report -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no '<!-- report:{section} -->' ... '<!-- /report -->' block in the file")
    return pattern.sub(lambda m: m[1] + table + m[2], text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (or folders of them)")
    parser.add_argument("--paper", choices=("pmnist", "cifar10"), help="one row per row of this table of the paper")
    parser.add_argument("--hidden-size", type=int, default=170, choices=sorted(PMNIST["D"]), help="with --paper pmnist")
    parser.add_argument("--by", help="one row per group of runs with the same values of these overrides (KEY,KEY...)")
    parser.add_argument(
        "--into", type=Path, help="write the table into this file's report block (README.md, docs/results.md)"
    )
    parser.add_argument("--section", help="the block's name, with --into")
    args = parser.parse_args(argv)
    runs = find_runs(args.runs)
    if args.paper:
        table = markdown(paper_table(runs, args.paper, args.hidden_size))
    elif runs:
        table = markdown([summary(group) for group in groups(runs, args.by.split(",") if args.by else None).values()])
    else:
        sys.exit(f"error: no run directory (with metrics.csv) in {', '.join(map(str, args.runs)) or '(none given)'}")
    if args.into is None:
        print(table, end="")
        return
    if not args.section:
        sys.exit("error: --into needs --section")
    try:
        args.into.write_text(replace_section(args.into.read_text(), args.section, table))
    except ValueError as error:
        sys.exit(f"error: {args.into}: {error}")
    print(f"wrote the table of {len(runs)} runs into {args.into} ({args.section})")


if __name__ == "__main__":
    main()

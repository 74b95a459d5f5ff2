"""Compare the runs of a sweep: plots and a Markdown table.

    python scripts/compare.py outputs/sweeps/2026-11-26_12-00-00            # a sweep directory
    python scripts/compare.py outputs/runs/A outputs/runs/B --out results/   # or run directories

Each run directory holds ``metrics.csv`` and Hydra's ``.hydra/overrides.yaml``; runs are labelled
by the overrides that differ between them (e.g. ``k=4``). Writes to ``--out`` (default: the
sweep directory, or the current directory for several run directories):

* ``loss_vs_step.png``, ``loss_vs_time.png`` (cumulative ``time/step_s``), ``unitarity_vs_step.png``;
* from the runs' ``diagnostics.jsonl`` (``training/diagnostics.py``), when they have one:
  ``grad_time.png`` (``grad_depth.png``), each run's gradient norm ``‖∂L/∂h_t‖`` against ``t`` at
  its first and last diagnostic step; ``spectrum.png``, the eigenvalues of each run's recurrent
  matrix at its last diagnostic step on the unit circle; ``captured_vs_k.png``, the fraction of the
  base optimizer's update that projUNN's rank-k step keeps, against k (mean and range over the run);
* ``comparison.md``: final train/val/test metrics, median step and update times, worst unitarity
  error, and the diagnostics' time as a share of the summed step times.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for path in paths:
        if (path / "metrics.csv").is_file():
            runs.append(path)
        else:
            runs.extend(sorted(p.parent for p in path.glob("*/metrics.csv")))
    return runs


def load(run: Path) -> pd.DataFrame:
    """One row per step (rows logged at the same step, e.g. train and val, are merged; the last
    value wins, as after a resume)."""
    frame = pd.read_csv(run / "metrics.csv")
    return frame.groupby("step", sort=True).last()


def diagnostics(run: Path) -> list[dict]:
    """The records of ``diagnostics.jsonl``, one per step (after a resume, the last one of a step)."""
    path = run / "diagnostics.jsonl"
    records = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        record = json.loads(line)
        records[record["step"]] = record
    return [records[step] for step in sorted(records)]


def rank(run: Path) -> int | None:
    """projUNN's k of a run (``None`` for another optimizer)."""
    path = run / ".hydra" / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return config.get("k") if isinstance(config.get("optim"), dict) and "projector" in config["optim"] else None


def overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    return dict(item.split("=", 1) for item in items or [] if "=" in item)


def labels(runs: list[Path]) -> list[str]:
    """Label each run by the overrides in which the runs differ."""
    all_overrides = [overrides(run) for run in runs]
    keys = sorted({k for o in all_overrides for k in o})

    def value(o: dict[str, str], key: str) -> str | None:  # as YAML reads it: a sweep writes False for false
        return None if key not in o else str(yaml.safe_load(o[key]))

    varying = [k for k in keys if len({value(o, k) for o in all_overrides}) > 1]
    out = []
    for run, o in zip(runs, all_overrides):
        label = ",".join(f"{k}={o.get(k, '-')}" for k in varying)
        out.append(label or run.name)
    return out


def last(frame: pd.DataFrame, column: str) -> float:
    if column not in frame:
        return float("nan")
    values = frame[column].dropna()
    return float(values.iloc[-1]) if len(values) else float("nan")


def table(data: dict[str, pd.DataFrame]) -> str:
    columns = [
        ("run", None),
        ("steps", None),
        ("final train/loss", "train/loss"),
        ("val/loss", "val/loss"),
        ("val/acc", "val/acc"),
        ("test/loss", "test/loss"),
        ("test/acc", "test/acc"),
        ("median step (ms)", "time/step_s"),
        ("median update (ms)", "time/update_s"),
        ("max unitarity error", "unitarity/max_error"),
        ("diagnostics / step time", "time/diagnostics_s"),
    ]
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    for label, frame in data.items():
        train = frame["train/loss"].dropna() if "train/loss" in frame else pd.Series(dtype=float)
        cells = [label, str(len(train))]
        for _, column in columns[2:]:
            if column is None or column not in frame:
                cells.append("–")
            elif column == "time/diagnostics_s":  # their share of the run: summed over it
                cells.append(f"{frame[column].sum() / frame['time/step_s'].sum():.2%}")
            elif column.startswith("time/"):
                cells.append(f"{frame[column].median() * 1e3:.2f}")
            elif column == "unitarity/max_error":
                cells.append(f"{frame[column].max():.2e}")
            elif column == "train/loss":
                tail = train.iloc[-max(1, len(train) // 20) :]  # the last 5% of steps: one batch is noisy
                cells.append(f"{tail.mean():.4g}")
            else:
                value = last(frame, column)
                cells.append("–" if value != value else f"{value:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(data: dict[str, pd.DataFrame], out: Path, runs: dict[str, Path] | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def figure(name: str, draw, size: tuple[float, float] = (7, 4.5), legend: str = "best") -> None:
        fig, ax = plt.subplots(figsize=size)
        draw(ax)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc=legend)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    def smooth(series: pd.Series) -> pd.Series:
        return series.rolling(max(1, len(series) // 100), min_periods=1).mean()

    baseline = next((last(f, "train/baseline") for f in data.values() if "train/baseline" in f), None)

    def loss_vs(ax, x_of) -> None:
        for label, frame in data.items():
            train = frame["train/loss"].dropna()
            line = ax.plot(x_of(frame).loc[train.index], smooth(train), label=f"{label} train")[0]
            if "val/loss" in frame and frame["val/loss"].notna().any():
                val = frame["val/loss"].dropna()
                ax.plot(x_of(frame).reindex(val.index), val, "o--", color=line.get_color(), ms=3, label=f"{label} val")
        if baseline is not None and baseline == baseline:
            ax.axhline(baseline, color="gray", ls=":", label="memoryless baseline")
        ax.set_ylabel("loss")
        ax.set_yscale("log")

    def by_step(ax) -> None:
        loss_vs(ax, lambda f: pd.Series(f.index, index=f.index))
        ax.set_xlabel("step")

    def by_time(ax) -> None:
        loss_vs(ax, lambda f: f["time/step_s"].fillna(0).cumsum())
        ax.set_xlabel("training time (s, sum of step times)")

    def unitarity(ax) -> None:
        for label, frame in data.items():
            if "unitarity/max_error" in frame:
                errors = frame["unitarity/max_error"].dropna()
                ax.plot(errors.index, errors, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("max ‖W^H W − I‖_F")
        ax.set_yscale("log")

    figure("loss_vs_step.png", by_step)
    if all("time/step_s" in f for f in data.values()):
        figure("loss_vs_time.png", by_time)
    if any("unitarity/max_error" in f for f in data.values()):
        figure("unitarity_vs_step.png", unitarity)

    records = {label: diagnostics(run) for label, run in (runs or {}).items()}
    records = {label: r for label, r in records.items() if r}
    for kind, axis in (("grad_time", "time step t"), ("grad_depth", "layer l")):
        if any(kind in r for rs in records.values() for r in rs):

            def profiles(ax, kind=kind, axis=axis) -> None:
                for label, rs in records.items():
                    curves = [r for r in rs if kind in r]
                    if not curves:
                        continue
                    last = ax.semilogy(
                        range(1, len(curves[-1][kind]) + 1),
                        curves[-1][kind],
                        label=f"{label}, step {curves[-1]['step']}",
                    )[0]
                    if len(curves) > 1:
                        first = curves[0]
                        ax.semilogy(
                            range(1, len(first[kind]) + 1),
                            first[kind],
                            ":",
                            color=last.get_color(),
                            label=f"{label}, step {first['step']}",
                        )
                ax.set_xlabel(axis)
                ax.set_ylabel(
                    "‖∂L/∂h_t‖ (Frobenius norm over the batch)"
                    if kind == "grad_time"
                    else "‖∂L/∂a_l‖ (Frobenius norm over the batch)"
                )
                ax.set_title("gradient through time" if kind == "grad_time" else "gradient through depth")

            figure(f"{kind}.png", profiles)
    if any("eigenvalues" in r for rs in records.values() for r in rs):

        def eigenvalues(ax) -> None:
            import numpy as np

            angle = np.linspace(0, 2 * np.pi, 400)
            ax.plot(np.cos(angle), np.sin(angle), color="gray", lw=0.8, label="unit circle")
            for label, rs in records.items():
                latest = [r for r in rs if r.get("eigenvalues")]
                if latest:
                    name, values = next(iter(latest[-1]["eigenvalues"].items()))
                    values = np.asarray(values)
                    ax.scatter(values[:, 0], values[:, 1], s=6, label=f"{label}\n{name}, step {latest[-1]['step']}")
            ax.set_aspect("equal")
            ax.set_xlabel("Re λ")
            ax.set_ylabel("Im λ")
            ax.set_title("eigenvalues of the recurrent matrix")

        figure("spectrum.png", eigenvalues, size=(6.5, 6.5), legend="center")  # the circle's inside is empty
    ranks = {label: rank(run) for label, run in (runs or {}).items()}
    captured = {}
    for label, rs in records.items():
        fractions = [value for r in rs for key, value in r.items() if key.startswith("captured/")]
        if fractions and ranks.get(label) is not None:
            captured[label] = (ranks[label], fractions)
    if captured:

        def captured_vs_k(ax) -> None:
            for label, (k, fractions) in sorted(captured.items(), key=lambda item: item[1][0]):
                mean = sum(fractions) / len(fractions)
                ax.errorbar(
                    [k],
                    [mean],
                    yerr=[[mean - min(fractions)], [max(fractions) - mean]],
                    fmt="o",
                    capsize=4,
                    label=label,
                )
            ax.set_xscale("log", base=2)
            ax.set_xlabel("rank k")
            ax.set_ylabel("‖a bᴴ‖_F / ‖ΔW‖_F (fraction of the update kept)")
            ax.set_ylim(0, 1.05)
            ax.set_title("captured update: mean over diagnostic steps (bars: range)")

        figure("captured_vs_k.png", captured_vs_k)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep directory or run directories")
    parser.add_argument("--out", type=Path, help="where to write the plots and comparison.md")
    args = parser.parse_args(argv)

    runs = find_runs(args.paths)
    if not runs:
        print(f"error: no run with a metrics.csv under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    out = args.out or (args.paths[0] if len(args.paths) == 1 else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    named = dict(zip(labels(runs), runs))
    data = {label: load(run) for label, run in named.items()}
    markdown = table(data)
    (out / "comparison.md").write_text(markdown)
    print(markdown)
    for path in plot(data, out, named):
        print(f"wrote {path}")
    print(f"wrote {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

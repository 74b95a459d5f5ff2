"""Compare the runs of a sweep: plots and a Markdown table, with the runs that differ only by seed as one
group (their mean and spread), and differences against a baseline group with 95 % intervals
(docs/experiments.md, "Seeds, differences between methods, and searches").

    python -m scripts.results.compare outputs/sweeps/<date_time> --baseline k=1
    python -m scripts.results.compare outputs/runs/A outputs/runs/B --out results/
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
from pathlib import Path

import pandas as pd
import yaml

from training import record

from .. import tables

SEED = "seed"  # the override that a group's runs may differ by


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for path in paths:
        if (path / record.METRICS).is_file():
            runs.append(path)
        else:
            runs.extend(sorted(p.parent for p in path.glob(f"*/{record.METRICS}")))
    return runs


def load(run: Path) -> pd.DataFrame:
    """One row per step (rows logged at the same step, e.g. train and val, are merged; the last
    value wins, as after a resume), as far as the run's summary.json goes when it has one: a run read
    mid-sitting gives the figures of its summary, not a mix of them and fresher rows."""
    frame = pd.read_csv(io.StringIO("\n".join(record.read_lines(run / record.METRICS))))  # a torn last line left out
    frame = frame.groupby("step", sort=True).last()
    summary = record.read_summary(run)
    return frame[frame.index <= summary["steps"]["done"]] if summary else frame


def step_time_total(frame: pd.DataFrame) -> float:
    """The summed step time of a run: a thinned record (scripts/results/record.py) carries it in
    ``time/train_s``, whose last value covers the steps its rows left out (rows a later sitting appended
    are added to it); a full record sums its rows."""
    if "time/train_s" in frame and frame["time/train_s"].notna().any():
        last = frame["time/train_s"].last_valid_index()  # rows appended after the thinning: summed on top
        return float(frame.at[last, "time/train_s"] + frame.loc[frame.index > last, "time/step_s"].sum())
    return float(frame["time/step_s"].sum())


def steps_done(frame: pd.DataFrame) -> int:
    """Training steps in the record: its last training row's step + 1 (steps count from 0), thinned or not."""
    trained = frame["train/loss"].dropna() if "train/loss" in frame else frame.iloc[:0]
    return int(trained.index.max()) + 1 if len(trained) else 0


def diagnostics(run: Path) -> list[dict]:
    """The records of ``diagnostics.jsonl``, one per step (after a resume, the last one of a step)."""
    entries = [e for e in record.read_jsonl(run / record.DIAGNOSTICS) if e.get("kind") != "spike"]  # (LossSpikes)
    records = {entry["step"]: entry for entry in entries}
    return [records[step] for step in sorted(records)]


def config(run: Path) -> dict:
    """The run's composed config (``.hydra/config.yaml``; empty when it has none)."""
    path = run / ".hydra" / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def rank(run: Path) -> int | None:
    """projUNN's k of a run (``None`` for another optimizer)."""
    cfg = config(run)
    return cfg.get("k") if isinstance(cfg.get("optim"), dict) and "projector" in cfg["optim"] else None


def seed(run: Path) -> int | None:
    cfg = config(run)
    return cfg.get(SEED) if cfg else yaml.safe_load(overrides(run).get(SEED, "null"))


def overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    return dict(item.split("=", 1) for item in items or [] if "=" in item)


def groups(runs: list[Path], by: list[str] | None = None) -> dict[str, list[Path]]:
    """The runs grouped by every override but ``seed`` (with ``by``: by those overrides alone),
    in the order of each group's first run, each labelled by the overrides in which the groups
    differ (a lone group: its run's directory name, or its overrides)."""
    all_overrides = [overrides(run) for run in runs]

    def value(o: dict[str, str], key: str) -> str | None:  # as YAML reads it: a sweep writes False for false
        return None if key not in o else str(yaml.safe_load(o[key]))

    keys = by if by is not None else sorted({k for o in all_overrides for k in o} - {SEED})
    members: dict[tuple, list[int]] = {}
    for i, o in enumerate(all_overrides):
        members.setdefault(tuple(value(o, k) for k in keys), []).append(i)
    varying = [k for j, k in enumerate(keys) if len({key[j] for key in members}) > 1]
    out = {}
    for indices in members.values():
        first = all_overrides[indices[0]]
        label = ",".join(f"{k}={first.get(k, '-')}" for k in varying)
        if not label:
            common = ",".join(f"{k}={first[k]}" for k in keys if k in first)
            label = runs[indices[0]].name if len(indices) == 1 else common or "all runs"
        out[label] = [runs[i] for i in indices]
    return out


# (column, metric, how one run's values become one number, format)
METRICS = [
    ("final train/loss", "train/loss", "tail", ".4g"),  # the last 5% of steps: one batch is noisy
    ("val/loss", "val/loss", "last", ".4g"),
    ("val/acc", "val/acc", "last", ".4g"),
    ("test/loss", "test/loss", "last", ".4g"),
    ("test/acc", "test/acc", "last", ".4g"),
    ("best test/acc", "test/acc_best", "max", ".4g"),
    ("median step (ms)", "time/step_s", "median ms", ".2f"),
    ("median update (ms)", "time/update_s", "median ms", ".2f"),
    ("max unitarity error", "unitarity/max_error", "max", ".2e"),
    ("diagnostics / step time", "time/diagnostics_s", "share", ".2%"),  # their share of the run: summed over it
]


def measure(frame: pd.DataFrame) -> dict[str, float]:
    """Each metric of ``METRICS`` for one run (NaN where the run did not log it)."""
    out = {}
    for name, column, reduce, _ in METRICS:
        values = frame[column].dropna() if column in frame else pd.Series(dtype=float)
        if values.empty or (reduce == "share" and "time/step_s" not in frame):
            out[name] = math.nan
        elif reduce == "tail":
            out[name] = float(values.iloc[-max(1, len(values) // 20) :].mean())
        elif reduce == "last":
            out[name] = float(values.iloc[-1])
        elif reduce == "max":
            out[name] = float(values.max())
        elif reduce == "median ms":
            out[name] = float(values.median() * 1e3)
        else:
            out[name] = float(values.sum() / step_time_total(frame))
    return out


def mean_std(values: list[float], spec: str, n: int | None = None) -> str:
    """``mean ± std`` of the values that are not NaN (the value alone for one; ``–`` for none), with
    their count when it is less than the group's ``n``."""
    values = [v for v in values if v == v]
    if not values:
        return "–"
    text = format(values[0], spec)
    if len(values) > 1:
        text = f"{format(statistics.mean(values), spec)} ± {format(statistics.stdev(values), spec)}"
    return text + (f" (n = {len(values)})" if n is not None and len(values) < n else "")


def table(data: dict[str, list[pd.DataFrame]]) -> str:
    """One row per group: its steps (the range when its runs differ), n and ``METRICS`` as mean ± std."""
    header = ["run", "steps", "n"] + [name for name, *_ in METRICS]
    rows = []
    for label, frames in data.items():
        steps = sorted(steps_done(f) for f in frames)
        measured = [measure(f) for f in frames]
        cells = [label, str(steps[0]) if steps[0] == steps[-1] else f"{steps[0]}–{steps[-1]}", str(len(frames))]
        cells += [mean_std([m[name] for m in measured], spec, len(frames)) for name, _, _, spec in METRICS]
        rows.append(cells)
    return tables.markdown(header, rows)


def t_interval(
    base: dict[object, float], other: dict[object, float], paired: bool = True
) -> tuple[float, float, float, str]:
    """``(difference, low, high, how)``: the difference of the means of ``other`` and ``base`` (each
    a value per seed) with its 95 % Student-t interval, paired on the seeds when both hold the same
    ones (at least two) and ``paired``, Welch's otherwise; no interval (NaN) with fewer than two
    values a side."""
    from scipy import stats

    if paired and set(base) == set(other) and len(base) >= 2:
        d = [other[s] - base[s] for s in base]
        mean, se = statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d))
        t = stats.t.ppf(0.975, len(d) - 1)
        return mean, mean - t * se, mean + t * se, f"paired by seed, n = {len(d)}"
    a, b = list(other.values()), list(base.values())
    difference = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return difference, math.nan, math.nan, f"n = {len(a)}, {len(b)}: no interval"
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return difference, difference, difference, f"Welch, n = {len(a)}, {len(b)}"
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
    t = stats.t.ppf(0.975, df)
    return difference, difference - t * se, difference + t * se, f"Welch, n = {len(a)}, {len(b)}, df = {df:.1f}"


def differences(measured: dict[str, list[tuple[object, dict[str, float]]]], baseline: str) -> str:
    """For every group but ``baseline`` and each metric both logged: the means, their difference and
    its 95 % interval (``t_interval``). ``measured``: each group's ``(seed, measure(run))`` pairs."""
    header = ["run", "metric", "baseline", "mean", "difference", "95 % interval", "excludes 0", "method"]
    rows = []

    def by_seed(label: str, name: str) -> dict[object, float]:
        values = [(s, m[name]) for s, m in measured[label] if m[name] == m[name]]
        seeds = [s for s, _ in values]
        unique = None not in seeds and len(set(seeds)) == len(seeds)
        return {(s if unique else (label, i)): v for i, (s, v) in enumerate(values)}  # (label, i): never paired

    for label in measured:
        if label == baseline:
            continue
        for name, _, _, spec in METRICS:
            base, other = by_seed(baseline, name), by_seed(label, name)
            if not base or not other:
                continue
            difference, low, high, how = t_interval(base, other)
            interval = "–" if low != low else f"[{low:+{spec}}, {high:+{spec}}]"
            excludes = "–" if low != low else ("yes" if low > 0 or high < 0 else "no")
            means = [mean_std(list(base.values()), spec), mean_std(list(other.values()), spec)]
            rows.append([label, name, *means, f"{difference:+{spec}}", interval, excludes, how])
    return tables.markdown(header, rows)


def band(curves: list[pd.Series]) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``(mean, min, max)`` at each step of the curves (over the curves that have that step)."""
    stacked = pd.concat(curves, axis=1)
    return stacked.mean(axis=1), stacked.min(axis=1), stacked.max(axis=1)


def per_epoch(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` at each epoch's evaluation, indexed by the epochs done (1, 2, ...)."""
    rows = frame[[column, "epoch"]].dropna() if {column, "epoch"} <= set(frame) else pd.DataFrame()
    if rows.empty:
        return pd.Series(dtype=float)
    series = rows.groupby("epoch")[column].last()
    series = pd.Series(series.values, index=series.index.astype(int) + 1)
    if "train/loss" in frame:  # the test after the fit is logged with the epoch counter past the last epoch
        series = series[series.index <= frame.loc[frame["train/loss"].notna(), "epoch"].max() + 1]
    return series


def plot(
    data: dict[str, list[pd.DataFrame]],
    out: Path,
    runs: dict[str, list[Path]] | None = None,
    references: dict[str, float] | None = None,
) -> list[Path]:
    """The figures of the module docstring, one curve (and band) per group of ``data``; ``references``
    (``{label: accuracy %}``) are drawn across the accuracy figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    several = any(len(frames) > 1 for frames in data.values())

    def figure(name: str, draw, size: tuple[float, float] = (7, 4.5), legend: str = "best") -> None:
        fig, ax = plt.subplots(figsize=size)
        draw(ax)
        if several and not ax.get_title():
            ax.set_title("mean over each group's runs; band: their min–max", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc=legend)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    def smooth(series: pd.Series) -> pd.Series:
        return series.rolling(max(1, len(series) // 100), min_periods=1).mean()

    def curve(ax, x: pd.Series, curves: list[pd.Series], label: str, fmt: str = "-", color=None, shade=True):
        """The mean of ``curves`` against ``x`` (at the same steps), shaded from their min to max."""
        mean, low, high = band(curves)
        line = ax.plot(x.reindex(mean.index), mean, fmt, color=color, ms=3, label=label)[0]
        if shade and len(curves) > 1:
            ax.fill_between(x.reindex(mean.index), low, high, color=line.get_color(), alpha=0.2, lw=0)
        return line

    def n_runs(frames: list) -> str:
        return f" (n = {len(frames)})" if len(frames) > 1 else ""

    every = [f for frames in data.values() for f in frames]  # every run's frame
    baseline = next((last(f, "train/baseline") for f in every if "train/baseline" in f), None)

    def loss_vs(ax, x_of) -> None:
        for label, frames in data.items():
            trains = [f["train/loss"].dropna() for f in frames]
            x = band([x_of(f).loc[t.index] for f, t in zip(frames, trains)])[0]  # the runs' mean x at each step
            line = curve(ax, x, [smooth(t) for t in trains], f"{label} train{n_runs(frames)}")
            vals = [f["val/loss"].dropna() for f in frames if "val/loss" in f and f["val/loss"].notna().any()]
            if vals:
                x = band([x_of(f) for f in frames])[0]
                curve(
                    ax,
                    x,
                    vals,
                    f"{label} val" + (" (mean)" if len(vals) > 1 else ""),
                    "o--",
                    line.get_color(),
                    shade=False,
                )
        if baseline is not None and baseline == baseline:
            ax.axhline(baseline, color="gray", ls=":", label="memoryless baseline")
        ax.set_ylabel("loss")
        ax.set_yscale("log")

    def by_step(ax) -> None:
        loss_vs(ax, lambda f: pd.Series(f.index, index=f.index))
        ax.set_xlabel("step")

    def by_time(ax) -> None:
        # a thinned record (scripts/results/record.py) carries the summed step time; a full metrics.csv sums its own
        loss_vs(ax, lambda f: f["time/train_s"].ffill() if "time/train_s" in f else f["time/step_s"].fillna(0).cumsum())
        ax.set_xlabel("training time (s, sum of step times)")

    def unitarity(ax) -> None:
        for label, frames in data.items():
            errors = [f["unitarity/max_error"].dropna() for f in frames if "unitarity/max_error" in f]
            if errors:
                steps = band([pd.Series(e.index, index=e.index) for e in errors])[0]
                curve(ax, steps, errors, f"{label}{n_runs(errors)}")
        ax.set_xlabel("step")
        ax.set_ylabel("max ‖W^H W − I‖_F")
        ax.set_yscale("log")

    def accuracy(ax) -> None:
        for label, frames in data.items():
            for column, fmt in (("test/acc", "-"), ("val/acc", "--")):
                curves = [100 * per_epoch(f, column) for f in frames]
                curves = [c for c in curves if len(c)]
                if curves:
                    epochs = band([pd.Series(c.index, index=c.index) for c in curves])[0]
                    curve(ax, epochs, curves, f"{label} {column.split('/')[0]}{n_runs(curves)}", fmt)
        for name, value in (references or {}).items():
            ax.axhline(value, ls=":", lw=1.5, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")

    figure("loss_vs_step.png", by_step)
    if any(len(per_epoch(f, "test/acc")) > 1 for f in every):
        figure("accuracy_vs_epoch.png", accuracy)
    if all("time/step_s" in f for f in every):
        figure("loss_vs_time.png", by_time)
    if any("unitarity/max_error" in f for f in every):
        figure("unitarity_vs_step.png", unitarity)

    records = {label: [r for r in map(diagnostics, group) if r] for label, group in (runs or {}).items()}
    records = {label: rs for label, rs in records.items() if rs}  # per group: each run's records
    for kind, axis in (("grad_time", "time step t"), ("grad_depth", "layer l")):
        if any(kind in r for per_run in records.values() for rs in per_run for r in rs):

            def profiles(ax, kind=kind, axis=axis) -> None:
                for label, per_run in records.items():
                    curves = [[r for r in rs if kind in r] for rs in per_run]
                    curves = [c for c in curves if c]
                    if not curves:
                        continue
                    profile = [pd.Series(c[-1][kind], index=range(1, len(c[-1][kind]) + 1)) for c in curves]
                    steps = pd.Series(profile[0].index, index=profile[0].index)
                    line = curve(ax, steps, profile, f"{label}, step {curves[0][-1]['step']}{n_runs(curves)}")
                    if len(curves[0]) > 1:
                        start = [pd.Series(c[0][kind], index=range(1, len(c[0][kind]) + 1)) for c in curves]
                        mean = band(start)[0]
                        ax.plot(
                            mean.index, mean, ":", color=line.get_color(), label=f"{label}, step {curves[0][0]['step']}"
                        )
                ax.set_yscale("log")
                ax.set_xlabel(axis)
                ax.set_ylabel(
                    "‖∂L/∂h_t‖ (Frobenius norm over the batch)"
                    if kind == "grad_time"
                    else "‖∂L/∂a_l‖ (Frobenius norm over the batch)"
                )
                ax.set_title("gradient through time" if kind == "grad_time" else "gradient through depth")

            figure(f"{kind}.png", profiles)
    if any("eigenvalues" in r for per_run in records.values() for rs in per_run for r in rs):

        def eigenvalues(ax) -> None:
            angle = np.linspace(0, 2 * np.pi, 400)
            ax.plot(np.cos(angle), np.sin(angle), color="gray", lw=0.8, label="unit circle")
            for label, per_run in records.items():
                latest = [
                    [r for r in rs if r.get("eigenvalues")][-1]
                    for rs in per_run
                    if any(r.get("eigenvalues") for r in rs)
                ]
                if latest:
                    name, _ = next(iter(latest[0]["eigenvalues"].items()))
                    values = np.concatenate([np.asarray(next(iter(r["eigenvalues"].values()))) for r in latest])
                    text = f"{label}\n{name}, step {latest[0]['step']}{n_runs(latest)}"
                    ax.scatter(values[:, 0], values[:, 1], s=6, label=text)
            ax.set_aspect("equal")
            ax.set_xlabel("Re λ")
            ax.set_ylabel("Im λ")
            ax.set_title("eigenvalues of the recurrent matrix")

        figure("spectrum.png", eigenvalues, size=(6.5, 6.5), legend="center")  # the circle's inside is empty
    captured = {}
    for label, per_run in records.items():
        fractions = [value for rs in per_run for r in rs for key, value in r.items() if key.startswith("captured/")]
        k = rank(runs[label][0])
        if fractions and k is not None:
            captured[label] = (k, fractions)
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
            ax.set_title("captured update: mean over diagnostic steps and runs (bars: range)")

        figure("captured_vs_k.png", captured_vs_k)
    return written


def last(frame: pd.DataFrame, column: str) -> float:
    if column not in frame:
        return float("nan")
    values = frame[column].dropna()
    return float(values.iloc[-1]) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep directory or run directories")
    parser.add_argument("--out", type=Path, help="where to write the plots and comparison.md")
    parser.add_argument("--by", help="group the runs by these overrides (KEY,KEY...), not by every override but seed")
    parser.add_argument("--baseline", metavar="LABEL", help="the group the others are compared with (a table label)")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=ACCURACY",
        help="an accuracy (%%) drawn across accuracy_vs_epoch.png, e.g. 'paper (94.3)=94.3'; repeatable",
    )
    args = parser.parse_args(argv)

    runs = find_runs(args.paths)
    if not runs:
        print(f"error: no run with a metrics.csv under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    by = args.by.split(",") if args.by else None
    unknown = [key for key in by or [] if not any(key in overrides(run) for run in runs)]
    if unknown:
        print(f"error: --by {args.by}: no run has an override of {', '.join(unknown)}", file=sys.stderr)
        return 1
    named = groups(runs, by)
    if args.baseline is not None and args.baseline not in named:
        print(f"error: --baseline {args.baseline} is not a group; the groups: {', '.join(named)}", file=sys.stderr)
        return 1
    out = args.out or (args.paths[0] if len(args.paths) == 1 else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    data = {label: [load(run) for run in group] for label, group in named.items()}
    markdown = table(data)
    if args.baseline is not None:
        measured = {label: [(seed(r), measure(f)) for r, f in zip(named[label], data[label])] for label in named}
        markdown += (
            f"\nDifferences against {args.baseline} (run − {args.baseline}; 95 % Student-t interval, paired by seed"
            " when both ran the same seeds, Welch's otherwise):\n\n" + differences(measured, args.baseline)
        )
    (out / "comparison.md").write_text(markdown)
    print(markdown)
    references = {}
    for reference in args.reference:
        label, _, value = reference.rpartition("=")
        try:
            references[label] = float(value)
        except ValueError:
            print(f"error: --reference {reference!r}: expected LABEL=ACCURACY, e.g. 'paper=94.3'", file=sys.stderr)
            return 1
    for path in plot(data, out, named, references):
        print(f"wrote {path}")
    print(f"wrote {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except record.DamagedRecord as error:  # names the file
        sys.exit(f"error: {error}")

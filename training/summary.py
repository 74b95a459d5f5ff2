"""A run's record: ``summary.json`` beside ``metrics.csv``, and ``metrics.csv`` thinned for keeping
in git (docs/reliability.md, "Run records").

``summary.json`` is written at the end of every sitting of a run (finished, stopped by a signal or
by an error), and after every checkpoint so that a killed sitting leaves one too (``RunSummary``), by
``write_summary``: the command, how far the run got of its budget (steps and
epochs), the last and best value of every metric in metrics.csv, the median step time and the
worst unitarity error, and one entry per sitting (when, from which step to which, wall time,
commit, torch version, machine, and for the image tasks the fingerprint of the data read), the
earlier sittings' entries kept from the summary found there.

``thin_metrics`` keeps the rows of metrics.csv that a table or a curve reads: every row holding
anything but the per-step measurements (validation, test, diagnostics), the last row, and every
``every``-th step's row, ``every`` chosen so that a run keeps at most about ``MAX_STEP_ROWS`` of
them; every kept row gains ``time/train_s``, the summed step time up to its step, so that curves
against training time stay whole. The rule depends on the step alone, so thinning twice, or
thinning a file that a resumed run appended to, keeps the same rows as thinning once at the end.
``compact_diagnostics`` rounds the curves of diagnostics.jsonl to 6 significant digits.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import socket
import statistics
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch

from .record import SUMMARY, metric_rows, read_jsonl, read_summary, write_text_atomic

MAX_STEP_ROWS = 2000
DIGITS = 6  # significant digits of the curves kept in diagnostics.jsonl
STRIDES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
TRAIN_TIME = "time/train_s"  # added by thinning: the sum of time/step_s up to and including the row's step
PER_STEP = (
    "epoch",
    "lr-",
    "train/",
    "unitarity/",
    "time/forward_backward_s",
    "time/step_s",
    "time/update_s",
    TRAIN_TIME,
)


def _number(value: str | None) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except ValueError:
        return None


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.csv, each ``{column: value}`` for the columns it has a number in (a
    torn last line left out: ``training.record``)."""
    rows = [
        {k: v for k, v in ((k, _number(v)) for k, v in row.items()) if v is not None} for row in metric_rows(run_dir)
    ]
    return [row for row in rows if "step" in row]


def stride(planned_steps: int) -> int:
    """Steps between the per-step rows kept: the smallest of 1, 2, 5, 10, ... that keeps at most
    ``MAX_STEP_ROWS`` of ``planned_steps``."""
    return next((s for s in STRIDES if planned_steps / s <= MAX_STEP_ROWS), STRIDES[-1])


def _per_step(column: str) -> bool:
    return column == "step" or column.startswith(PER_STEP)


def thin_metrics(path: Path, every: int) -> tuple[int, int]:
    """Rewrites metrics.csv with the rows the module docstring names; returns (rows before, after)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), list(reader)
    running = 0.0  # the training time so far, which the rows left out must not take with them
    for row in rows:
        if row.get(TRAIN_TIME) not in (None, ""):
            running = float(row[TRAIN_TIME])
        elif row.get("time/step_s") not in (None, ""):
            running += float(row["time/step_s"])
            row[TRAIN_TIME] = repr(running)
    if TRAIN_TIME not in columns and any(row.get(TRAIN_TIME) for row in rows):
        columns.append(TRAIN_TIME)
    steps = [_number(row.get("step")) for row in rows]
    last = max((s for s in steps if s is not None), default=None)
    kept = [
        row
        for row, step in zip(rows, steps)
        if step is None
        or step == last
        or int(step) % every == every - 1  # steps count from 0: the every-th, 2·every-th, ... step
        or any(value not in (None, "") and not _per_step(column) for column, value in row.items())
    ]
    if len(kept) < len(rows):
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(kept)
        tmp.replace(path)
    return len(rows), len(kept)


def _rounded(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value


def compact_diagnostics(path: Path, digits: int = DIGITS) -> None:
    """Rewrites diagnostics.jsonl (curves of hundreds of floats per record) with every number to
    ``digits`` significant digits: what a plot reads, at a third of the size."""
    lines = [json.dumps(_rounded(record, digits)) for record in read_jsonl(path)]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def best(column: str, values: list[float]) -> float:
    """The best of a metric's values: the largest accuracy, the smallest anything else (losses, errors)."""
    return max(values) if "acc" in column.split("/")[-1] else min(values)


def measurements(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Last and best value of every metric, the median step time and the worst unitarity error."""
    columns = sorted({c for row in rows for c in row} - {"step", "epoch"})
    series = {c: [row[c] for row in rows if c in row] for c in columns}
    step_times = series.get("time/step_s", [])
    unitarity = series.get("unitarity/max_error", [])
    return {
        "final": {c: v[-1] for c, v in series.items()},
        "best": {c: best(c, v) for c, v in series.items() if c.startswith(("val/", "test/"))},
        "median_step_s": statistics.median(step_times) if step_times else None,
        "max_unitarity_error": max(unitarity) if unitarity else None,
    }


def commit() -> str | None:
    """The checkout's commit, with ``+changes`` when tracked files outside outputs/ differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)outputs"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """What ran it: CPU model and count, threads torch used, GPU, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


class RunSummary(L.Callback):
    """A run's summary.json, sitting by sitting (a callback of its trainer): ``from_step`` is the step
    this sitting's training started from, and ``summary.json`` is written again at the first training step after every
    checkpoint (when that checkpoint is on disk), so that a sitting killed without a word (SIGKILL,
    a machine taken away) leaves a record as far as its last checkpoint, never ahead of it; train.py
    writes it a last time when the sitting ends (``write``)."""

    def __init__(self, run_dir: Path | None = None, overrides: list[str] | None = None) -> None:
        self.started = time.time()
        self.commit = commit()  # the code this process runs: the checkout may move while it trains
        self.from_step: int | None = None
        self.run_dir, self.overrides = run_dir, overrides or []
        self._checkpointed = False

    def write(self, trainer: L.Trainer, finished: bool) -> dict[str, Any] | None:
        """``write_summary`` for this sitting, returning the summary; a full disk is a warning (and
        ``None``), so that the error that stopped the run (or the checkpoint's own) stays the one reported."""
        try:
            return write_summary(Path(self.run_dir), self, self.overrides, trainer, finished)
        except OSError as error:
            warnings.warn(f"{Path(self.run_dir) / SUMMARY} not written: {error}", stacklevel=2)
            return None

    def end(self, trainer: L.Trainer, finished: bool, metric: str) -> None:
        """The sitting ends (finished, or stopped by a signal or an error): on rank 0, once training
        began, ``write`` and the end summary in the run's log (``describe``)."""
        if trainer.global_rank == 0 and self.from_step is not None and (summary := self.write(trainer, finished)):
            for line in describe(summary, metric):
                logging.getLogger("train").info(line)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.from_step = trainer.global_step
        if self.run_dir is not None:
            where = f"resumed from {trainer.ckpt_path} at step {self.from_step:,}" if self.from_step else "started"
            logging.getLogger("train").info("training %s, run directory %s", where, self.run_dir)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._checkpointed = True  # written to disk after this hook: the summary follows at the next step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._checkpointed and trainer.global_rank == 0 and self.run_dir is not None:
            self._checkpointed = False
            self.write(trainer, finished=False)


def write_summary(
    run_dir: Path, sitting: RunSummary, overrides: list[str], trainer: L.Trainer, finished: bool
) -> dict[str, Any]:
    """Writes ``<run_dir>/summary.json`` (the module docstring) and returns it."""
    steps_done, epochs_done = trainer.global_step, trainer.current_epoch
    if trainer.max_steps >= 0:
        steps_planned, epochs_planned = trainer.max_steps, None
    else:
        epochs_planned = trainer.max_epochs
        try:
            steps_planned = int(trainer.estimated_stepping_batches)
        except (ValueError, TypeError, RuntimeError, OverflowError):  # no data loader was set up
            steps_planned = None
    earlier = (read_summary(run_dir, set_aside=True) or {}).get("sittings", [])
    ended = time.time()
    this = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sitting.started)),
        "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended)),
        "from_step": sitting.from_step,
        "to_step": steps_done,
        "wall_s": round(ended - sitting.started, 1),
        "commit": sitting.commit,
        "torch": torch.__version__,
        "machine": machine(),
    }
    data = getattr(getattr(trainer, "datamodule", None), "data_fingerprint", None)
    if data:  # what the sitting read (tasks.data.fingerprint): two runs on the same data have the same
        this["data"] = data
    sittings = [s for s in earlier if s.get("started") != this["started"]] + [this]
    rows = read_metrics(run_dir)
    where = Path(os.path.relpath(run_dir)) if Path(run_dir).resolve().is_relative_to(Path.cwd()) else run_dir
    summary = {
        "command": " ".join(["python train.py", *overrides]),
        "run_dir": str(where),  # the same command with hydra.run.dir=<run_dir> continues an unfinished run
        "status": "finished" if finished else "unfinished",
        "steps": {"done": steps_done, "of": steps_planned},
        "epochs": {"done": epochs_done, "of": epochs_planned},
        **measurements(rows),
        "metrics_rows": len(rows),
        "wall_s": round(sum(s["wall_s"] for s in sittings), 1),
        "sittings": sittings,
    }
    write_text_atomic(run_dir / SUMMARY, json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def _value(column: str, value: float) -> str:
    """An accuracy in per cent, anything else to 4 significant digits."""
    return f"{100 * value:.2f} %" if "acc" in column.split("/")[-1] else f"{value:.4g}"


def _progress(summary: dict[str, Any]) -> str:
    steps, epochs = summary["steps"], summary["epochs"]
    progress = f"{steps['done']:,} of {steps['of']:,} steps" if steps["of"] is not None else f"{steps['done']:,} steps"
    if epochs["of"] is not None:
        progress += f", {epochs['done']} of {epochs['of']} epochs"
    return f"{summary['status']}, {progress}"


def _results(summary: dict[str, Any], metric: str) -> list[str]:
    """The run's metric, last (and best), then the last value of every test metric."""
    final, best_values = summary["final"], summary["best"]
    results = [
        f"{c} {_value(c, v)}" for c, v in sorted(final.items()) if c.startswith("test/") and c != "test/acc_best"
    ]
    if metric in final and not metric.startswith("test/"):
        best_value = f" (best {_value(metric, best_values[metric])})" if metric in best_values else ""
        results.insert(0, f"{metric} {_value(metric, final[metric])}{best_value}")
    return results


def _figures(summary: dict[str, Any]) -> list[str]:
    figures = []
    if summary["max_unitarity_error"] is not None:
        figures.append(f"max unitarity error {summary['max_unitarity_error']:.1e}")
    if summary["median_step_s"] is not None:
        figures.append(f"median step {1000 * summary['median_step_s']:.0f} ms")
    return figures


def describe(summary: dict[str, Any], metric: str) -> list[str]:
    """The run's end summary in a few lines (train.py prints them after every sitting and keeps them
    in train.log): where the run is, how far it got, what it measured, and the next command."""
    run_dir = summary["run_dir"]
    lines = [f"run {run_dir}: {_progress(summary)}"]
    lines += ["  " + " · ".join(part) for part in (_results(summary, metric), _figures(summary)) if part]
    if summary["status"] == "finished":
        lines.append(f"  curves and table: python -m scripts.results.compare {run_dir} --out {run_dir}/curves")
        lines.append(f"  ready for git:    python -m scripts.results.record {run_dir}")
    else:
        lines.append(f"  continue it:      {summary['command']} hydra.run.dir={run_dir}")
    return lines


def one_line(summary: dict[str, Any], metric: str) -> str:
    """The end summary in one line, for a sweep's list of its jobs."""
    return " · ".join([_progress(summary), *_results(summary, metric), *_figures(summary)])

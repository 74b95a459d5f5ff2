"""``python train.py`` as a user runs it, with the fast settings of the smoke runs, and the
interrupted run that the resume tests compare with one that never stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import ROOT
from tests.helpers.records import load_checkpoint, max_abs_diff, read_metrics, train_rows

# Small, fast settings for smoke runs: a few CPU steps, metrics.csv only, no progress bar (conf/debug/tiny.yaml).
FAST = ["debug=tiny"]

ENV = {**os.environ, "WANDB_MODE": "disabled"}
ONE_THREAD = {**ENV, "OMP_NUM_THREADS": "1"}  # a subprocess beside the others: one core's share each
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
TIMEOUT_S = 600  # per training process; generous, the machine is shared


def command(*overrides: str, run_dir: Path) -> list[str]:
    return [sys.executable, "train.py", *QUIET, f"hydra.run.dir={run_dir}", *overrides]


def run_sweep(*overrides: str, sweep_dir: Path) -> subprocess.CompletedProcess:
    """``python train.py -m OVERRIDES`` into ``sweep_dir``, one thread per job."""
    command = [sys.executable, "train.py", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=TIMEOUT_S)


def run_train(*overrides: str, run_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*overrides, run_dir=run_dir),
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 1, no traceback, exactly one ``error: `` line holding every fragment; returns the line."""
    assert result.returncode == 1, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# the interrupted run: stopped (killed, signalled, preempted) and resumed, it must end as the
# same run that never stopped
# ---------------------------------------------------------------------------------------------
KILL_RUN = [
    "task=copy",
    "task.T=5",
    "task.batch_size=8",
    "task.eval_batches=2",
    "model.hidden_size=16",
    "optim=projunn_t",
    "k=2",
    "scheduler=cosine",  # the LR changes every step: a lost schedule shows
    "checkpoint_every=5",
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
]
MAX_STEPS = 30
KILL_AFTER_STEP = 17  # past the checkpoint at step 15, so the rows of steps 15..17+ must be redone


def start_twin(run_dir: Path) -> subprocess.Popen:
    """``KILL_RUN`` uninterrupted in ``run_dir``, in the background (output in ``<run_dir>.log``)."""
    with open(run_dir.with_suffix(".log"), "w") as out:
        return subprocess.Popen(
            command(*KILL_RUN, run_dir=run_dir), cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT
        )


def assert_same_run(straight_dir: Path, resumed_dir: Path, record_property) -> None:
    """The run of ``KILL_RUN`` in ``resumed_dir``, interrupted and resumed, ended as the one in
    ``straight_dir`` that never stopped: weights, optimizer state and schedule to 1e-6, the sketch
    generator, step counts and data position exactly, every logged value once and to 1e-6."""
    a, b = load_checkpoint(straight_dir / "last.ckpt"), load_checkpoint(resumed_dir / "last.ckpt")
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    weights = max_abs_diff(a["state_dict"], b["state_dict"], "state_dict")
    optimizer = max_abs_diff(a["optimizer_states"], b["optimizer_states"], "optimizer_states")
    # projUNN's sketch generator and step count, exactly (max_abs_diff compares integer tensors exactly)
    sketch_a, sketch_b = a["optimizer_states"][0]["projunn"], b["optimizer_states"][0]["projunn"]
    assert torch.equal(sketch_a["generator"], sketch_b["generator"])
    assert sketch_a["steps"] == sketch_b["steps"] == MAX_STEPS
    schedule = max_abs_diff(a["lr_schedulers"], b["lr_schedulers"], "lr_schedulers")
    assert a["loops"]["fit_loop"]["state_dict"] == b["loops"]["fit_loop"]["state_dict"]  # the data position
    record_property("resume_max_abs_diff", {"weights": weights, "optimizer": optimizer, "lr_schedule": schedule})
    assert weights <= 1e-6 and optimizer <= 1e-6 and schedule <= 1e-12

    rows_a, rows_b = train_rows(read_metrics(straight_dir)), train_rows(read_metrics(resumed_dir))
    assert sorted(rows_a) == sorted(rows_b) == list(range(MAX_STEPS))  # one row per step, none twice
    for step in range(MAX_STEPS):
        for column in ("train/loss", "train/acc", "unitarity/max_error"):
            assert abs(float(rows_a[step][column]) - float(rows_b[step][column])) <= 1e-6, (step, column)

    # validation and test rows too (val at steps 9, 19, 29; test after fitting), each once
    def evals(run_dir):
        rows = read_metrics(run_dir)
        return [(r["step"], r["val/loss"] or r["test/loss"]) for r in rows if r["val/loss"] or r["test/loss"]]

    eval_a, eval_b = evals(straight_dir), evals(resumed_dir)
    assert [s for s, _ in eval_a] == [s for s, _ in eval_b] and len(eval_a) == 4
    assert all(abs(float(x) - float(y)) <= 1e-6 for (_, x), (_, y) in zip(eval_a, eval_b))

"""What several test modules share, so that none imports another: paths and fast settings, the
dtype-aware tolerance and float64 references of the math tests, files a run writes (metrics.csv,
checkpoints, wandb's offline record, markdown tables), ``python train.py`` as a user runs it, and
the interrupted run that the resume tests compare with one that never stopped. Fixtures are in
tests/conftest.py."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from training.record import metric_rows

ROOT = Path(__file__).resolve().parents[1]

# Small, fast settings for smoke runs: a few CPU steps, metrics.csv only, no progress bar (conf/debug/tiny.yaml).
FAST = ["debug=tiny"]


# ---------------------------------------------------------------------------------------------
# the math tests: tolerance and float64 references that share no code with the library
# ---------------------------------------------------------------------------------------------
REAL = {
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    torch.complex64: torch.float32,
    torch.complex128: torch.float64,
}


def tolerance(dtype: torch.dtype, n: int) -> float:
    """PyTorch's tolerance for a computed n×n matrix: 10·n·eps of the (real) dtype."""
    return 10 * max(n, 1) * torch.finfo(REAL[dtype]).eps


def reference_exp(omega: torch.Tensor) -> torch.Tensor:
    """``exp(Ω)`` for skew-symmetric/Hermitian ``Ω`` via ``eigh(iΩ)`` in complex128. (Not
    torch.linalg.matrix_exp: its unbatched path is off by ~1e-10 for norms ≈ 0.02-0.05,
    pytorch/pytorch#196592; tests/test_updates.py ties the two together outside that band.)"""
    lam, V = torch.linalg.eigh(1j * omega.to(torch.complex128))
    E = (V * torch.exp(-1j * lam).unsqueeze(-2)) @ V.mH
    return E if omega.is_complex() else E.real


def reference_d(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """projUNN-D: ``U V^H`` of the thin SVD ``W + a b^H = U Σ V^H`` (square, tall or wide ``W``)."""
    U, _, Vh = torch.linalg.svd(W + a @ b.mH, full_matrices=False)
    return U @ Vh


def max_abs(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x - y).abs().max().item()


# ---------------------------------------------------------------------------------------------
# what a run writes
# ---------------------------------------------------------------------------------------------
def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of ``<run_dir>/metrics.csv``, as strings ("" where a row has no value)."""
    return metric_rows(run_dir)


def train_rows(rows: list[dict[str, str]]) -> dict[int, dict[str, str]]:
    """The per-step training rows by step, asserting that no step is logged twice."""
    steps = [int(float(r["step"])) for r in rows if r.get("train/loss")]
    assert len(steps) == len(set(steps)), f"a step is logged twice: {sorted(steps)}"
    return {int(float(r["step"])): r for r in rows if r.get("train/loss")}


def logged_steps(run_dir: Path) -> list[int]:
    """Steps with a training loss in ``metrics.csv`` so far (tolerating a file being written)."""
    try:
        rows = read_metrics(run_dir)
    except (OSError, csv.Error):
        return []
    steps = []
    for row in rows:
        try:
            if row.get("train/loss"):
                steps.append(int(float(row["step"])))
        except (TypeError, ValueError):
            pass
    return steps


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def max_abs_diff(a, b, where: str = "") -> float:
    """Largest absolute difference between two nested structures of tensors and numbers, which
    must otherwise be equal (same keys, same non-numeric values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if a.numel() == 0:
            return 0.0
        if not (a.is_floating_point() or a.is_complex()):
            assert torch.equal(a, b), where  # integers (step counts, generator states) exactly
            return 0.0
        return (a.double() - b.double()).abs().max().item() if not a.is_complex() else (a - b).abs().max().item()
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        return max([max_abs_diff(a[k], b[k], f"{where}.{k}") for k in a], default=0.0)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        return max([max_abs_diff(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))], default=0.0)
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b)
    assert a == b, f"{where}: {a!r} != {b!r}"
    return 0.0


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables of ``text``: lists of rows of cells (separator rows dropped)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            found.append(current)
            current = []
    return found


WANDB_BLOCK, WANDB_HEADER = 32768, 7


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``run-<id>.wandb`` file (a 7-byte file header, then blocks of
    32 KiB holding records cut in FULL / FIRST / MIDDLE / LAST fragments, each with a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, records, pending = path.read_bytes(), WANDB_HEADER, [], b""
    while pos + WANDB_HEADER <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < WANDB_HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + WANDB_HEADER])
        if length == 0 and kind == 0:  # padding to the end of the block
            pos += left
            continue
        payload, pos = data[pos + WANDB_HEADER : pos + WANDB_HEADER + length], pos + WANDB_HEADER + length
        if kind == 1:
            records.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            records.append(pending + payload)
    parsed = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def wandb_history(path: Path) -> tuple[str, dict[tuple[int, str], list]]:
    """``(run name, {(trainer/global_step, metric): [values logged]})`` of an offline run; a
    number is a float, a medium (table, histogram, plot) the dict wandb stores for it."""
    name, values = "", {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:  # a medium comes as items with a nested key: (name, field)
                *path, last = [item.key] if item.key else list(item.nested_key)
                target = row
                for part in path:
                    target = target.setdefault(part, {})
                target[last] = json.loads(item.value_json)
            step = int(float(row.pop("trainer/global_step")))
            for key, value in row.items():
                if not key.startswith("_"):
                    values.setdefault((step, key), []).append(value if isinstance(value, dict) else float(value))
    return name, values


# ---------------------------------------------------------------------------------------------
# stand-in datasets
# ---------------------------------------------------------------------------------------------
MNIST_TRAIN, MNIST_TEST = 40, 13  # images in the training and test files of conftest's ``mnist`` fixture


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (big-endian header: magic 0x08 = unsigned byte, number of dimensions, sizes)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_cifar(n_train: int = 120, n_test: int = 40):
    """A stand-in for ``tasks.cifar10.load_cifar10``: random uint8 images, each carrying its index
    in two pixels (to follow images through the split), labels ``index % 10``."""

    def load(root, train):
        n = n_train if train else n_test
        g = torch.Generator().manual_seed(1 if train else 2)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        images[:, 0, 0, 0] = torch.arange(n) % 256  # an id, to follow images through the split
        images[:, 0, 0, 1] = torch.arange(n) // 256
        return images, torch.arange(n) % 10

    return load


# ---------------------------------------------------------------------------------------------
# python train.py, as a user runs it
# ---------------------------------------------------------------------------------------------
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

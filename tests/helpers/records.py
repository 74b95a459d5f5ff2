"""Reading what a run writes: metrics.csv (through training.record), checkpoints, wandb's offline
record file, markdown tables; and the run record of commit 9aada1c kept in tests/fixtures."""

from __future__ import annotations

import csv
import json
import struct
import time
from pathlib import Path

import torch

from tests.helpers import FIXTURES
from training.record import metric_rows

FIXTURE_9AADA1C = FIXTURES / "record_9aada1c"  # KILL_RUN stopped at step 19 by the code of 9aada1c


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


def closed_wandb_records(path: Path, timeout: float = 60.0) -> list:
    """The records of a closed offline run: wandb's service process writes the file and may still
    be flushing its last block when ``wandb.finish()`` has returned (it is done by the time the
    training process exits; a test reads the file inside the process that trained). So this waits
    until the file holds the run's ``exit`` record (written after all others), and fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path)
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record {timeout:.0f} s after its run was closed")
        time.sleep(0.2)


def wandb_history(path: Path) -> tuple[str, dict[tuple[int, str], list]]:
    """``(run name, {(trainer/global_step, metric): [values logged]})`` of a closed offline run; a
    number is a float, a medium (table, histogram, plot) the dict wandb stores for it."""
    name, values = "", {}
    for record in closed_wandb_records(path):
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


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in ``markdown``, each a dict by its header."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]

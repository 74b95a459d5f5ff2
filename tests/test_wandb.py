"""wandb (offline) holds the run's curves as metrics.csv does, also after a resume: read back from
the offline run's own record file (wandb's format: a LevelDB-style log of protobuf ``Record``s)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from test_edges import RUN
from test_reliability import MAX_STEPS, read_metrics

import train
from tests.hooks import SignalAt, add
from training.reporting import reported

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")

BLOCK, HEADER = 32768, 7


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``run-<id>.wandb`` file (a 7-byte file header, then blocks of
    32 KiB holding records cut in FULL / FIRST / MIDDLE / LAST fragments, each with a 7-byte header)."""
    data, pos, records, pending = path.read_bytes(), HEADER, [], b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:  # padding to the end of the block
            pos += left
            continue
        payload, pos = data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
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


def history(path: Path) -> tuple[str, dict[tuple[int, str], list]]:
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


def csv_values(run_dir: Path) -> dict[tuple[int, str], float]:
    values = {}
    for row in read_metrics(run_dir):
        for key, value in row.items():
            if key != "step" and value != "":
                assert (int(row["step"]), key) not in values
                values[int(row["step"]), key] = float(value)
    return values


def test_a_resumed_run_continues_in_a_new_wandb_run_that_holds_every_step_once(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = [*RUN, "logger=default", "logger.wandb.mode=offline", "trainer.enable_progress_bar=false"]

    command = reported(train.train)  # what train.py runs: closes the wandb run however the fit ends
    with pytest.raises(SystemExit) as stopped:
        command(compose_cfg(*args, *add("signal", SignalAt, step=17), run_dir=tmp_path))
    assert stopped.value.code == 130
    first = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(first) == 1
    command(compose_cfg(*args, run_dir=tmp_path))  # the same command: resumes
    runs = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    assert len(runs) == 2 and runs[0] == first[0]
    name, values = history(runs[-1])
    assert name.endswith("(resumed)")
    expected = csv_values(tmp_path)
    assert {key for key in expected if key[0] < MAX_STEPS} <= set(values)  # every step of the csv, from step 0
    for key, logged in values.items():
        # one value per step and metric ("epoch" comes with both the training step's and the
        # validation's metrics from Lightning, the same value twice)
        assert len(logged) == 1 or (key[1] == "epoch" and len(set(logged)) == 1), f"{key} logged {logged}"
        assert logged[0] == pytest.approx(expected[key], rel=1e-6, abs=1e-12), key
    assert set(values) == set(expected)

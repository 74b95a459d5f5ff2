"""A record torn by a kill or a full disk never stops a run or a tool for good (training/record.py):
a write replaced whole leaves the old content or the new; a torn last line of an appended file is
set aside and the rows before it kept; a damaged summary is set aside by a run and named by a tool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT
from tests.helpers.runs import ENV, KILL_RUN, MAX_STEPS, TIMEOUT_S, command, run_train
from training.record import DamagedRecord, cut_torn_tail, read_jsonl, read_lines, read_summary, write_text_atomic


def test_a_replacing_write_cut_short_leaves_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text('{"old": 1}\n')

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # after the new text went to the temporary file
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(path, '{"new": 2}\n' * 1000)
    assert path.read_text() == '{"old": 1}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_torn_last_line_is_left_out_by_readers_and_set_aside_before_an_append(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,train/loss\n0,1.5\n1,1.25\n2,1.1")  # the row of step 2 cut before its newline
    with pytest.warns(UserWarning, match="metrics.csv: its torn last line"):
        assert read_lines(path) == ["step,train/loss", "0,1.5", "1,1.25"]
    assert path.read_text().endswith("2,1.1")  # a reader changes nothing
    with pytest.warns(UserWarning, match=r"set aside in metrics.csv.torn \(5 characters lost\)"):
        cut_torn_tail(path)
    assert path.read_text() == "step,train/loss\n0,1.5\n1,1.25\n"
    assert (tmp_path / "metrics.csv.torn").read_text() == "2,1.1"
    cut_torn_tail(path)  # whole lines: nothing to do
    assert path.read_text().endswith("1,1.25\n")


def test_a_bad_line_inside_a_jsonl_file_is_named(tmp_path):
    path = tmp_path / "diagnostics.jsonl"
    path.write_text('{"step": 0}\n{"step": 5, "x\n{"step": 10}\n')
    with pytest.raises(DamagedRecord, match=r"diagnostics.jsonl, line 2: not JSON"):
        read_jsonl(path)
    path.write_text('{"step": 0}\n{"step": 5, "x')
    with pytest.warns(UserWarning, match="torn last line"):
        assert read_jsonl(path) == [{"step": 0}]


def test_a_damaged_summary_is_named_or_set_aside(tmp_path):
    (tmp_path / "summary.json").write_text('{\n "command": "python train.py",\n "sta')
    with pytest.raises(DamagedRecord, match=r"summary.json: not a readable summary"):
        read_summary(tmp_path)
    with pytest.warns(UserWarning, match="set aside as summary.json.damaged"):
        assert read_summary(tmp_path, set_aside=True) is None
    assert not (tmp_path / "summary.json").exists() and (tmp_path / "summary.json.damaged").is_file()
    assert read_summary(tmp_path) is None  # no summary: a run that has not ended a sitting


def kill_after_a_checkpoint(run_dir):
    """``KILL_RUN`` killed without a word (SIGKILL) once its summary says it passed step 10."""
    proc = subprocess.Popen(
        command(*KILL_RUN, run_dir=run_dir), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no summary past step 10"
            try:
                if json.loads((run_dir / "summary.json").read_text())["steps"]["done"] >= 10:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True)


@pytest.mark.integration
def test_a_run_with_torn_records_continues_to_its_end_and_the_tools_read_it(tmp_path):
    """Killed past a checkpoint, then its three files torn as a kill mid-write leaves them: the same
    command trains on to the end, saying what it set aside; scripts.results.record, compare and report finish
    on the result, and on a damaged summary stop with one line naming the file."""
    run_dir = tmp_path / "run"
    kill_after_a_checkpoint(run_dir)
    summary = (run_dir / "summary.json").read_text()
    (run_dir / "summary.json").write_text(summary[: len(summary) // 2])
    with (run_dir / "metrics.csv").open("a") as f:
        f.write("99,0.123")
    with (run_dir / "diagnostics.jsonl").open("a") as f:
        f.write('{"step": 99, "grad_')
    result = run_train(*KILL_RUN, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("summary.json", "metrics.csv", "diagnostics.jsonl"):
        assert f"{run_dir / name}:" in result.stdout + result.stderr, name  # a warning names each file
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["steps"] == {"done": MAX_STEPS, "of": MAX_STEPS}
    assert (run_dir / "summary.json.damaged").is_file() and (run_dir / "metrics.csv.torn").read_text() == "99,0.123"
    steps = [int(line.split(",")[0]) for line in read_lines(run_dir / "metrics.csv")[1:]]
    assert steps == sorted(set(steps)) and set(range(MAX_STEPS)) <= set(steps) and 99 not in steps
    assert [r["step"] for r in read_jsonl(run_dir / "diagnostics.jsonl")] == [0]
    for args in (
        ["scripts.results.compare", str(run_dir), "--out", str(tmp_path / "curves")],
        ["scripts.results.report", str(run_dir)],
    ):
        assert tool(*args).returncode == 0, tool(*args).stderr[-2000:]
    with (run_dir / "metrics.csv").open("a") as f:  # torn again after the end: the tools still finish
        f.write("31,0.5")
    compared = tool("scripts.results.compare", str(run_dir), "--out", str(tmp_path / "curves"))
    assert compared.returncode == 0 and "metrics.csv: its torn last line" in compared.stderr
    assert tool("scripts.results.record", str(run_dir)).returncode == 0
    (run_dir / "summary.json").write_text('{"status": "fin')
    for args in (["scripts.results.record", str(run_dir)], ["scripts.results.report", str(run_dir)]):
        failed = tool(*args)
        lines = failed.stderr.strip().splitlines()
        assert failed.returncode == 1 and len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert lines[0].startswith("error: ") and f"{run_dir / 'summary.json'}: not a readable summary" in lines[0]


def test_a_record_names_no_path_of_the_machine_that_made_it():
    from training.record import REPO, portable

    text = f"cwd: {REPO}\n  - path: {REPO}/conf\ncommand: python train.py data_root=/tmp/cifar/root seed=0\n"
    text += '"data_root": "/mnt/data", data_root: /srv/x\n'
    assert portable(text) == (
        "cwd: <repo>\n  - path: <repo>/conf\ncommand: python train.py data_root=<data_root> seed=0\n"
        '"data_root": "<data_root>", data_root: <data_root>\n'
    )
    assert portable("data_root=data task.T=5") == "data_root=data task.T=5"  # relative: kept

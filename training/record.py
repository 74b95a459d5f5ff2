"""The files of a run's record (docs/reliability.md, "Run records"), read and written here so that a
kill or a full disk at any moment never stops a run or a report for good.

* ``summary.json`` is replaced whole (``write_text_atomic``: a temporary file renamed over it), so a
  reader sees the old content or the new;
* ``metrics.csv`` and ``diagnostics.jsonl`` grow by appended lines: a kill mid-append leaves a torn
  last line, without its newline. ``cut_torn_tail`` sets such a line aside (``<file>.torn``) before a
  writer appends again; the readers here skip it. Either way one warning says what was lost.
* A file that cannot be read at all (a damaged ``summary.json``, a bad line inside a ``.jsonl``) is
  ``DamagedRecord``, a ``ValueError`` whose message names the file: the tools stop with that one
  line; a training run sets a damaged ``summary.json`` aside (``<file>.damaged``) and goes on from
  its checkpoint and its rows, the earlier sittings' entries lost.

What a record keeps for git names no absolute path of the machine that made it (``portable``): the
checkout's root becomes ``<repo>``, an absolute data root ``<data_root>`` (and the lockstep writes
the authors' checkout as ``<authors>``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUMMARY = "summary.json"
METRICS = "metrics.csv"
DIAGNOSTICS = "diagnostics.jsonl"
RECORD_TEXTS = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", SUMMARY)  # (portable)


class DamagedRecord(ValueError):
    """A record file that cannot be read; the message names it."""


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` afterwards, or its old content if the write fails or is killed."""
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _complete_lines(path: Path) -> tuple[list[str], str]:
    """The complete lines of an appended file and its torn tail ('' when it ends with a newline)."""
    text = path.read_text()
    head, newline, tail = text.rpartition("\n")
    return (head + newline).splitlines(), tail


def cut_torn_tail(path: Path) -> None:
    """Before a writer appends to ``path``: a torn last line (no newline) is moved to ``<path>.torn``."""
    if not path.is_file():
        return
    lines, tail = _complete_lines(path)
    if not tail:
        return
    path.with_name(f"{path.name}.torn").write_text(tail)
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    warnings.warn(
        f"{path}: its last line was torn (a write cut short) and is set aside in {path.name}.torn "
        f"({len(tail)} characters lost); the run goes on with the {len(lines)} lines before it",
        stacklevel=2,
    )


def read_lines(path: Path) -> list[str]:
    """The complete lines of an appended file (metrics.csv, diagnostics.jsonl); a torn last line is skipped."""
    lines, tail = _complete_lines(path)
    if tail:
        warnings.warn(f"{path}: its torn last line ({len(tail)} characters) is left out", stacklevel=2)
    return lines


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``.jsonl`` file (none when it is missing); a torn last line is skipped."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as error:
            raise DamagedRecord(f"{path}, line {number}: not JSON ({error})") from None
    return records


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of the run's ``metrics.csv`` as text (``""`` where a row has no value), none when it
    has none; a torn last line is left out."""
    path = Path(run_dir) / METRICS
    return list(csv.DictReader(read_lines(path))) if path.is_file() else []


def read_summary(run_dir: Path, set_aside: bool = False) -> dict[str, Any] | None:
    """The run's ``summary.json`` (``None`` when there is none). Damaged: ``DamagedRecord``, or with
    ``set_aside`` (a training run about to write a new one) moved to ``summary.json.damaged``, a
    warning, and ``None``."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError(f"a {type(summary).__name__}, not an object")
        return summary
    except ValueError as error:
        if not set_aside:
            raise DamagedRecord(f"{path}: not a readable summary ({error})") from None
        path.replace(path.with_name(f"{SUMMARY}.damaged"))
        warnings.warn(
            f"{path}: damaged ({error}), set aside as {SUMMARY}.damaged; the entries of the earlier "
            "sittings are lost, the run goes on from its checkpoint and metrics.csv",
            stacklevel=2,
        )
        return None


def portable(text: str, repo: Path = REPO) -> str:
    """``text`` with the absolute paths of this machine replaced (the module docstring): a data root
    given as an absolute path (``data_root=/...``, ``data_root: /...``) by ``<data_root>``, the
    checkout's root by ``<repo>`` (``<repo>/outputs/...``, ``<repo>/conf``)."""
    text = re.sub(r"(data_root[\"']?\s*[=:]\s*[\"']?)/[^\s\"',\]]+", r"\1<data_root>", text)
    return text.replace(str(repo), "<repo>")


def make_portable(run_dir: Path) -> list[Path]:
    """Rewrites the record texts of ``run_dir`` (and its sweep's ``multirun.yaml``) that name absolute
    paths (``portable``); returns them."""
    changed = []
    for path in [*(Path(run_dir) / name for name in RECORD_TEXTS), Path(run_dir).parent / "multirun.yaml"]:
        if path.is_file() and (text := path.read_text()) != (new := portable(text)):
            write_text_atomic(path, new)
            changed.append(path)
    return changed

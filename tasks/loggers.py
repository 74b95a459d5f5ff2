"""``metrics.csv`` in the run directory, appended as training goes and kept across resumes.

(Lightning's own CSVLogger deletes an existing ``metrics.csv`` when it starts, which would lose a
resumed run's history, and writes into ``version_N`` subfolders.)
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only


class MetricsCSV(Logger):
    """Appends one row per logged step (columns ``step`` and the metric names) to
    ``<save_dir>/metrics.csv`` and flushes it at once, so a killed run loses nothing it logged;
    metrics logged for the step of the last row (a callback's, then Lightning's) go into that row.
    A new metric name rewrites the file with the extra column. ``drop_after(step)`` removes rows
    logged after a checkpoint, for a run resumed from it."""

    def __init__(self, save_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(save_dir) / "metrics.csv"
        self._columns: list[str] = []
        self._last: tuple[int, dict[str, Any]] | None = None  # the last row appended and where it starts
        if self.path.exists():
            with self.path.open(newline="") as f:
                self._columns = list(csv.DictReader(f).fieldnames or [])

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the resolved config is in the run directory's .hydra/config.yaml

    def _read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, Any]]) -> int:
        """Writes ``rows`` under the current columns; returns where the last row starts."""
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows[:-1])
            start = f.tell()
            writer.writerows(rows[-1:])
        tmp.replace(self.path)
        return start

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        merge = self._last is not None and step is not None and self._last[1]["step"] == step
        if merge:
            row = {**self._last[1], **row}
        new = [k for k in row if k not in self._columns]
        if new or not self.path.exists():
            self._columns = ["step"] + sorted(set(self._columns + new) - {"step"})
            rows = self._read()
            start = self._rewrite((rows[:-1] if merge else rows) + [row])
        else:
            with self.path.open("r+", newline="") as f:
                if merge:
                    f.truncate(self._last[0])
                start = f.seek(0, 2)
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)
        self._last = (start, row)

    def rows(self) -> list[tuple[int, dict[str, float]]]:
        """``(step, {metric: value})`` of every row, in order (the values a row has)."""
        return [
            (int(float(row["step"])), {k: float(v) for k, v in row.items() if k != "step" and v not in (None, "")})
            for row in self._read()
            if row.get("step") not in (None, "")
        ]

    @rank_zero_only
    def drop_after(self, step: int) -> None:
        """Forget rows with ``step > step`` (logged after the checkpoint a run resumes from)."""
        rows = self._read()
        kept = [r for r in rows if r.get("step") in (None, "") or math.isnan(float(r["step"])) or float(r["step"]) <= step]
        if len(kept) != len(rows):
            self._rewrite(kept)
        self._last = None

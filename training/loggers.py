"""A run's loggers: ``metrics.csv`` in the run directory, appended as training goes and kept across
resumes (Lightning's own CSVLogger deletes an existing ``metrics.csv`` when it starts, which would
lose a resumed run's history, and writes into ``version_N`` subfolders), and a wandb run
(``conf/logger``) named after the run's overrides and grouped with the runs that differ from it
only by seed; ``ResumeLog`` keeps both to one row per step across restarts.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from .hydra_callbacks import short_dirname
from .record import METRICS, cut_torn_tail


def make_loggers(cfg: DictConfig, run_dir: Path, resumed: bool) -> list[Logger]:
    """metrics.csv, and the wandb logger of ``cfg.logger.wandb`` unless its mode is ``disabled``."""
    loggers: list[Logger] = [MetricsCSV(run_dir)]
    if cfg.logger.wandb.mode != "disabled":
        config = OmegaConf.to_container(cfg, resolve=True)  # as data: its _target_ entries are not built
        wandb = instantiate(
            cfg.logger.wandb,
            run_dir=str(run_dir),
            resumed=resumed,
            run_config=config,
            _recursive_=False,
            _convert_="all",
        )
        loggers.append(wandb)
    return loggers


def wandb_logger(
    mode: str, project: str, entity: str | None, run_dir: Path, resumed: bool, run_config: dict
) -> WandbLogger:
    """The run's wandb logger, named by ``run_name`` with an id fixed by the run directory. A resumed
    fit logs to a new wandb run of the same group, named ``<name> (resumed)``, into which
    ``ResumeLog`` first replays metrics.csv up to the checkpoint: that run holds every step once, as
    metrics.csv does (the earlier run keeps the steps it logged, those after the checkpoint included).

    The wandb run is started here (on rank 0; Lightning gives the other ranks a stand-in) and handed
    to Lightning's logger, rather than started by the logger: Lightning's own ``wandb.init`` passes
    ``anonymous``, which wandb answers with a warning no user can act on. ``quiet`` leaves out
    wandb's closing sparklines and summary: the run's own summary (``training.summary``) says what
    it measured."""
    name, group = run_name()
    run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    if resumed:
        name, run_id = f"{name} (resumed)", f"{run_id}-{time.strftime('%Y%m%d%H%M%S')}"
    run = None
    if rank_zero_only.rank == 0:
        import wandb

        run = wandb.init(
            name=name,
            group=group,
            project=project,
            entity=entity,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=mode,
            config=run_config,
            settings=wandb.Settings(quiet=True),
        )
        run.define_metric("trainer/global_step")  # what Lightning's logger does with a run it starts
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return WandbLogger(name=name, project=project, save_dir=str(run_dir), id=run_id, experiment=run)


def run_name() -> tuple[str, str]:
    """``(name, group)``: a run is named by its overrides (by the swept ones alone within a sweep,
    e.g. ``k=4``), less those that ``hydra.job.config.override_dirname.exclude_keys`` leaves out of
    directory names (``data_root``, ``logger``, ...), and grouped with the runs that differ from it
    only by ``seed`` (its overrides but ``seed``: scripts/results/compare.py's groups), so that wandb shows
    their mean and spread."""
    hc = HydraConfig.get()
    excluded = set(hc.job.config.override_dirname.exclude_keys)
    overrides = [o for o in hc.overrides.task if o.partition("=")[0].lstrip("+~") not in excluded]
    group = short_dirname(",".join(o for o in overrides if o.partition("=")[0].lstrip("+~") != "seed") or "default")
    if hc.mode == RunMode.MULTIRUN:
        swept = _swept_keys(Path(hc.sweep.dir)) or set()
        chosen = [o for o in overrides if o.partition("=")[0].lstrip("+~") in swept]
        return ",".join(chosen or overrides) or "default", group
    return ",".join(overrides) or "default", group


def _swept_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a multirun sweeps over, from the overrides and sweeper parameters it was started
    with (Hydra's ``multirun.yaml`` in the sweep directory, read with Hydra's own override parser:
    the same under every launcher, whose workers do not see the user's command line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    hydra_cfg = OmegaConf.load(path).hydra
    overrides = list(hydra_cfg.overrides.task) + [
        f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()
    ]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


class MetricsCSV(Logger):
    """Appends one row per logged step (columns ``step`` and the metric names) to
    ``<save_dir>/metrics.csv`` and flushes it at once, so a killed run loses nothing it logged;
    metrics logged for the step of the last row (a callback's, then Lightning's) go into that row.
    A new metric name rewrites the file with the extra column. ``drop_after(step)`` removes rows
    logged after a checkpoint, for a run resumed from it."""

    def __init__(self, save_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(save_dir) / METRICS
        self._columns: list[str] = []
        self._last: tuple[int, dict[str, Any]] | None = None  # the last row appended and where it starts
        cut_torn_tail(self.path)  # a row torn by a kill: the next one must start on a line of its own
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
        pass  # the composed config is in the run directory's .hydra/config.yaml (resolved: in wandb)

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
        kept = [
            r for r in rows if r.get("step") in (None, "") or math.isnan(float(r["step"])) or float(r["step"]) <= step
        ]
        if len(kept) != len(rows):
            self._rewrite(kept)
        self._last = None


class ResumeLog(Callback):
    """Keeps metrics.csv to one row per logged step across restarts: a fit that resumes drops the
    rows logged after its checkpoint, a fit that starts over (killed before its first checkpoint,
    or ``resume=false``) drops them all. A resumed fit then replays the rows it kept into its
    other loggers (the new wandb run of ``loggers.wandb_logger``), so they too hold every step once.
    The checkpoint also keeps the last metrics, so a fit resumed at its very end (nothing left to
    train) still returns ``cfg.metric``."""

    def __init__(self, csv: MetricsCSV) -> None:
        self.csv = csv
        self.restored_metrics: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.csv.drop_after(trainer.global_step - 1)
        others = [logger for logger in trainer.loggers if logger is not self.csv]
        if trainer.global_step > 0 and others:
            for step, metrics in self.csv.rows():
                for logger in others:
                    logger.log_metrics(metrics, step=step)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["callback_metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.restored_metrics = checkpoint.get("callback_metrics", {})

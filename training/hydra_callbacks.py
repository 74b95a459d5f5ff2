"""Hydra's side: checks that must run before Hydra creates the run directory, and the
``short_dirname`` resolver that names a sweep's job directories (``conf/config.yaml``)."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

DIRNAME_LIMIT = 120


def short_dirname(name: str, limit: int = DIRNAME_LIMIT) -> str:
    """A sweep job's ``override_dirname`` cut to ``limit`` characters, its end replaced by a hash of
    the whole when it is longer: a command with many overrides would otherwise name a directory
    past the file system's 255-byte limit."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 17]}-{hashlib.sha1(name.encode()).hexdigest()[:16]}"


if not OmegaConf.has_resolver("short_dirname"):
    OmegaConf.register_new_resolver("short_dirname", short_dirname)


class CheckOutputDir(Callback):
    """Fail with one line, instead of a Hydra traceback, when the run or sweep directory cannot be written."""

    @staticmethod
    def _check(directory: str) -> None:
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as error:
            print(f"error: cannot write the output directory {path}: {error.strerror or error}", file=sys.stderr)
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)


class SweepSummary(Callback):
    """A sweep ends with one line per job: its directory and how it ended, from its summary.json
    (``training.summary.one_line``); a job that left none says so."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from training.record import read_summary
        from training.summary import one_line

        sweep = Path(config.hydra.sweep.dir)
        jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.split("_")[0].isdigit()]
        print(f"sweep {sweep}: {len(jobs)} job{'s' if len(jobs) != 1 else ''}")
        for job in sorted(jobs, key=lambda p: int(p.name.split("_")[0])):
            try:
                print(f"  {job}: {one_line(read_summary(job), config.metric)}")
            except (OSError, ValueError, KeyError, TypeError) as error:
                print(f"  {job}: no summary ({type(error).__name__}: {error})")
        print(f"  curves and table: python -m scripts.results.compare {sweep}")

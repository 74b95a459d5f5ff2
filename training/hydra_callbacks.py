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

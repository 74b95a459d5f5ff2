"""What keeps a run directory whole: checkpoints written atomically and read back with a fallback,
``last.ckpt`` after every due validation, and one writer per run directory. (Stopping at a signal:
``training.interrupts``; metrics.csv kept to one row per step across restarts: ``training.loggers``.)

Files of a run directory: ``last.ckpt`` (the newest complete checkpoint), ``last.prev.ckpt`` (the
one before it), ``.lock`` (the pid and host of the process writing there), ``metrics.csv``.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import socket
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO

from .record import read_summary

log = logging.getLogger("train")

LAST, PREVIOUS, LOCK = "last.ckpt", "last.prev.ckpt", ".lock"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it, flushed and fsynced, then renames the
    existing one to ``<name>.prev.ckpt`` and the new one over ``<name>``: a kill or a full disk
    during the write leaves the previous checkpoint whole, under one of the two names. A full disk
    stops the run with ``NoSpaceForCheckpoint``, one line naming the directory, the space the
    checkpoint needs and has, and the step the intact checkpoint holds."""

    def __init__(self) -> None:
        super().__init__()
        self._saved_steps: dict[Path, int] = {}  # the step of each checkpoint this process wrote

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        data = io.BytesIO()
        torch.save(checkpoint, data)  # in memory first: a full disk is then an OSError of the write
        try:
            with open(partial, "wb") as f:
                f.write(data.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            if path.exists():
                os.replace(path, path.with_name(path.name.removesuffix(".ckpt") + ".prev.ckpt"))
            os.replace(partial, path)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise NoSpaceForCheckpoint(path, len(data.getbuffer()), self._intact_step(path)) from error
        finally:
            partial.unlink(missing_ok=True)
        self._saved_steps[path] = checkpoint.get("global_step", -1)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the renames themselves
        finally:
            os.close(directory)

    def _intact_step(self, path: Path) -> int | None:
        """The step of the checkpoint left whole at ``path`` (None: there is none)."""
        if path in self._saved_steps:
            return self._saved_steps[path]
        if not path.is_file() or unreadable(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=False).get("global_step")


class NoSpaceForCheckpoint(OSError):
    """The disk filled while a checkpoint was written; the previous checkpoint is whole."""

    def __init__(self, path: Path, needed: int, intact_step: int | None) -> None:
        free = shutil.disk_usage(path.parent).free
        kept = (
            f"{path.name} still holds step {intact_step}: free space and run the same command to resume"
            if intact_step is not None
            else "no earlier checkpoint was written"
        )
        super().__init__(
            errno.ENOSPC,
            f"no space left on the disk of {path.parent} for a checkpoint: it needs {needed / 1e6:.2f} MB, "
            f"{free / 1e6:.2f} MB are free; {kept}",
        )

    def __str__(self) -> str:
        return self.strerror


def unreadable(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be read (``None``: it can): a truncated or corrupt
    file fails the zip checks (``torch.save``'s format) without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        return None if bad is None else f"{bad} is corrupt"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return str(error) or type(error).__name__


def checkpoint_to_resume(run_dir: Path, resume: bool, ckpt_path: str | None) -> str | None:
    """The checkpoint a run starts from: ``ckpt_path`` if given, else ``last.ckpt`` of the run
    directory (``last.prev.ckpt`` when ``last.ckpt`` cannot be read, with a warning), else none. A run
    directory that holds a finished record (its checkpoints left with scripts/results/record.py) is refused,
    rather than started over on its record (``resume=false`` does that on purpose)."""
    if ckpt_path is not None:
        path = Path(ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        if why := unreadable(path):
            raise ValueError(f"checkpoint {path} cannot be read ({why})")
        return str(path)
    if not resume:
        return None
    last, previous = run_dir / LAST, run_dir / PREVIOUS
    if not last.is_file() and not previous.is_file():
        if (read_summary(run_dir) or {}).get("status") == "finished":
            raise ValueError(
                f"{run_dir} holds the record of a finished run (summary.json): give another hydra.run.dir, "
                "or resume=false to start over there"
            )
        return None
    if last.is_file() and not (why := unreadable(last)):
        log.info("resuming from %s", last)
        return str(last)
    if previous.is_file() and not unreadable(previous):
        reason = f"{last} cannot be read ({why})" if last.is_file() else f"{last} is missing"
        warnings.warn(f"{reason}; resuming from {previous}, the checkpoint before it", stacklevel=2)
        return str(previous)
    reason = f"{last} cannot be read ({why})" if last.is_file() else f"{previous} cannot be read"
    raise ValueError(f"{reason} and there is no earlier checkpoint: start over with resume=false")


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether a validation runs right after the training step under way (asked from
    ``on_train_batch_end``): Lightning's rule for validations every ``val_check_interval`` batches or
    at an epoch's end every ``check_val_every_n_epoch`` epochs, and after a step that asked the fit
    to stop, read from the trainer's public state. (A ``val_check_interval`` given as a time is not
    covered: no preset uses one.)"""
    every_epochs = trainer.check_val_every_n_epoch
    if not trainer.enable_validation or (every_epochs is not None and (trainer.current_epoch + 1) % every_epochs):
        return False
    fit, epoch = trainer.fit_loop, trainer.fit_loop.epoch_loop
    may_stop = (not fit.min_epochs or fit.epoch_progress.current.processed >= fit.min_epochs) and (
        not fit.min_steps or trainer.global_step >= fit.min_steps
    )
    if trainer.should_stop and may_stop:  # asked to stop, and its minimum length reached
        return True
    if trainer.val_check_batch == float("inf"):  # an iterable dataset without a length
        return epoch.batch_progress.is_last_batch
    batches = epoch.total_batch_idx if every_epochs is None else epoch.batch_idx
    return (batches + 1) % trainer.val_check_batch == 0


class SaveAfterValidation(Callback):
    """A callback that writes a checkpoint at the end of a training step (``save_at_step_end``, called
    from ``on_train_batch_end``): at once, or, at a step that a validation follows, after that
    validation. (Resumed from a checkpoint written at a train-batch end, Lightning skips the
    validation that was due right after it: a run killed during it would never log it.)"""

    _after_validation = False

    def save(self, trainer: L.Trainer) -> None:
        raise NotImplementedError

    def save_at_step_end(self, trainer: L.Trainer) -> None:
        if validation_follows(trainer):
            self._after_validation = True
        else:
            self.save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self.save(trainer)
        super().on_validation_end(trainer, pl_module)


class StepCheckpoint(SaveAfterValidation):
    """``<dirpath>/last.ckpt`` every ``every_n_train_steps`` steps, written after the validation due
    at its step (``SaveAfterValidation``), and at the fit's end, through the trainer's checkpoint
    writer (``AtomicCheckpointIO``)."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int) -> None:
        self.path = Path(dirpath) / LAST
        self.every = every_n_train_steps
        self._saved_step: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step != self._saved_step and not trainer.sanity_checking:
            self._saved_step = step  # once per step (several batch ends when gradients accumulate)
            self.save_at_step_end(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:  # the fit's last step, whatever its number
            self._saved_step = trainer.global_step
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)


def plugins() -> list[Any]:
    """Atomic checkpoint writes; under SLURM, no requeue by Lightning: preemption and time-outs are
    handled by the submitit launcher, which requeues the job, and the requeued job resumes from
    last.ckpt (Lightning's own requeue would race with it)."""
    found: list[Any] = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        found.append(SLURMEnvironment(auto_requeue=False))
    return found


class RunDirLock:
    """``<run dir>/.lock`` holds the pid and host of the process writing to the run directory, from
    before training until it exits: a second process on the same directory fails at once with
    ``RunDirectoryBusy`` naming the first. A lock left by a process of this host that no longer
    runs (killed with SIGKILL) is taken over, with a warning."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise ``RunDirectoryBusy``: a stale lock is taken over once, and a lock
        found again after that (another process took it meanwhile) is busy."""
        owner = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        for attempt in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host, since = self._owner()
                if attempt == 0 and host == socket.gethostname() and pid is not None and not _alive(pid):
                    warnings.warn(
                        f"{self.path} was left by process {pid}, which no longer runs: taking it over", stacklevel=2
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunDirectoryBusy(
                    f"run directory {self.path.parent} is in use by process {pid} on {host} (since {since}); "
                    f"wait for it to finish, or delete {self.path} if that process is gone"
                ) from None
            with os.fdopen(descriptor, "w") as f:
                f.write(owner + "\n")
            self.held = True
            return

    def _owner(self) -> tuple[int | None, str, str]:
        try:
            pid, host, since = self.path.read_text().split(" ", 2)
            return int(pid), host, since.strip()
        except (OSError, ValueError):
            return None, "an unknown host", "an unknown time"

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunDirectoryBusy(ValueError):
    """Another process writes to this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

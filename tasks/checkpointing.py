"""What keeps a run directory whole: checkpoints written atomically and read back with a fallback,
``last.ckpt`` after every due validation, interrupts that stop at a step boundary with a
checkpoint, one writer per run directory, and metrics.csv kept to one row per step across restarts.

Files of a run directory: ``last.ckpt`` (the newest complete checkpoint), ``last.prev.ckpt`` (the
one before it), ``.lock`` (the pid and host of the process writing there), ``metrics.csv``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from .loggers import MetricsCSV

log = logging.getLogger("train")

LAST, PREVIOUS, LOCK = "last.ckpt", "last.prev.ckpt", ".lock"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it, flushed and fsynced, then renames the
    existing one to ``<name>.prev.ckpt`` and the new one over ``<name>``: a kill or a full disk
    during the write leaves the previous checkpoint whole, under one of the two names."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if path.exists():
                os.replace(path, path.with_name(path.name.removesuffix(".ckpt") + ".prev.ckpt"))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the renames themselves
        finally:
            os.close(directory)


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
    directory (``last.prev.ckpt`` when ``last.ckpt`` cannot be read, with a warning), else none."""
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


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps; at a step that a validation follows, written
    after that validation. (Resumed from a checkpoint written at a train-batch end, Lightning skips
    the validation that was due right after it: a run killed during it would never log it.)"""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._after_validation = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if (
            trainer.enable_validation
            and trainer.global_step % self._every_n_train_steps == 0
            and self._validation_follows(trainer)
        ):
            self._after_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, *args)

    @staticmethod
    def _validation_follows(trainer: L.Trainer) -> bool:
        loop = trainer.fit_loop
        try:  # Lightning's own test (private API; tested with pytorch-lightning 2.6)
            return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
        except (AttributeError, TypeError):
            warnings.warn(
                "this Lightning version changed a private API: last.ckpt is written before the validation "
                "due at its step, and a run resumed from it skips that validation",
                stacklevel=2,
            )
            return False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_validation_end(trainer, pl_module)


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


class StopOnSignal(Callback):
    """SIGINT (Ctrl-C) or SIGTERM during training: the step under way finishes (with its row in
    metrics.csv, and the validation due at it, if any), ``last.ckpt`` is written there, and the
    fit ends with ``SignalStop`` before the next step; ``received`` then holds the signal, and
    ``fit`` raises ``Interrupted``: no final validation or test, exit status 128 + its number (130, 143).
    The first signal puts the default handlers back, so a second one acts at once (Ctrl-C: an
    immediate ``KeyboardInterrupt``). In a distributed run the processes agree at every step on
    whether any of them received one, and stop together."""

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / LAST
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._after_validation = False
        self.saved = False  # last.ckpt written at the stop

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received, self._after_validation, self.saved = None, False, False
        if threading.current_thread() is threading.main_thread():  # where Python runs handlers
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or self.saved or self._after_validation:
            return
        if trainer.enable_validation and StepCheckpoint._validation_follows(trainer):
            self._after_validation = True  # the checkpoint after the validation due now, as StepCheckpoint
        else:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self.saved = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.saved:  # the last step's row is logged and its checkpoint written: stop here
            raise SignalStop(self.message(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.teardown(trainer, pl_module, "fit")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) is self._handle:
                signal.signal(signum, handler)
        self._previous = {}

    def message(self, trainer: L.Trainer) -> str:
        name = signal.Signals(self.received).name
        return (
            f"stopped by {name} after step {trainer.global_step}; {self.path} holds it: run the same command "
            f"with hydra.run.dir={self.path.parent} to continue"
        )


class SignalStop(Exception):
    """The fit was stopped by SIGINT or SIGTERM, after writing its checkpoint (``StopOnSignal``)."""


class Interrupted(Exception):
    """A run stopped by a signal (``fit``); ``code`` is the exit status, 128 + its number."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def plugins() -> list[Any]:
    """Atomic checkpoint writes; under SLURM, no requeue by Lightning: preemption and time-outs are
    handled by the submitit launcher, which requeues the job, and the requeued job resumes from
    last.ckpt (Lightning's own requeue would race with it)."""
    found: list[Any] = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        found.append(SLURMEnvironment(auto_requeue=False))
    return found


def fit(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
    stop: StopOnSignal,
) -> None:
    """``trainer.fit``, resumed from ``ckpt_path``; a signal (``stop``) ends it with ``Interrupted``
    once ``last.ckpt`` holds the last step, and a checkpoint of another configuration is one line."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SignalStop as stopped:
        raise Interrupted(str(stopped), 128 + stop.received) from None
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        detail = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(f"checkpoint {ckpt_path} does not match this configuration: {detail}") from error
    if stop.received is not None:  # SIGINT / SIGTERM at the last step
        if not stop.saved:
            trainer.save_checkpoint(stop.path)
        raise Interrupted(stop.message(trainer), 128 + stop.received)


class RunDirLock:
    """``<run dir>/.lock`` holds the pid and host of the process writing to the run directory, from
    before training until it exits: a second process on the same directory fails at once with
    ``RunDirectoryBusy`` naming the first. A lock left by a process of this host that no longer
    runs (killed with SIGKILL) is taken over, with a warning."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        owner = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host, since = self._owner()
                if host == socket.gethostname() and pid is not None and not _alive(pid):
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

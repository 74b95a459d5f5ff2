"""Stopping a run at a signal: SIGINT (Ctrl-C) or SIGTERM during training ends it at a step
boundary with ``last.ckpt`` holding that step, and with one exception, ``Interrupted``, whose
``code`` is the process's exit status (128 + the signal's number: 130, 143)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as L

from .run_dir import LAST, SaveAfterValidation


class Interrupted(Exception):
    """The run was stopped by a signal, after writing its checkpoint; ``code`` is the exit status,
    128 + the signal's number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.code = 128 + signum


class StopOnSignal(SaveAfterValidation):
    """SIGINT (Ctrl-C) or SIGTERM during training: the step under way finishes (with its row in
    metrics.csv, and the validation due at it, if any), ``last.ckpt`` is written there, and the
    fit ends with ``Interrupted`` before the next step: no final validation or test. (A signal at
    the last step: ``fit`` raises it after the fit.) The first signal puts the default handlers
    back, so a second one acts at once (Ctrl-C: an immediate ``KeyboardInterrupt``). In a
    distributed run the processes agree at every step on whether any of them received one, and
    stop together."""

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / LAST
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
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
        if stop and not self.saved and not self._after_validation:
            self.save_at_step_end(trainer)

    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self.saved = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.saved:  # the last step's row is logged and its checkpoint written: stop here
            raise self.interrupted(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.teardown(trainer, pl_module, "fit")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) is self._handle:
                signal.signal(signum, handler)
        self._previous = {}

    def interrupted(self, trainer: L.Trainer) -> Interrupted:
        """The stop, saying where to resume from."""
        name = signal.Signals(self.received).name
        return Interrupted(
            f"stopped by {name} after step {trainer.global_step}; {self.path} holds it: run the same command "
            f"with hydra.run.dir={self.path.parent} to continue",
            self.received,
        )


def fit(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
    stop: StopOnSignal,
) -> None:
    """``trainer.fit``, resumed from ``ckpt_path``: a checkpoint of another configuration is one line,
    and a signal at the last step (``stop``, which ends a fit at any earlier step) raises
    ``Interrupted`` once ``last.ckpt`` holds that step."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        detail = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(f"checkpoint {ckpt_path} does not match this configuration: {detail}") from error
    if stop.received is not None:  # SIGINT / SIGTERM at the last step
        if not stop.saved:
            trainer.save_checkpoint(stop.path)
        raise stop.interrupted(trainer)


def fit_then_test(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
    stop: StopOnSignal,
    resume_log: Any,
    metric: str,
    test: bool,
) -> float | None:
    """``fit``, a validation at the last step when none fell on it, then the test set (``test``);
    returns ``metric`` as the fit left it (read before the test replaces the callback metrics; a fit
    resumed at its end trains nothing: then the value its checkpoint kept, which
    ``resume_log.restored_metrics``, a ``training.loggers.ResumeLog``, holds once the fit loaded it)."""
    fit(trainer, module, datamodule, ckpt_path, stop)
    if trainer.limit_val_batches and module.validated_at != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    value = trainer.callback_metrics.get(metric, resume_log.restored_metrics.get(metric))
    if test:
        trainer.test(module, datamodule=datamodule, ckpt_path=None, verbose=False)
    return None if value is None else float(value)

"""Callbacks the tests add to a run the way a user adds one, by a config override
(``conf/callbacks``): ``add("crash", CrashAt, hook="test_start")`` →
``+callbacks.crash._target_=tests.helpers.hooks.CrashAt +callbacks.crash.hook=test_start``.
A signal or a crash at a chosen step, a learning-rate jolt, and a record of the unitary matrices after every step."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch

from training.callbacks import unitary_matrices


def add(name: str, callback: type, **kwargs: Any) -> list[str]:
    """The overrides that add ``callback(**kwargs)`` to a run's callbacks under ``name``."""
    target = f"{callback.__module__}.{callback.__qualname__}"
    return [f"+callbacks.{name}._target_={target}", *(f"+callbacks.{name}.{k}={v}" for k, v in kwargs.items())]


class SimulatedCrash(Exception):
    """Stands for a SIGKILL: nothing is saved after it (Lightning's ModelCheckpoint has no on_exception)."""


class SignalAt(L.Callback):
    """Sends this process ``signum`` (default SIGINT) at the start of step ``step``."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class CrashAt(L.Callback):
    """Raises ``SimulatedCrash`` at ``hook`` (``train_batch_end``, ``validation_start`` or
    ``test_start``), at step ``step`` (any step when ``None``)."""

    def __init__(self, hook: str, step: int | None = None) -> None:
        if hook not in ("train_batch_end", "validation_start", "test_start"):
            raise ValueError(f"CrashAt: unknown hook {hook!r}")
        self.hook, self.step = hook, step

    def _crash(self, hook: str, trainer: L.Trainer) -> None:
        if hook == self.hook and self.step in (None, trainer.global_step):
            raise SimulatedCrash

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._crash("train_batch_end", trainer)

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._crash("validation_start", trainer)

    def on_test_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._crash("test_start", trainer)


class JoltAt(L.Callback):
    """Multiplies every learning rate by ``factor`` for the update of step ``step`` alone: the next
    step's loss jumps (a loss spike made to order)."""

    def __init__(self, step: int, factor: float = 1000.0) -> None:
        self.step, self.factor = step, factor

    def _scale(self, trainer: L.Trainer, by: float) -> None:
        for group in trainer.optimizers[0].param_groups:
            group["lr"] *= by

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            self._scale(trainer, self.factor)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step + 1:
            self._scale(trainer, 1 / self.factor)


class RecordWeights(L.Callback):
    """On every rank, ``<run dir>/rank<r>.pt``: the unitary matrices at the start and after every
    step, with the step and a digest of the rank's batch; rewritten after every step, so a run
    that fails keeps what it recorded."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record = {"initial": self._weights(pl_module), "steps": []}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        digest = hashlib.sha1(b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in batch)).hexdigest()
        self.record["steps"].append(
            {"global_step": trainer.global_step, "batch": digest, "weights": self._weights(pl_module)}
        )
        torch.save(self.record, Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt")

    @staticmethod
    def _weights(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {name: W.detach().clone() for name, W in unitary_matrices(pl_module.model).items()}

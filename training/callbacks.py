"""Measurements every task gets: unitarity error of each unitary matrix and the step time,
split into forward+backward and update."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as L
import torch
from torch import Tensor

import projunn


def unitary_matrices(model: torch.nn.Module) -> dict[str, Tensor]:
    """Every matrix a module declares unitary, by its qualified name, as the model uses it
    (for a parametrized matrix, the computed one)."""
    return dict(projunn.named_unitary_parameters(model))


def logged_step(trainer: L.Trainer) -> int:
    """The step at which Lightning logs the metrics of the training step under way (from
    ``on_train_batch_end``, after the optimizer stepped): ``global_step - 1``, since every training
    batch here steps the optimizer once (no gradient accumulation; the schema has no such key)."""
    return trainer.global_step - 1


def log_step(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
    """Sends ``metrics`` of the training step under way (from ``on_train_batch_end``) to the
    loggers, at the step Lightning gives that step's own metrics. (``LightningModule.log`` from a
    callback would send the value again at every later step of the epoch, so that a measurement
    taken every n steps would read as taken at every step.)"""
    step = logged_step(trainer)
    for logger in trainer.loggers:
        logger.log_metrics({name: float(value) for name, value in metrics.items()}, step)


def is_last_step(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether the training step under way (from ``on_train_batch_end``) is the fit's last one: it
    reaches ``max_steps``, or ends the last epoch."""
    if 0 <= trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
    return last_epoch and (trainer.is_last_batch or batch_idx + 1 >= trainer.num_training_batches)


class UnitarityMonitor(L.Callback):
    """Logs ``unitarity/<name>`` (worst matrix of a batched weight) and ``unitarity/max_error``,
    the error ``‖W^H W − I‖_F`` of ``projunn.unitarity_error``, every ``every_n_steps`` steps and
    at the last step (a run shorter than ``every_n_steps`` is measured too).

    In a distributed run it also logs ``unitarity/rank_divergence``: the largest difference between
    any process's unitary matrices and rank 0's (0 when the processes agree bit for bit, as they
    must: they apply the same averaged gradient with the same sketches).
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = every_n_steps
        self.last_error: float | None = None  # the last ``unitarity/max_error`` measured (the progress bar shows it)

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.every_n_steps and not is_last_step(trainer, batch_idx):
            return
        errors = {f"unitarity/{name}": error for name, error in projunn.unitarity_errors(pl_module.model).items()}
        if not errors:
            return
        errors["unitarity/max_error"] = torch.stack(list(errors.values())).max()
        self.last_error = float(errors["unitarity/max_error"])
        if trainer.world_size > 1:
            errors["unitarity/rank_divergence"] = self._rank_divergence(trainer, unitary_matrices(pl_module.model))
        log_step(trainer, errors)

    @staticmethod
    def _rank_divergence(trainer: L.Trainer, matrices: dict[str, Tensor]) -> Tensor:
        divergence = torch.zeros((), dtype=torch.float64, device=trainer.strategy.root_device)
        for W in matrices.values():
            reference = trainer.strategy.broadcast(W.detach().clone(), src=0)
            divergence = torch.maximum(divergence, (W - reference).abs().max().double())
        return trainer.strategy.reduce(divergence, reduce_op="max")


class StepTimer(L.Callback):
    """Logs ``time/forward_backward_s``, ``time/update_s`` and ``time/step_s`` of every training step.

    Lightning runs the forward+backward closure inside ``optimizer.step``; the boundary between
    the two parts is ``on_before_optimizer_step``, called right after the closure. Put this callback
    first so that other callbacks' batch-end work is not counted.
    """

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._start = self._now(pl_module)
        self._backward_done = None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._backward_done = self._now(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        end = self._now(pl_module)
        middle = self._backward_done if self._backward_done is not None else end
        pl_module.log_dict(
            {
                "time/forward_backward_s": middle - self._start,
                "time/update_s": end - middle,
                "time/step_s": end - self._start,
            },
            on_step=True,
            on_epoch=False,
        )

"""One LightningModule for every task: the task supplies the objective, the config the model and
the optimizer (a ``_partial_`` called with the model in ``configure_optimizers``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as L
import torch
from torch import Tensor, nn

from tasks.data import Task


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; raised before the update, so the weights are the last good ones."""


class TrainingModule(L.LightningModule):
    """Trains ``model`` on ``task`` (a data module with ``objective(output, target) -> (loss, metrics)``
    and an optional ``baseline`` loss) with the optimizer ``optimizer(model)``.

    Logs ``{train,val,test}/loss`` and ``{train,val,test}/<metric>`` (e.g. ``acc``), and
    ``train/baseline`` beside the loss when the task has one. The validation loop evaluates the
    task's ``eval_stages`` (``("val",)`` by default; a dataset task may add ``"test"``, the paper's
    test accuracy after every epoch), each logged under its own prefix, with the best accuracy so
    far as ``<stage>/acc_best``.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = task.objective
        self.baseline = task.baseline
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        self.eval_stages: tuple[str, ...] = tuple(task.eval_stages)
        self.validated_at: int | None = None  # global step of the last validation (kept in checkpoints)
        self.best_acc: dict[str, float] = {}  # best <stage>/acc of the validations so far (kept in checkpoints)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        inputs, targets = batch
        loss, metrics = self.objective(self.model(inputs), targets)
        self._report(stage, loss, metrics)
        return loss

    # With compile=true the steps above are compiled and this runs eagerly: traced, each self.log call
    # would be another graph (dynamo recompiles Lightning's `log` per metric name until its limit), and
    # the finite-loss test reads the loss on the host anyway.
    @torch.compiler.disable(reason="logging and the finite-loss check run eagerly")
    def _report(self, stage: str, loss: Tensor, metrics: dict[str, Tensor]) -> None:
        options = {"on_step": stage == "train", "on_epoch": stage != "train", "sync_dist": stage != "train"}
        self.log(f"{stage}/loss", loss, prog_bar=True, add_dataloader_idx=False, **options)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "acc", add_dataloader_idx=False, **options)
        if stage != "train":
            return
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step}; stopping before the update "
                "(the last checkpoint is kept)"
            )
        if self.baseline is not None:
            self.log("train/baseline", float(self.baseline), on_step=True, on_epoch=False)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._shared_step(batch, self.eval_stages[dataloader_idx])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.validated_at = self.global_step
        for stage in self.eval_stages:
            acc = self.trainer.callback_metrics.get(f"{stage}/acc")
            if acc is not None:
                self.best_acc[stage] = max(self.best_acc.get(stage, -math.inf), float(acc))
                self.log(f"{stage}/acc_best", self.best_acc[stage])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["validated_at"] = self.validated_at
        checkpoint["best_acc"] = self.best_acc

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.validated_at = checkpoint.get("validated_at")
        self.best_acc = checkpoint.get("best_acc", {})

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.model)
        if self.make_scheduler is None:
            return optimizer
        # Schedules count optimizer steps; they get this process's batches per epoch and the run's total.
        steps_per_epoch = len(self.trainer.datamodule.train_dataloader())
        scheduler = self.make_scheduler(
            optimizer, steps_per_epoch=steps_per_epoch, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

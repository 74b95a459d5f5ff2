"""One LightningModule for every task: the task supplies the objective, the config the model and
the optimizer (a ``_partial_`` called with the model in ``configure_optimizers``)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; raised before the update, so the weights are the last good ones."""


class Experiment(L.LightningModule):
    """Trains ``model`` on ``task`` (a data module with ``objective(output, target) -> (loss, metrics)``
    and an optional ``baseline`` loss) with the optimizer ``optimizer(model)``.

    Logs ``{train,val,test}/loss`` and ``{train,val,test}/<metric>`` (e.g. ``acc``), and
    ``train/baseline`` beside the loss when the task has one.
    """

    def __init__(
        self,
        model: nn.Module,
        task: L.LightningDataModule,
        optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = task.objective
        self.baseline = getattr(task, "baseline", None)
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        self.validated_at: int | None = None  # global step of the last validation (kept in checkpoints)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        inputs, targets = batch
        loss, metrics = self.objective(self.model(inputs), targets)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step, sync_dist=not on_step)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "acc", on_step=on_step, on_epoch=not on_step, sync_dist=not on_step)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step}; stopping before the update "
                "(the last checkpoint is kept)"
            )
        if self.baseline is not None:
            self.log("train/baseline", float(self.baseline), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at = self.global_step

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["validated_at"] = self.validated_at

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.validated_at = checkpoint.get("validated_at")

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.model)
        if self.make_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.make_scheduler(optimizer), "interval": "step"}}

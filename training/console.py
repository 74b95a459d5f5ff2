"""What a run shows its user: one progress bar that fits the run, its log in the console and in
``<run dir>/train.log``, and no upstream message the user cannot act on.

* ``RunProgress``: steps of the run's planned steps (``max_steps``, or the epochs' steps of an
  epoch-limited run, then with ``epoch e/E`` beside them), and the figures that matter: the training
  loss, the last unitarity error measured and the step time.
* ``route_logs``: the project's messages (logger ``train``), warnings and Lightning's own lines go
  to ``train.log`` (Hydra's job log file); standard output gets the project's lines, standard error
  every warning.
* Filtered where they arise, each known to be harmless (``HARMLESS``): Lightning's advertisement of
  a logging product, torch's deprecation of a ``_pytree`` call that Lightning makes, and Lightning's
  note that a checkpoint of a record made before the re-cut names a callback state no longer kept. The
  compiled recurrence's build on a CPU-only machine has its own filter (``projunn._kernels``).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from typing import Any

import pytorch_lightning as L
from pytorch_lightning.callbacks import ProgressBar
from torch import nn
from tqdm import tqdm

import projunn

log = logging.getLogger("train")  # the project's run log: console and train.log

# Upstream messages known to be harmless, by the logger (or warning category) they come from.
HARMLESS = {
    "pytorch_lightning": [r"💡 Tip: "],  # an advertisement, at every fit
    "warnings": [
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch, of Lightning's own _pytree code
        # a checkpoint written before commit e002072 holds state for StepCheckpoint, which keeps none now
        r"Be aware that when using `ckpt_path`, .* callbacks: \[\"StepCheckpoint\{[^\"]*\}\"\]\.$",
    ],
}
LIGHTNING = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")


class _Drop(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


class _ConsoleFilter(logging.Filter):
    """On the console (standard output): the project's lines below warnings; Lightning's information
    lines (seed, accelerators, why a fit stopped) go to train.log alone, warnings to standard error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING and not record.name.startswith(LIGHTNING)


def route_logs() -> None:
    """Called once Hydra has set up logging (its console handler and the file handler of train.log):
    Lightning's loggers, which keep a handler of their own, pass their records to those handlers;
    warnings are logged, on standard error and in train.log; the harmless messages above are dropped."""
    for name in LIGHTNING:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    for pattern in HARMLESS["warnings"]:
        warnings.filterwarnings("ignore", message=pattern)
    logging.captureWarnings(True)
    root = logging.getLogger()
    if any(isinstance(f, _Drop) for handler in root.handlers for f in handler.filters):
        return  # routed already (a sweep's jobs in one process)
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]
    if consoles:
        errors = logging.StreamHandler(sys.stderr)
        errors.setLevel(logging.WARNING)
        errors.setFormatter(consoles[0].formatter)
        root.addHandler(errors)
    for handler in root.handlers:
        handler.addFilter(_Drop(HARMLESS["pytorch_lightning"]))  # (a logger's filter misses its children's records)
        if handler in consoles:
            handler.addFilter(_ConsoleFilter())


def log_start(hydra_cfg: Any, model: nn.Module) -> None:
    """The run's first lines in its log: the overrides, the option chosen in each config group, the model."""
    log.info("overrides: %s", " ".join(hydra_cfg.overrides.task) or "(none)")
    choices = ", ".join(f"{g}={c}" for g, c in hydra_cfg.runtime.choices.items() if c and "/" not in g)
    log.info("composed: %s", choices)
    log.info(describe_model(model))


def describe_model(model: nn.Module) -> str:
    """One line: the model's class, its parameters, and how many of them are in unitary matrices."""
    total = sum(p.numel() for p in model.parameters())
    unitary = dict(projunn.named_unitary_parameters(model))
    in_unitary = sum(W.numel() for W in unitary.values())
    line = f"model: {type(model).__name__}, {total:,} parameters"
    if unitary:
        line += f", {in_unitary:,} of them in {len(unitary)} unitary matri{'x' if len(unitary) == 1 else 'ces'}"
    return line


class RunProgress(ProgressBar):
    """One bar for the whole fit (the module docstring); validation and test show a passing bar of
    their batches. Resumed, the bar starts at the step the run resumes from."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: tqdm | None = None
        self._eval: tqdm | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _new(self, **kwargs: Any) -> tqdm:
        return tqdm(file=sys.stderr, dynamic_ncols=True, mininterval=0.5, disable=not self._enabled, **kwargs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.max_steps if trainer.max_steps >= 0 else int(trainer.estimated_stepping_batches)
        self._bar = self._new(total=total, initial=trainer.global_step, unit="step")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None and trainer.max_steps < 0:  # epoch-limited: the epoch is part of the story
            self._bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._bar is None:
            return
        self._bar.update(trainer.global_step - self._bar.n)
        metrics = trainer.callback_metrics
        figures = {}
        if "train/loss" in metrics:
            figures["loss"] = f"{float(metrics['train/loss']):.4g}"
        unitarity = next((c.last_error for c in trainer.callbacks if hasattr(c, "last_error")), None)
        if unitarity is not None:
            figures["unitarity"] = f"{unitarity:.1e}"
        if "time/step_s" in metrics:
            figures["step"] = f"{1000 * float(metrics['time/step_s']):.0f} ms"
        self._bar.set_postfix(figures, refresh=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _eval_start(self, description: str, total: float) -> None:
        if self._eval is None and sys.stderr.isatty():  # (a passing bar in a log file is escape codes)
            self._eval = self._new(total=None if total == float("inf") else int(total), desc=description, leave=False)

    def _eval_step(self) -> None:
        if self._eval is not None:
            self._eval.update(1)

    def _eval_end(self) -> None:
        if self._eval is not None:
            self._eval.close()
            self._eval = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start("validation", self.total_val_batches)

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._eval_step()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start("test", sum(trainer.num_test_batches))

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._eval_step()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end()

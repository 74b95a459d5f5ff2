"""What tells a researcher why a unitary model trains where an unconstrained one does not, every
``diagnostics_every`` steps (a top-level key; 0 turns it off), on the step's training batch, after
its update:

* **gradients through time** (recurrent models) or **through depth** (the depth-study CNN):
  ``‖∂L/∂h_t‖`` for every step ``t`` (``‖∂L/∂a_l‖`` for every layer ``l``), the total gradient
  through all later steps, from one extra forward and backward with zero probes added to the
  hidden states (the models' ``probes`` argument); metrics.csv gets ``grad_time/first``,
  ``grad_time/last`` and ``grad_time/ratio_first_last`` (``grad_depth/...``);
* **the spectrum** of each recurrent matrix (the declared unitary ones, or an unconstrained RNN's
  ``weight_hh_l0``): ``spectrum/max_abs_eig_dev`` = max ``||λ| − 1|`` over the single matrices
  (eigenvalues lie on the unit circle for a unitary matrix) and ``spectrum/max_sv_dev`` =
  max ``|σ − 1|`` over all (a batch of frequency matrices gets singular values only: one batched
  SVD, where eigenvalues would be a loop of general eigensolvers);
* **the captured update** of projUNN: ``captured/<matrix>``, the fraction ``‖a bᴴ‖_F / ‖ΔW‖_F`` of
  the base optimizer's update that the rank-k step keeps (``projunn.optim.captured_fraction``;
  the mean over a batch of matrices): the number to read when choosing k.

The curves (gradient profile, eigenvalues, singular values) go to ``<run dir>/diagnostics.jsonl``,
one JSON object per diagnostic step, and, with wandb, to the run as a line plot of the gradient
profile and histograms of the eigenvalue phases and singular values. ``scripts/results/compare.py`` draws
them across a sweep. ``time/diagnostics_s`` is the time they took.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from torch import Tensor, nn

import projunn

from .callbacks import log_step, logged_step, unitary_matrices
from .record import DIAGNOSTICS, cut_torn_tail, read_jsonl, write_text_atomic

FILE = DIAGNOSTICS


def gradient_profile(model: nn.Module, x: Tensor, targets: Tensor, objective: Any) -> Tensor | None:
    """``‖∂L/∂h_t‖`` for every step (or layer) of a model that takes probes (``probe_shape``), on one
    batch, in float64; ``None`` for a model that does not. Parameters get no gradient."""
    if not hasattr(model, "probe_shape"):
        return None
    shape, dtype = model.probe_shape(x)
    probes = torch.zeros(shape, dtype=dtype, device=x.device, requires_grad=True)
    with torch.enable_grad():
        loss, _ = objective(model(x, probes=probes), targets)
        (grad,) = torch.autograd.grad(loss, probes)
    grad = grad.detach().to(torch.complex128 if grad.is_complex() else torch.float64)
    if model.probe_axis == "time":  # (batch, time, hidden)
        return grad.abs().pow(2).sum(dim=(0, 2)).sqrt()
    return grad.flatten(1).abs().pow(2).sum(dim=1).sqrt()  # (layer, batch, ...)


def recurrent_matrices(model: nn.Module) -> dict[str, Tensor]:
    """The matrices whose spectrum matters: the declared unitary ones, and an unconstrained
    ``nn.RNN``'s or ``nn.LSTM``'s recurrent matrix (the LSTM's four gates stacked: singular values
    only, it is not square)."""
    found = unitary_matrices(model)
    for name, module in model.named_modules():
        if isinstance(module, (nn.RNN, nn.LSTM)):
            found[f"{name}.weight_hh_l0" if name else "weight_hh_l0"] = module.weight_hh_l0
    return found


def spectrum(W: Tensor) -> tuple[Tensor | None, Tensor]:
    """Eigenvalues (a single square matrix only, else ``None``) and singular values of ``W``, in
    double precision."""
    wide = W.detach().to(torch.complex128 if W.is_complex() else torch.float64)
    eigenvalues = torch.linalg.eigvals(wide) if W.ndim == 2 and W.shape[0] == W.shape[1] else None
    return eigenvalues, torch.linalg.svdvals(wide)


class Diagnostics(L.Callback):
    """The measurements of the module docstring every ``every_n_steps`` steps, on rank 0, into
    ``<run_dir>/diagnostics.jsonl``, the loggers (summary columns) and wandb (curves)."""

    def __init__(self, every_n_steps: int, run_dir: Path) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be ≥ 0 (0: off), got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.path = Path(run_dir) / FILE
        self._due = False

    @staticmethod
    def _optimizer(trainer: L.Trainer) -> projunn.ProjUNN | None:
        optimizers = trainer.optimizers
        return optimizers[0] if optimizers and isinstance(optimizers[0], projunn.ProjUNN) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed fit drops the records it is about to make again (as ``ResumeLog`` does for
        metrics.csv); a fit that starts over drops them all."""
        if trainer.is_global_zero and self.path.is_file():
            cut_torn_tail(self.path)  # a record torn by a kill
            kept = [record for record in read_jsonl(self.path) if record["step"] < trainer.global_step]
            write_text_atomic(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._due = (
            bool(self.every_n_steps) and trainer.global_step % self.every_n_steps == 0 and trainer.is_global_zero
        )
        optimizer = self._optimizer(trainer)
        if optimizer is not None:
            optimizer.track_captured = self._due

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._due:
            return
        self._due = False
        start = time.perf_counter()
        record: dict[str, Any] = {"step": logged_step(trainer)}  # as in metrics.csv
        metrics: dict[str, float] = {}
        x, targets = batch
        model = pl_module.model
        profile = gradient_profile(model, x, targets, pl_module.objective)
        if profile is not None:
            kind = f"grad_{model.probe_axis}"
            curve = profile.cpu()
            record[kind] = curve.tolist()
            metrics[f"{kind}/first"], metrics[f"{kind}/last"] = curve[0].item(), curve[-1].item()
            metrics[f"{kind}/ratio_first_last"] = (curve[0] / curve[-1]).item() if curve[-1] > 0 else math.inf
        eig_dev, sv_dev = [], []
        for name, W in recurrent_matrices(model).items():
            eigenvalues, singular = spectrum(W)
            sv_dev.append((singular - 1).abs().max().item())
            if singular.ndim == 1:
                record.setdefault("singular_values", {})[name] = singular.cpu().tolist()
            if eigenvalues is not None:
                eig_dev.append((eigenvalues.abs() - 1).abs().max().item())
                record.setdefault("eigenvalues", {})[name] = torch.view_as_real(eigenvalues).cpu().tolist()
        if eig_dev:
            metrics["spectrum/max_abs_eig_dev"] = max(eig_dev)
        if sv_dev:
            metrics["spectrum/max_sv_dev"] = max(sv_dev)
        optimizer = self._optimizer(trainer)
        if optimizer is not None:
            names = {id(p): n for n, p in model.named_parameters()}
            for p, fraction in optimizer.captured.items():
                metrics[f"captured/{names.get(id(p), 'matrix')}"] = fraction.double().mean().item()
            optimizer.captured.clear()
            optimizer.track_captured = False
        record.update(metrics)
        metrics["time/diagnostics_s"] = time.perf_counter() - start
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log_step(trainer, metrics)
        self._to_wandb(trainer, record)

    @staticmethod
    def _to_wandb(trainer: L.Trainer, record: dict[str, Any]) -> None:
        from pytorch_lightning.loggers import WandbLogger

        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        import wandb

        media: dict[str, Any] = {}
        for kind, label in (("grad_time", "time step t"), ("grad_depth", "layer l")):
            if kind in record:
                table = wandb.Table(data=[[i + 1, v] for i, v in enumerate(record[kind])], columns=[label, "norm"])
                media[f"{kind}/profile"] = wandb.plot.line(table, label, "norm", title=f"‖∂L/∂h‖ against {label}")
        for name, eigenvalues in record.get("eigenvalues", {}).items():
            media[f"spectrum/phases/{name}"] = wandb.Histogram([math.atan2(im, re) for re, im in eigenvalues])
        for name, singular in record.get("singular_values", {}).items():
            media[f"spectrum/singular_values/{name}"] = wandb.Histogram(singular)
        for logger in loggers:
            logger.experiment.log({**media, "trainer/global_step": record["step"]})


SECOND_MOMENTS = ("square_avg", "exp_avg_sq")  # RMSprop's (and its variants'), Adam's


def update_norms(optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> dict[Tensor, dict[str, float]]:
    """What the last ``optimizer.step()`` did to each of ``params``: for a matrix that ``ProjUNN.track_steps``
    followed, the norms of its base optimizer's proposal, of the part kept and of the step taken
    (``proposal``, ``kept``, ``step``; they are taken, so that a step is read once); for any parameter
    with an RMSprop or Adam second moment, the smallest ``sqrt(v)`` (``min_sqrt_v``), the denominator
    that can blow a small gradient up. Keyed by parameter, in the order of ``params``."""
    tracked = getattr(optimizer, "step_norms", {})
    out: dict[Tensor, dict[str, float]] = {}
    for p in params:
        entry: dict[str, float] = {}
        if p in tracked:
            entry.update(zip(("proposal", "kept", "step"), tracked.pop(p).tolist()))
        state = optimizer.state.get(p, {})
        moment = next((state[key] for key in SECOND_MOMENTS if key in state), None)
        if moment is not None:
            entry["min_sqrt_v"] = moment.real.amin().clamp_min(0).sqrt().item()  # (no image-sized sqrt each step)
        if entry:
            out[p] = entry
    return out


class LossSpikes(L.Callback):
    """A training loss that jumps leaves in the record what the updates before it looked like.

    At every step (cheap: a few norms per unitary matrix, ``ProjUNN.track_steps``) the last ``keep``
    updates are held: per unitary matrix the base optimizer's proposal ``‖ΔW‖_F``, the part the
    rank-k step kept ``‖a bᴴ‖_F``, the step taken ``‖W⁺ − W‖_F``, and, for a base with a running
    second moment ``v`` (RMSprop, Adam), the smallest ``sqrt(v)`` (the most amplified entry). When a
    step's loss exceeds ``factor`` times the median of the last ``window`` losses, one record
    ``{"step", "kind": "spike", "loss", "median", "updates": [...]}`` goes to ``diagnostics.jsonl``
    (the updates before the step: the loss of step s is that of the weights after update s − 1),
    and ``spike/loss_over_median`` to metrics.csv (kept by the thinning); the steps after it that
    stay above the line are the same spike, not recorded again. ``factor`` 0: off."""

    def __init__(self, factor: float = 10.0, window: int = 100, keep: int = 3, run_dir: Path | None = None) -> None:
        if factor < 0 or window < 2 or keep < 1:
            raise ValueError(f"LossSpikes: factor ≥ 0, window ≥ 2, keep ≥ 1, got {factor}, {window}, {keep}")
        self.factor, self.window, self.keep = factor, window, keep
        self.path = None if run_dir is None else Path(run_dir) / FILE
        self._losses: deque[float] = deque(maxlen=window)
        self._updates: deque[dict[str, Any]] = deque(maxlen=keep)
        self._in_spike = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        optimizer = Diagnostics._optimizer(trainer)
        if optimizer is not None and self.factor:
            optimizer.track_steps = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.factor or not trainer.is_global_zero:
            return
        step = logged_step(trainer)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        loss = float(loss)
        if len(self._losses) >= self.window // 2 and math.isfinite(loss):
            median = sorted(self._losses)[len(self._losses) // 2]
            spiking = median > 0 and loss > self.factor * median
            if spiking and not self._in_spike:
                self._record(trainer, step, loss, median)
            self._in_spike = spiking
        self._losses.append(loss)
        self._updates.append(self._this_update(trainer, pl_module, step))

    def _this_update(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> dict[str, Any]:
        optimizer = Diagnostics._optimizer(trainer)
        update: dict[str, Any] = {"step": step, "lr": [group["lr"] for group in trainer.optimizers[0].param_groups]}
        if optimizer is None:
            return update
        names = {id(p): n for n, p in pl_module.model.named_parameters()}
        for p, entry in update_norms(optimizer, list(optimizer.step_norms)).items():
            update[names.get(id(p), "matrix")] = entry
        optimizer.step_norms.clear()
        return update

    def _record(self, trainer: L.Trainer, step: int, loss: float, median: float) -> None:
        record = {"step": step, "kind": "spike", "loss": loss, "median": median, "updates": list(self._updates)}
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        log_step(trainer, {"spike/loss_over_median": loss / median})

"""Build the optimizer a config asks for (``conf/optim``), as a ``_partial_`` called with the model.

* projUNN (``projector: T`` or ``D``): ``projunn.ProjUNN`` over any base optimizer; the unitary
  matrices form their own group with learning rate ``unitary_lr`` (or ``lr · unitary_lr_scale``;
  the paper uses ``lr/32`` on copy and adding).
* expRNN / scoRNN / Cayley convolutions (``parametrization: matrix_exp`` or ``cayley``, with
  scoRNN's ``negative_ones``): ``train.py`` re-expresses the model's unitary matrices through
  ``projunn.parametrize``; the base optimizer trains the skew-Hermitian parameter at the unitary
  learning rate.
* unconstrained (neither): the base optimizer alone; declared unitary matrices still get the
  unitary learning rate, but nothing keeps them unitary.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, StepLR

import projunn
from projunn.optim import resolve_optimizer

from .data import positive_int


def _parametrized_originals(model: nn.Module) -> list[nn.Parameter]:
    return [
        module.parametrizations[name].original
        for module in model.modules()
        for name in getattr(module, "unitary_parameter_names", ())
        if hasattr(module, "parametrizations") and name in module.parametrizations
    ]


def build_optimizer(
    model: nn.Module,
    *,
    base: str = "RMSprop",
    lr: float,
    unitary_lr: float | None = None,
    unitary_lr_scale: float = 1.0,
    projector: str | None = None,
    rank: int = 1,
    sampler: str = "lsi",
    parametrization: str | None = None,
    negative_ones: int = 0,
    **base_kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer for ``model`` (see the module docstring); ``base_kwargs`` go to the base optimizer.
    (``negative_ones`` belongs to the parametrization, which ``train.py`` applies to the model.)"""
    if not lr >= 0:
        raise ValueError(f"Invalid learning rate: {lr}")
    unitary_lr = lr * unitary_lr_scale if unitary_lr is None else unitary_lr
    if not unitary_lr >= 0:
        raise ValueError(f"Invalid unitary learning rate: {unitary_lr}")
    if projector is not None:
        if parametrization is not None:
            raise ValueError(f"projector {projector!r} and parametrization {parametrization!r} exclude each other")
        if not projunn.unitary_parameters(model):
            raise ValueError(
                f"projUNN-{projector} needs a model with unitary matrices (e.g. model=urnn); "
                f"this {type(model).__name__} has none"
            )
        groups = projunn.param_groups(model, unitary_lr=unitary_lr)
        return projunn.ProjUNN(groups, base, projector=projector, rank=rank, sampler=sampler, lr=lr, **base_kwargs)
    cls = resolve_optimizer(base)
    unitary = _parametrized_originals(model) if parametrization is not None else None
    return cls(projunn.param_groups(model, unitary_lr=unitary_lr, unitary=unitary), lr=lr, **base_kwargs)


def step_lr(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_steps: int, epochs: int = 1, gamma: float) -> StepLR:
    """Every learning rate (unitary ones included) × ``gamma`` every ``epochs`` epochs, counted in
    optimizer steps: the authors' copy and adding scripts (× 0.9 / 0.94 per epoch, ``MultiplicativeLR``
    stepped per epoch) and their pMNIST script (``StepLR(60 · len(train_loader), 0.2)`` stepped per batch)."""
    return StepLR(optimizer, step_size=positive_int("scheduler epochs", epochs) * steps_per_epoch, gamma=gamma)


def cosine_lr(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_steps: int) -> CosineAnnealingLR:
    """Cosine decay of every learning rate to 0 over the run's ``total_steps`` optimizer steps."""
    return CosineAnnealingLR(optimizer, T_max=total_steps)

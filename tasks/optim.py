"""Build the optimizer a config asks for (``conf/optim``), as a ``_partial_`` called with the model.

* projUNN (``projector: T`` or ``D``): ``projunn.ProjUNN`` over any base optimizer; the unitary
  matrices form their own group with learning rate ``unitary_lr`` (or ``lr · unitary_lr_scale``;
  the paper uses ``lr/32`` on copy and adding).
* expRNN / Cayley (``parametrization: matrix_exp`` or ``cayley``): the model re-expresses its
  unitary matrices through ``torch.nn.utils.parametrizations.orthogonal``; the base optimizer
  trains the parametrization's unconstrained parameter at the unitary learning rate.
* unconstrained (neither): the base optimizer alone; declared unitary matrices still get the
  unitary learning rate, but nothing keeps them unitary.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

import projunn
from projunn.optim import resolve_optimizer


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
    **base_kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer for ``model`` (see the module docstring); ``base_kwargs`` go to the base optimizer."""
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

"""Build the optimizer a config asks for (``conf/optim``), as a ``_partial_`` called with the model.

* projUNN (``projector: T`` or ``D``): ``projunn.ProjUNN`` over any base optimizer; the unitary
  matrices form their own group with learning rate ``unitary_lr`` (or ``lr · unitary_lr_scale``;
  the paper uses ``lr/32`` on copy and adding).
* expRNN / scoRNN / Cayley convolutions / torch's orthogonal parametrization (``parametrization:
  matrix_exp``, ``cayley``, with scoRNN's ``negative_ones``, or ``torch``; rectangular matrices go
  through ``torch.nn.utils.parametrizations.orthogonal``): ``train.py`` re-expresses the model's
  unitary matrices through ``projunn.parametrize``; the base optimizer trains the parameter behind
  each at the unitary learning rate.
* unconstrained (neither): the base optimizer alone; declared unitary matrices still get the
  unitary learning rate, but nothing keeps them unitary.

``base`` is a ``torch.optim`` name, ``AuthorsRMSprop`` (the RMSprop of the projUNN authors' code,
for an exact replication of their CIFAR10 runs) or ``TensorFlowRMSprop`` (scoRNN's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, StepLR

import projunn
from projunn.checks import positive_int
from projunn.optim import resolve_optimizer


def _parametrized_originals(model: nn.Module) -> list[nn.Parameter]:
    """The trained ``original`` behind each unitary matrix that ``projunn.parametrize`` re-expressed."""
    originals = []
    for name, matrix in projunn.named_unitary_parameters(model):
        if not isinstance(matrix, nn.Parameter):  # computed from its original
            owner, _, attr = name.rpartition(".")
            originals.append(model.get_submodule(owner).parametrizations[attr].original)
    return originals


class _RMSpropVariant(torch.optim.Optimizer):
    """``v ← α v + (1 − α) g·g`` (``v`` starting at ``start``), ``θ ← θ − lr · g / denominator(v)``,
    momentum 0, not centred: the RMSprop variants of the baselines' own code, for exact replication."""

    start = 0.0

    def __init__(self, params: Any, lr: float, alpha: float, eps: float) -> None:
        if not lr >= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0 <= alpha < 1:
            raise ValueError(f"Invalid alpha value: {alpha}")
        if not eps >= 0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    @staticmethod
    def denominator(square_avg: torch.Tensor, eps: float) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.full_like(p, self.start)
                square_avg = state["square_avg"]
                square_avg.mul_(group["alpha"]).addcmul_(p.grad, p.grad, value=1 - group["alpha"])
                p.addcdiv_(p.grad, self.denominator(square_avg, group["eps"]), value=-group["lr"])
        return loss


class AuthorsRMSprop(_RMSpropVariant):
    """The RMSprop of the projUNN authors' code (``projunn/optimizers.py`` of facebookresearch/projUNN,
    commit 3213f2e, lines 139-169), which made the paper's CIFAR10 numbers.

    ``v ← α v + (1 − α) g·g``, ``θ ← θ − lr · g / (sqrt(v) + eps)``. On a real parameter this is
    ``torch.optim.RMSprop`` (momentum 0, not centred). On a complex one (the orthogonal
    convolutions' frequency matrices) ``g·g`` is the complex square, not ``|g|²``: ``v`` and its
    principal square root are complex, and the step ``g / sqrt(v)`` is turned by their phase (for a
    gradient of constant phase it is real, whatever that phase). ``torch.optim.RMSprop`` instead
    treats a complex entry as two real ones (``view_as_real``). Their code also updates only its
    last parameter group (every script of theirs passes one); this class updates every group.
    """

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__(params, lr, alpha, eps)

    @staticmethod
    def denominator(square_avg: torch.Tensor, eps: float) -> torch.Tensor:
        return square_avg.sqrt().add_(eps)


class TensorFlowRMSprop(_RMSpropVariant):
    """TensorFlow 1's ``RMSPropOptimizer`` (momentum 0, not centred), which scoRNN trains with:
    ``v ← α v + (1 − α) g²`` with ``v`` starting at 1 (``tensorflow/python/training/rmsprop.py``,
    ``_create_slots``: ``ones_initializer``), ``θ ← θ − lr · g / sqrt(v + eps)``; TensorFlow's
    defaults ``decay = α = 0.9``, ``eps = 1e-10``. Starting from 1 instead of 0 makes the first
    steps small (``lr · g``) where ``torch.optim.RMSprop``'s are ``~lr · sqrt(10)`` per entry.
    Real parameters only."""

    start = 1.0

    def __init__(self, params: Any, lr: float = 1e-3, alpha: float = 0.9, eps: float = 1e-10) -> None:
        super().__init__(params, lr, alpha, eps)
        if any(p.is_complex() for group in self.param_groups for p in group["params"]):
            raise ValueError("TensorFlowRMSprop takes real parameters only (scoRNN's are real)")

    @staticmethod
    def denominator(square_avg: torch.Tensor, eps: float) -> torch.Tensor:
        return square_avg.add(eps).sqrt_()


BASE_OPTIMIZERS = {"AuthorsRMSprop": AuthorsRMSprop, "TensorFlowRMSprop": TensorFlowRMSprop}


def build_optimizer(
    model: nn.Module,
    *,
    base: str = "RMSprop",
    lr: float,
    unitary_lr: float | None = None,
    unitary_lr_scale: float = 1.0,
    projector: str | None = None,
    rank: int = 1,
    sampler: str | Callable = "lsi",
    parametrization: str | None = None,
    negative_ones: int = 0,
    reproject_every: int | None = 100,
    reproject_tol: float | None = None,
    **base_kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer for ``model`` (see the module docstring); ``base_kwargs`` go to the base optimizer.
    (``negative_ones`` belongs to the parametrization, which ``train.py`` applies to the model;
    ``reproject_every`` and ``reproject_tol`` are projUNN's drift control, ``projunn.ProjUNN``'s
    arguments, and do nothing for the other methods, so that a preset can set them and still be run
    with ``optim=torch_orthogonal``.)"""
    base = BASE_OPTIMIZERS.get(base, base)
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
        drift = {"reproject_every": reproject_every, "reproject_tol": reproject_tol}
        return projunn.ProjUNN(
            groups, base, projector=projector, rank=rank, sampler=sampler, lr=lr, **drift, **base_kwargs
        )
    cls = resolve_optimizer(base)
    unitary = _parametrized_originals(model) if parametrization is not None else None
    return cls(projunn.param_groups(model, unitary_lr=unitary_lr, unitary=unitary), lr=lr, **base_kwargs)


def step_lr(
    optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_steps: int, epochs: int = 1, gamma: float
) -> StepLR:
    """Every learning rate (unitary ones included) × ``gamma`` every ``epochs`` epochs, counted in
    optimizer steps: the authors' copy and adding scripts (× 0.9 / 0.94 per epoch, ``MultiplicativeLR``
    stepped per epoch) and their pMNIST script (``StepLR(60 · len(train_loader), 0.2)`` stepped per batch)."""
    return StepLR(optimizer, step_size=positive_int("scheduler epochs", epochs) * steps_per_epoch, gamma=gamma)


def cosine_lr(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_steps: int) -> CosineAnnealingLR:
    """Cosine decay of every learning rate to 0 over the run's ``total_steps`` optimizer steps."""
    return CosineAnnealingLR(optimizer, T_max=total_steps)

"""Walk a model for the matrices its modules declare unitary: ``named_unitary_parameters``,
``unitary_parameters``, and ``param_groups``, which splits a model's parameters into the ordinary
group and the unitary groups that ``projunn.ProjUNN`` keeps on the manifold (the same split serves
any ``torch.optim`` optimizer: a unitary learning rate of its own, as nanoGPT builds its decay
groups). How a module declares a matrix: ``projunn.declare``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch import Tensor, nn

from .declare import as_matrix
from .linalg import unitarity_error

__all__ = ["named_unitary_parameters", "unitary_parameters", "unitarity_errors", "param_groups"]


def named_unitary_parameters(module: nn.Module, remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
    """``(name, matrix)`` for every matrix that ``module`` or one of its submodules declares unitary,
    ``name`` qualified as in ``module.named_parameters()`` (``"rnn.weight_hh"``).

    A module declares them by a class attribute ``unitary_parameter_names`` (a tuple of its own
    parameter names), as ``projunn.UnitaryRNN`` and ``projunn.OrthogonalConv2d`` do, or
    ``projunn.orthogonal_`` declares one of an instance. ``matrix`` is what the module computes
    with, as a batch of matrices ``(..., n, p)`` (Note [the matrix of a parameter] in
    ``projunn.declare``): the ``nn.Parameter`` itself, or a view of it (a convolution kernel
    declared by ``orthogonal_``, ``(C_out, C_in·kh·kw)``), or, for a matrix that
    ``projunn.parametrize`` re-expressed as ``φ(A)``, the unitary matrix computed from its trained
    ``original`` (a tensor, not a parameter). A declared name whose parameter is ``None`` is
    skipped, and a parameter that several modules share is yielded once, unless
    ``remove_duplicate=False`` (as in ``nn.Module.named_parameters``).
    """
    for name, tensor, batch_dims in _declared(module, remove_duplicate):
        yield name, as_matrix(tensor, batch_dims)


def unitarity_errors(module: nn.Module) -> dict[str, Tensor]:
    """``{name: error}`` for every matrix ``module`` declares unitary (``named_unitary_parameters``):
    ``unitarity_error`` of the matrix as declared, the worst of a batch (``OrthogonalConv2d``'s
    frequencies), a float64 scalar tensor (no host read: ``float()`` it to print). On a declared
    tensor, ``unitarity_error(module.weight)`` reads the last two dimensions as the matrices instead
    (a convolution kernel's ``kh × kw`` blocks; its docstring).
    """
    return {name: unitarity_error(W).max() for name, W in named_unitary_parameters(module)}


def _declared(module: nn.Module, remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor, int | None]]:
    """``(name, tensor, batch_dims)`` of every declared matrix: the tensor as its module holds it
    and how it is read as matrices (``None``: batched in its last two dimensions)."""
    seen: set[int] = set()
    for prefix, owner in module.named_modules(remove_duplicate=remove_duplicate):
        batch_dims = getattr(owner, "unitary_batch_dims", {})
        for name in getattr(owner, "unitary_parameter_names", ()):
            tensor = getattr(owner, name)
            if tensor is None or (remove_duplicate and id(tensor) in seen):
                continue
            if isinstance(tensor, nn.Parameter):  # (a computed matrix is new at every access)
                seen.add(id(tensor))
            yield (f"{prefix}.{name}" if prefix else name), tensor, batch_dims.get(name)


def unitary_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that ``model``'s submodules declare unitary (``named_unitary_parameters``),
    those re-expressed by ``projunn.parametrize`` left out: what ``ProjUNN`` keeps unitary."""
    return [p for _, p, _ in _declared(model) if isinstance(p, nn.Parameter)]


def param_groups(
    model: nn.Module,
    *,
    unitary_lr: float | None = None,
    unitary: Iterable[Tensor] | None = None,
    **unitary_options: Any,
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into an ordinary group and a unitary group.

    Args:
        model: the model.
        unitary_lr: learning rate of the unitary group (default: the optimizer's ``lr``).
        unitary: the unitary parameters (default: ``unitary_parameters(model)``).
        **unitary_options: per-group ``projector``, ``rank`` or ``sampler`` for the unitary group.

    Returns groups for ``ProjUNN`` (empty groups are left out). Parameters that are read as
    matrices other than in their last two dimensions (a convolution kernel declared by
    ``projunn.orthogonal_``) get a unitary group of their own, which says how in ``batch_dims``
    (Note [the matrix of a parameter] in ``projunn.declare``).
    """
    chosen = list(unitary_parameters(model) if unitary is None else unitary)
    ids = {id(p) for p in chosen}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    declared = {id(p): batch_dims for _, p, batch_dims in _declared(model)}
    by_view: dict[int | None, list[Tensor]] = {}
    for p in chosen:
        batch_dims = declared.get(id(p))
        by_view.setdefault(None if batch_dims == p.ndim - 2 else batch_dims, []).append(p)
    groups: list[dict[str, Any]] = []
    if rest:
        groups.append({"params": rest})
    for batch_dims in sorted(by_view, key=lambda d: -1 if d is None else d):
        group = {"params": by_view[batch_dims], "unitary": True, **unitary_options}
        if batch_dims is not None:
            group["batch_dims"] = batch_dims
        if unitary_lr is not None:
            group["lr"] = unitary_lr
        groups.append(group)
    return groups

"""Declare a parameter of any module orthogonal (unitary, for a complex one): ``orthogonal_``.

A module declares its unitary matrices by naming them in ``unitary_parameter_names`` (a tuple of
its own parameter names): ``projunn.UnitaryRNN`` and ``projunn.OrthogonalConv2d`` do it in their
class. ``orthogonal_(module, name)`` does it for one instance of any module (an ``nn.Linear``, an
``nn.Embedding``, an ``nn.Conv2d``, ...), after its construction::

    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            projunn.orthogonal_(layer)

and ``projunn.param_groups(model)`` then puts those weights in the unitary group that
``projunn.ProjUNN`` keeps on the manifold.

Note [the matrix of a parameter]
--------------------------------
A declared parameter of shape ``(*B, n, c_1, ..., c_q)``, with ``len(B) = batch_dims``, is read as
the batch ``B`` of ``n × p`` matrices, ``p = c_1 ⋯ c_q``: its first ``batch_dims`` dimensions index
matrices, the next one is the rows, the others flattened are the columns (``as_matrix``, a view
sharing the parameter's storage). ``orthogonal_`` takes ``batch_dims = 0`` by default, so a
convolution kernel ``(C_out, C_in, kh, kw)`` is the ``C_out × (C_in·kh·kw)`` matrix of the
convolution's im2col product, an ``nn.Linear`` weight ``(out, in)`` is itself. A class's
``unitary_parameter_names`` declare batches of matrices in the last two dimensions
(``batch_dims = ndim − 2``), as ``OrthogonalConv2d``'s ``(frequencies, C, C)`` weight.

An ``n × p`` matrix is unitary when its columns (``n ≥ p``) or rows (``n < p``) are orthonormal
(Note [rectangular unitarity] in ``projunn.linalg``): a tall weight of an ``nn.Linear`` is then
an isometry ``‖W x‖ = ‖x‖``, a wide one a co-isometry (``W W^H = I``).

The declaration is kept on the module, in the instance attributes ``unitary_parameter_names``
(the class's names, then the declared ones) and ``unitary_batch_dims`` (``{name: batch_dims}``):
nothing is attached to the tensor, and ``state_dict()`` is unchanged (the parameter keeps its name
and shape). Like the model's code, the declaration is not saved with a checkpoint: a model rebuilt
to load one declares its weights again (any ``init``; ``load_state_dict`` then sets the values).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as torch_parametrize

from . import init as initialisers
from .checks import floating, one_of, positive_int
from .linalg import _short_side, polar, unitarity_error

__all__ = ["orthogonal_", "as_matrix", "INITS"]

INITS = ("haar", "identity", "polar", "keep")
"""``orthogonal_``'s ``init``: a Haar-random or identity start, the polar factor of the current
value (the closest unitary matrix), or the current value, checked."""


def as_matrix(tensor: Tensor, batch_dims: int | None = None) -> Tensor:
    """``tensor`` read as a batch of matrices ``(*B, n, p)`` (Note [the matrix of a parameter]).

    ``batch_dims=None`` (or ``tensor.ndim − 2``) returns ``tensor`` itself; otherwise a view
    (a copy only when the strides forbid a view, e.g. a ``channels_last`` kernel).
    """
    if tensor.ndim < 2:
        raise ValueError(f"Expected a tensor of at least 2 dimensions for a matrix, got shape {tuple(tensor.shape)}")
    if batch_dims is None or batch_dims == tensor.ndim - 2:
        return tensor
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or not 0 <= batch_dims <= tensor.ndim - 2:
        raise ValueError(
            f"batch_dims must be an integer in 0..{tensor.ndim - 2} for a tensor of shape {tuple(tensor.shape)}, "
            f"got {batch_dims!r}"
        )
    shape = tensor.shape[: batch_dims + 1] + (math.prod(tensor.shape[batch_dims + 1 :]),)
    return tensor.reshape(shape)


def unitary_tolerance(W: Tensor) -> float:
    """How far from unitary a matrix may start, ``10·min(n, p)·eps``: PyTorch's tolerance for a
    computed matrix, generous enough for any initialiser's rounding and far below the error of a
    matrix that is not unitary."""
    return 10 * min(W.shape[-2:]) * torch.finfo(W.dtype).eps


def orthogonal_(
    module: nn.Module,
    name: str = "weight",
    *,
    init: str = "haar",
    batch_dims: int = 0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Declare ``module.<name>`` orthogonal (unitary if complex) and put it on the manifold; returns ``module``.

    Args:
        module: any module; ``module.<name>`` must be an ``nn.Parameter`` (floating point or
            complex) of at least 2 dimensions, not already re-expressed by a parametrization.
        name: the parameter's name in ``module`` (``"weight"``).
        init: ``"haar"`` (a Haar-random matrix with orthonormal columns or rows), ``"identity"``
            (the identity's first columns or rows), ``"polar"`` (the current value's polar factor,
            the closest unitary matrix: keeps what an earlier initialisation chose) or ``"keep"``
            (the current value, which must be unitary to ``10·min(n, p)·eps``, else ``ValueError``).
        batch_dims: how many leading dimensions index a batch of matrices; the next is the rows, the
            others flattened the columns (Note [the matrix of a parameter]): ``0`` makes a
            ``Conv2d`` kernel ``(C_out, C_in, kh, kw)`` the matrix ``(C_out, C_in·kh·kw)``.
        generator: the random generator of ``init="haar"``.

    Afterwards ``named_unitary_parameters(model)`` yields the matrix (``as_matrix``, a view of the
    parameter), ``param_groups(model)`` puts the parameter in a unitary group and ``ProjUNN``
    keeps it unitary, updating it through that view; for an ``n × p`` matrix a rank ``k`` must be
    in ``1..min(n, p)``. Declaring a parameter again replaces its declaration.

    Example::

        layer = projunn.orthogonal_(nn.Linear(784, 256, bias=False))  # 256 orthonormal rows
        opt = projunn.ProjUNN(projunn.param_groups(layer), lr=1e-3, rank=4)
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"Expected an nn.Module, got {type(module).__name__}")
    if torch_parametrize.is_parametrized(module, name):
        raise ValueError(
            f"{type(module).__name__}.{name} is re-expressed by a parametrization; declare the parameter "
            "orthogonal before parametrizing it (projunn.parametrize does so for declared matrices)"
        )
    if name in getattr(type(module), "unitary_parameter_names", ()):
        raise ValueError(
            f"{type(module).__name__}.{name} is declared unitary by its class already (as matrices in its last "
            "two dimensions, with the class's own initialisation); orthogonal_ is for parameters it does not declare"
        )
    weight = getattr(module, name, None)
    if not isinstance(weight, nn.Parameter):
        raise ValueError(f"Expected {type(module).__name__}.{name} to be an nn.Parameter, got {type(weight).__name__}")
    if weight.ndim < 2:
        raise ValueError(
            f"Expected a parameter of at least 2 dimensions for an orthogonal matrix, "
            f"got {type(module).__name__}.{name} of shape {tuple(weight.shape)}"
        )
    floating(weight, "parameter")
    one_of("init", init, INITS)
    positive_int("batch_dims", batch_dims, 0, weight.ndim - 2, expected=f"an integer in 0..{weight.ndim - 2}")
    matrix = as_matrix(weight, batch_dims)
    with torch.no_grad():
        if init == "keep":
            error = unitarity_error(matrix).max().item() if matrix.numel() else 0.0
            if not error <= unitary_tolerance(matrix):
                gram = "W^H W" if _short_side(matrix) is matrix else "W W^H"
                raise ValueError(
                    f"{type(module).__name__}.{name} (matrix of shape {tuple(matrix.shape)}) is not orthogonal: "
                    f"‖{gram} − I‖_F = {error:.3g}; use init='polar' to project it or init='haar'"
                )
        else:
            value = matrix.detach().clone()
            if init == "polar":
                value = polar(value)
            elif init == "haar":
                initialisers.haar_(value, generator)
            else:
                initialisers.identity_(value)
            weight.copy_(value.reshape(weight.shape))
    names = tuple(getattr(module, "unitary_parameter_names", ()))
    module.unitary_parameter_names = names if name in names else names + (name,)
    module.unitary_batch_dims = {**getattr(module, "unitary_batch_dims", {}), name: batch_dims}
    return module

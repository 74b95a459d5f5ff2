"""The argument checks that the library's functions, layers and optimizer share, each with the one
error message they all give: integers in a range (sizes, ranks, step counts, dimensions), tensors
that must be (batches of) matrices, and names that must be one of a set of variants."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

__all__ = ["positive_int", "matrix", "floating", "one_of"]


def positive_int(
    name: str, value: object, low: int = 1, high: int | None = None, *, expected: str | None = None
) -> int:
    """``value``, checked to be an ``int`` (a ``bool`` is not one) in ``low..high`` (``low >= 0``;
    ``high=None``: no upper bound).

    Otherwise ``ValueError("<name> must be <expected>, got <value!r>")``. ``expected`` says the
    range in the caller's words (``"an integer in 1..n=64"``); by default ``"a positive integer"``
    (``low = 1``), ``"an integer >= <low>"``, or ``"an integer in <low>..<high>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        if expected is None:
            if high is not None:
                expected = f"an integer in {low}..{high}"
            else:
                expected = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def matrix(value: Tensor, what: str = "a matrix", *, square: bool = False) -> Tensor:
    """``value``, checked to be a batch of matrices ``(..., n, p)`` (``square``: ``(..., n, n)``).

    Otherwise ``ValueError("Expected <what> of shape (..., n, p), got shape <shape>")``, e.g.
    ``"Expected a square weight of shape (..., n, n), got shape (3, 4)"``.
    """
    if value.ndim < 2 or (square and value.shape[-1] != value.shape[-2]):
        raise ValueError(
            f"Expected {what} of shape {'(..., n, n)' if square else '(..., n, p)'}, got shape {tuple(value.shape)}"
        )
    return value


def floating(value: Tensor, what: str = "weight") -> Tensor:
    """``value``, checked to be of a floating point or complex dtype (a unitary matrix is one).

    Otherwise ``ValueError("Expected a floating point or complex <what>, got dtype <dtype>")``.
    """
    if not (value.is_floating_point() or value.is_complex()):
        raise ValueError(f"Expected a floating point or complex {what}, got dtype {value.dtype}")
    return value


def one_of(name: str, value: object, options: Iterable[object]) -> object:
    """``value``, checked to be one of ``options`` (the variants a function takes by name, e.g. the
    projectors ``"T"`` and ``"D"``).

    Otherwise ``ValueError("Unknown <name> <value!r>; expected one of <options, repr'd>")``, e.g.
    ``"Unknown projector 'X'; expected one of 'T', 'D'"``.
    """
    options = tuple(options)
    if isinstance(value, bool) or value not in options:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(map(repr, options))}")
    return value

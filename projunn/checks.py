"""The check of integer arguments (sizes, ranks, step counts, dimensions), with the error message every layer,
optimizer and task of this project gives for them."""

from __future__ import annotations

__all__ = ["positive_int"]


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

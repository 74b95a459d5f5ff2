"""Rank-k approximations ``G ≈ a b^H`` of a Euclidean step, for the projUNN updates.

Both samplers take ``G`` of shape ``(..., n, n)`` or rectangular ``(..., rows, cols)``
and return ``a`` of shape ``(..., rows, k)`` and ``b`` of shape ``(..., cols, k)`` in
``G``'s dtype and device. Random draws come from ``generator`` (on its own device,
then moved to ``G``'s), so a given generator state gives the same ``(a, b)`` on any
device. Both are exact when ``rank(G) <= k`` (column sampling: when the sampled
columns span G's range, which holds almost surely for generic G). Work: two passes
over ``G`` plus O(n k²). A ``G`` holding NaN or Inf gives a non-finite ``a`` for that
matrix (never an exception), so callers can test ``a`` and ``b`` instead of ``G``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import matrix, positive_int
from .linalg import _double_dtype, _generator_device, _randn, adjoint_times, times

__all__ = ["lsi", "column_sampling", "SAMPLERS"]


def _check(G: Tensor, k: int, name: str = "G") -> None:
    matrix(G, name)
    rows, cols = G.shape[-2:]
    limit = min(rows, cols)
    where = f"n={limit}" if rows == cols else f"min(n, p)={limit} for a {rows} × {cols} matrix"
    positive_int("rank k", k, 1, limit, expected=f"an integer in 1..{where}")


def _orthonormal_basis(x: Tensor) -> Tensor:
    """Orthonormal columns spanning those of ``x`` (``(..., n, k)``): a Householder QR's ``Q``,
    or for ``k = 1`` the normalised column (zero stays zero, which gives a zero step)."""
    if x.shape[-1] == 1:  # (F.normalize, without its Python overhead: this runs every step)
        return x / torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min_(1e-12)
    return torch.linalg.qr(x)[0]


def lsi(G: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Randomised (LSI) rank-k approximation: ``a b^H = G v v^H``.

    Draws a Gaussian sketch ``R`` of shape ``(..., rows, k)`` and takes ``v`` (``cols × k``,
    orthonormal columns) spanning the row space of ``R^H G``: the span of its top-k right
    singular vectors (a QR gives that span; ``G v v^H`` depends on nothing else).
    Returns ``a = G v`` and ``b = v``. Exact when ``rank(G) <= k``.
    """
    _check(G, k)
    R = _randn(G.shape[:-2] + (G.shape[-2], k), G, generator)
    v = _orthonormal_basis(adjoint_times(G, R))
    return times(G, v), v


def column_sampling(
    G: Tensor, k: int, c: int | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Column-sampling rank-k approximation: ``a b^H = h h^H G``.

    Samples ``c`` distinct columns of ``G`` (default ``min(cols, 4k)``) with probability
    proportional to their norms, rescales each by ``1/sqrt(c p_j)``, and takes ``h``, the
    top-k left singular vectors of the sampled ``rows × c`` matrix. Returns ``a = h`` and
    ``b = G^H h``. Exact when ``rank(G) <= k`` and the samples span ``G``'s range.
    """
    _check(G, k)
    rows, cols = G.shape[-2:]
    c = min(cols, 4 * k) if c is None else c
    positive_int("number of sampled columns c", c, k, cols, expected=f"an integer in k={k}..n={cols}")
    batch = G.shape[:-2]
    norms = torch.linalg.vector_norm(G, dim=-2)
    if not torch.isfinite(norms).all():  # NaN/Inf in G, or squares of a huge finite G overflowing
        norms = torch.linalg.vector_norm(G, dim=-2, dtype=_double_dtype(G))
    norms = norms.reshape(-1, cols)
    device = _generator_device(generator, G)
    probs = norms.to(device=device, dtype=torch.float64)
    # A non-finite G is sampled uniformly: its NaN/Inf then reach b = G^H h, where the
    # caller can see them, instead of stopping torch.multinomial.
    probs = torch.where(torch.isfinite(probs).all(dim=-1, keepdim=True), probs, 1.0)
    # A floor on every weight lets a matrix with fewer than c nonzero columns (or none)
    # still give c distinct draws; such extra columns are zero and add nothing to h.
    top = probs.amax(dim=-1, keepdim=True)
    probs = probs + torch.where(top > 0, top, 1.0) * 1e-30
    probs = probs / probs.sum(dim=-1, keepdim=True)
    idx = torch.multinomial(probs, c, replacement=False, generator=generator)
    scale = (c * probs.gather(-1, idx)).rsqrt().to(device=G.device, dtype=G.real.dtype)
    idx = idx.to(G.device).reshape(batch + (1, c)).expand(batch + (rows, c))
    sampled = torch.take_along_dim(G, idx, dim=-1) * scale.reshape(batch + (1, c))
    finite = torch.isfinite(norms).all(dim=-1).to(G.device).reshape(batch + (1, 1))
    h = torch.linalg.svd(torch.where(finite, sampled, 0), full_matrices=False)[0][..., :k]
    return torch.where(finite, h, torch.nan), adjoint_times(G, h)


SAMPLERS = {"lsi": lsi, "column": column_sampling}

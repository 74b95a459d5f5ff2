"""The deterministic rank-k samplers both sides get in place of LSI's random sketch, and how much the
authors' LSI's ``eps`` would have shrunk the steps they replace."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def top_k(G: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Exact rank-k truncation ``G v vᴴ``: ``v`` (``(..., cols, k)``) the top-k right singular vectors of
    ``G`` (``(..., rows, cols)``); returns ``(a, b) = (G v, v)``, the form of LSI's result."""
    v = torch.linalg.svd(G, full_matrices=False)[2][..., :k, :].mH
    return G @ v, v


def sketch(rows: int, k: int, dtype: torch.dtype) -> Tensor:
    """The fixed real Gaussian ``R`` (``rows × k``) of ``fixed_sketch``: a function of its arguments only."""
    return torch.randn(rows, k, generator=torch.Generator().manual_seed(rows * 1000 + k), dtype=dtype)


def fixed_sketch(G: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """LSI with a fixed sketch: ``v`` an orthonormal basis of ``Gᴴ R`` for one real Gaussian ``R``
    (``rows × k``, a function of ``rows`` and ``k`` only, shared by every matrix of the batch);
    returns ``(G v, v)``. Exact when ``rank(G) <= k``; real for real ``G``; ``conj(G)`` gives
    ``conj`` of the result."""
    R = sketch(G.shape[-2], k, G.real.dtype).to(G.device)
    x = G.mH @ R.to(G.dtype)
    v = x / torch.linalg.vector_norm(x, dim=-2, keepdim=True) if k == 1 else torch.linalg.qr(x)[0]
    return G @ v, v


SAMPLERS = {"topk": top_k, "sketch": fixed_sketch}


def lsi_shrink(A: Tensor, k: int, eps: float = 1e-6) -> float:
    """``1 − (σ / (σ + eps))²``, largest over the batch: how much the authors' ``LSI_approximation``
    (``utils.py:63-70``) shrinks the step ``A v vᴴ`` by dividing its ``v`` by ``σ + eps`` instead of
    ``σ``, ``σ`` the top singular value of their scaled sketch ``sqrt(n/k) Rᴴ A`` (here with ``R`` the
    fixed sketch, orthonormalised)."""
    n = A.shape[-1]
    R = torch.linalg.qr(sketch(A.shape[-2], k, A.real.dtype))[0].to(A.dtype)
    sigma = torch.linalg.matrix_norm(math.sqrt(n / k) * (R.mH @ A), ord=2)
    return (1 - (sigma / (sigma + eps)) ** 2).max().item()

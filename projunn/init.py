"""Initialisers for unitary/orthogonal weights, in the style of ``torch.nn.init``.

Each fills a tensor of shape ``(..., n, n)`` in place (without recording autograd) and
returns it. Real tensors get orthogonal matrices, complex tensors unitary ones. Values
are computed in double precision and rounded once to the tensor's dtype. ``haar_`` and
``identity_`` also fill rectangular ``(..., n, p)`` tensors, with orthonormal columns (``n > p``)
or rows (``n < p``); the others build rotations of the plane pairs of a square matrix and take
square tensors only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .checks import floating, matrix
from .linalg import _double_dtype, _generator_device

__all__ = ["identity_", "haar_", "henaff_", "cayley_", "exprnn_cayley_", "INITIALISERS"]


def _fill_(W: Tensor, value: Tensor) -> Tensor:
    with torch.no_grad():
        W.copy_(value.to(W.dtype) if W.is_complex() else value.real.to(W.dtype))
    return W


def identity_(W: Tensor) -> Tensor:
    """The identity matrix (the adding task's initialisation in the projUNN paper); for a
    rectangular ``(..., n, p)`` tensor, the first ``p`` columns (tall) or ``n`` rows (wide) of it."""
    floating(matrix(W, "a weight"))
    eye = torch.eye(*W.shape[-2:], dtype=_double_dtype(W), device=W.device)
    return _fill_(W, eye.expand(W.shape))


def haar_(W: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A Haar-random orthogonal (real) or unitary (complex) matrix.

    QR of a Gaussian matrix with the signs (phases) of R's diagonal moved into Q, which
    makes the distribution exactly Haar (Mezzadri, 2007). A rectangular ``(..., n, p)`` tensor gets
    the first ``min(n, p)`` columns of such a matrix, transposed if ``n < p``: uniformly
    distributed orthonormal columns (tall) or rows (wide), the reduced QR of an ``max × min``
    Gaussian matrix.
    """
    floating(matrix(W, "a weight"))
    device = _generator_device(generator, W)
    n, p = W.shape[-2:]
    shape = W.shape[:-2] + (max(n, p), min(n, p))
    A = torch.randn(shape, dtype=_double_dtype(W), device=device, generator=generator)
    Q, R = torch.linalg.qr(A)
    d = R.diagonal(dim1=-2, dim2=-1)
    phase = torch.where(d == 0, torch.ones_like(d), d / d.abs())
    Q = Q * phase.unsqueeze(-2)
    return _fill_(W, (Q.mH if n < p else Q).to(W.device))


def _rotation_blocks(W: Tensor, angles: Tensor) -> Tensor:
    """Block-diagonal matrix of 2×2 rotations ``[[cos θ, sin θ], [−sin θ, cos θ]]`` (a trailing 1 for odd n)."""
    n = W.shape[-1]
    out = torch.eye(n, dtype=torch.float64, device=angles.device).expand(W.shape).clone()
    i = torch.arange(0, n - 1, 2, device=angles.device)
    c, s = torch.cos(angles), torch.sin(angles)
    out[..., i, i], out[..., i + 1, i + 1] = c, c
    out[..., i, i + 1], out[..., i + 1, i] = s, -s
    return out.to(W.device)


def _uniform(W: Tensor, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    device = _generator_device(generator, W)
    shape = W.shape[:-2] + (W.shape[-1] // 2,)
    return torch.rand(shape, dtype=torch.float64, device=device, generator=generator) * (high - low) + low


def henaff_(W: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Henaff et al. (2016) initialisation, as expRNN uses it: ``W = exp(A)`` for the
    block-diagonal skew-symmetric ``A`` with 2×2 blocks ``[[0, s], [−s, 0]]``,
    ``s ~ U[−π, π]``; i.e. independent 2×2 rotations by angles ``s``."""
    floating(matrix(W, "a square weight", square=True))
    return _fill_(W, _rotation_blocks(W, _uniform(W, -math.pi, math.pi, generator)))


def cayley_(W: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """scoRNN's Cayley initialisation (Helfrich et al., 2018), in this library's convention.

    scoRNN takes the block-diagonal skew-symmetric ``A`` with blocks ``[[0, s], [−s, 0]]``,
    ``s = −sqrt((1 − cos θ)/(1 + cos θ)) = −tan(θ/2)``, ``θ ~ U[0, π/2]``, and the matrix
    ``(I + A)^{-1}(I − A)``, whose blocks are ``[[cos θ, sin θ], [−sin θ, cos θ]]``; it multiplies
    row vectors (``h W``). The layers here multiply column vectors (``W h``), so this fills in the
    transpose: blocks ``[[cos θ, −sin θ], [sin θ, cos θ]]``, the same recurrence as scoRNN's."""
    floating(matrix(W, "a square weight", square=True))
    return _fill_(W, _rotation_blocks(W, -_uniform(W, 0.0, math.pi / 2, generator)))


def exprnn_cayley_(W: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """expRNN's ``cayley`` initialisation as its exponential map makes it (Lezcano-Casado's expRNN
    code, its pMNIST setting; the expRNN section of ``docs/reproduction.md``): the skew ``A`` of
    ``cayley_``, blocks with ``s = −tan(θ/2)``, ``θ ~ U[0, π/2]``, mapped by ``exp`` instead of the
    Cayley transform: ``exp(A)``, 2×2 rotations by the angles ``s ∈ [−1, 0]`` (not by ``θ``). expRNN
    multiplies row vectors (``h exp(A)``), so, as ``cayley_``, this fills in the transpose
    ``exp(A)ᵀ = exp(−A)``."""
    floating(matrix(W, "a square weight", square=True))
    return _fill_(W, _rotation_blocks(W, torch.tan(_uniform(W, 0.0, math.pi / 2, generator) / 2)))


INITIALISERS = {
    "identity": identity_,
    "haar": haar_,
    "henaff": henaff_,
    "cayley": cayley_,
    "exprnn_cayley": exprnn_cayley_,
}

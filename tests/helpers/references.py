"""The math tests' dtype-aware tolerance and float64 references, which share no code with the library."""

from __future__ import annotations

import torch

REAL = {
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    torch.complex64: torch.float32,
    torch.complex128: torch.float64,
}


def tolerance(dtype: torch.dtype, n: int) -> float:
    """PyTorch's tolerance for a computed n×n matrix: 10·n·eps of the (real) dtype."""
    return 10 * max(n, 1) * torch.finfo(REAL[dtype]).eps


def reference_exp(omega: torch.Tensor) -> torch.Tensor:
    """``exp(Ω)`` for skew-symmetric/Hermitian ``Ω`` via ``eigh(iΩ)`` in complex128. (Not
    torch.linalg.matrix_exp: its unbatched path is off by ~1e-10 for norms ≈ 0.02-0.05,
    pytorch/pytorch#196592; tests/library/test_updates.py ties the two together outside that band.)"""
    lam, V = torch.linalg.eigh(1j * omega.to(torch.complex128))
    E = (V * torch.exp(-1j * lam).unsqueeze(-2)) @ V.mH
    return E if omega.is_complex() else E.real


def reference_d(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """projUNN-D: ``U V^H`` of the thin SVD ``W + a b^H = U Σ V^H`` (square, tall or wide ``W``)."""
    U, _, Vh = torch.linalg.svd(W + a @ b.mH, full_matrices=False)
    return U @ Vh


def max_abs(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x - y).abs().max().item()

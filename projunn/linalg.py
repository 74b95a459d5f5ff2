"""The linear algebra that the projUNN updates, the samplers, the optimizer and the layers share.

Functions over batches ``(..., n, n)``, real (orthogonal) or complex (unitary), that keep the
input's dtype and device and never modify their inputs (``add_low_rank(..., inplace=True)``, asked
for, excepted). ``add_low_rank``, ``polar``, ``unitarity_error`` and ``estimate_unitarity_error`` also
take rectangular ``(..., n, p)`` matrices (Note [rectangular unitarity]):

* ``times(W, X)``, ``adjoint_times(W, X)``: ``W X`` and ``W^H X`` for a skinny ``X`` (Note [skinny
  products]);
* ``add_low_rank(W, L, R)``: ``W + L R``, one fused product-and-add per matrix;
* ``expm_skew(S)``: ``exp(S)`` of a small skew-Hermitian ``S``;
* ``polar(W)``: the unitary matrix closest to ``W``;
* ``unitarity_error(W)``: ``‖W^H W − I‖_F``, the one measure of unitarity (tests, logging and the
  drift control alike), and ``estimate_unitarity_error(W)``, its O(n²) estimate;
* ``full_precision()``: float32 products in full precision, whatever the user's TF32/bf16 setting;
* ``eager_under_compile(reason)``: ``torch.compiler.disable`` without importing the compiler.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .checks import matrix

__all__ = [
    "times",
    "adjoint_times",
    "add_low_rank",
    "expm_skew",
    "polar",
    "unitarity_error",
    "estimate_unitarity_error",
    "full_precision",
    "reduced_matmul_precision",
    "eager_under_compile",
]


def eager_under_compile(reason: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: the function runs eagerly under ``torch.compile``, as with
    ``torch.compiler.disable(reason=reason)``, but that decorator is applied only when a compiler
    first traces the function. ``torch.compiler.disable`` imports ``torch._dynamo``, which costs
    about as much time as ``import torch``: a program that never compiles does not pay it on
    ``import projunn`` (``tests/library/test_compile.py``; ``scripts/bench/imports.py`` times it). Outside
    compilation the function is called as it is."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        disabled: list[Callable[..., Any]] = []  # torch.compiler.disable(function), made at the first trace

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():
                if not disabled:
                    disabled.append(torch.compiler.disable(function, reason=reason))
                return disabled[0](*args, **kwargs)
            return function(*args, **kwargs)

        return call

    return decorate


# The per-backend settings of float32 products (torch >= 2.9; before, one global setting).
_MATMUL_BACKENDS = [
    backend
    for backend in (
        getattr(torch.backends.cuda, "matmul", None),
        getattr(getattr(torch.backends, "mkldnn", None), "matmul", None),
    )
    if hasattr(backend, "fp32_precision")
]


def _precision_reader() -> Callable[[str, str], str] | None:
    """A reader of the per-backend settings: torch's own (far cheaper a call than the public
    properties; it is read at every step) when this torch has it, else the properties;
    ``None`` before torch 2.9 (one legacy setting)."""
    getter = getattr(torch._C, "_get_fp32_precision_getter", None)
    try:
        for backend, op in (("generic", "all"), ("cuda", "matmul"), ("mkldnn", "matmul")):
            getter(backend, op)
        return getter
    except Exception:  # not there, or another signature
        pass
    if not _MATMUL_BACKENDS:
        return None

    def read(backend: str, op: str) -> str:
        if backend == "generic":
            return getattr(torch.backends, "fp32_precision", "none")
        return getattr(torch.backends, backend).matmul.fp32_precision

    return read


_PRECISION = _precision_reader()


@eager_under_compile("the precision settings are read at each step, not fixed at tracing")
def reduced_matmul_precision() -> bool:
    """Whether float32 matrix products may run in reduced precision now (TF32 on CUDA, bf16 on
    oneDNN CPUs), by the user's setting; a backend set to ``"none"`` follows the generic one."""
    if _PRECISION is None:  # torch before 2.9: the legacy setting
        return torch.get_float32_matmul_precision() != "highest"
    generic = _PRECISION("generic", "all")
    for backend in ("cuda", "mkldnn"):
        value = _PRECISION(backend, "matmul")
        if value not in ("ieee", "none") or (value == "none" and generic not in ("ieee", "none")):
            return True
    return False


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """float32 matrix products in full precision inside this context, whatever the user's global
    setting (``torch.set_float32_matmul_precision("high")`` or TF32 on CUDA, bf16 on oneDNN
    CPUs), which is restored on exit. A unitary matrix updated with TF32 products (10-bit
    mantissa) would drift off the manifold by ~1e-3 of each step; the projUNN step, its sketch and
    the drift control run inside (``ProjUNN.step``, ``projunn_t``, ``projunn_d``, ``polar``).
    With the default setting (full precision already) it changes nothing."""
    if not reduced_matmul_precision():
        yield
        return
    if not _MATMUL_BACKENDS:
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)
        return
    previous = [b.fp32_precision for b in _MATMUL_BACKENDS]
    for backend in _MATMUL_BACKENDS:
        backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        for backend, value in zip(_MATMUL_BACKENDS, previous):
            backend.fp32_precision = value


def _double_dtype(x: Tensor) -> torch.dtype:
    """``x``'s dtype widened to double precision: ``complex128`` for complex ``x``, else ``float64``."""
    return torch.complex128 if x.is_complex() else torch.float64


def _in_double(function: Callable[..., Tensor], M: Tensor, *args: Any) -> Tensor:
    """``function(M, *args)`` computed in double precision, in ``M``'s dtype: for the ``2k × 2k``
    factors of a step, whose cost is negligible next to the ``n × 2k`` products."""
    return function(M.to(_double_dtype(M)), *args).to(M.dtype)


def _generator_device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    """Where random draws are made: on ``generator``'s device, so that a given generator state
    gives the same numbers whatever the device of ``like`` (else on ``like``'s device)."""
    return generator.device if generator is not None else like.device


@eager_under_compile("a torch.Generator argument is not traceable; the draw stays eager")
def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal samples of ``like``'s dtype, drawn on the generator's device, on ``like``'s device.
    Eager under ``torch.compile``: the same numbers as an eager step (inductor would draw its own)."""
    device = _generator_device(generator, like)
    sample = torch.randn(shape, dtype=like.dtype, device=device, generator=generator)
    return sample if device == like.device else sample.to(like.device)


def _eye_like(x: Tensor) -> Tensor:
    return torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)


# Note [rectangular unitarity]: an ``n × p`` matrix is unitary (semi-orthogonal, a point of the
# Stiefel manifold) when its columns (``n ≥ p``) or its rows (``n < p``) are orthonormal, i.e. when
# the smaller Gram matrix is the identity: ``W^H W = I_p`` for a tall or square ``W``, ``W W^H = I_n``
# for a wide one. Its unitarity error is ``‖W^H W − I_p‖_F`` or ``‖W W^H − I_n‖_F``, and the closest
# such matrix in Frobenius norm is the polar factor ``U V^H`` of the thin SVD ``W = U Σ V^H``.
def _short_side(W: Tensor) -> Tensor:
    """``W`` if it is tall or square, else ``W^H`` (a view): the matrix whose columns should be orthonormal."""
    return W.mH if W.shape[-2] < W.shape[-1] else W


# Note [skinny products]: W is (..., n, n) and X is (..., n, k) with k ≪ n. BLAS reads W once
# (one pass, the whole cost when n is large) only for a thin left factor: written as X^T W^T
# or X^H W, the product is one pass; as W @ X or W^H @ X it took two to five passes on MKL
# (all but W @ x for one matrix and one vector, a plain matrix-vector product).
# Right after an elementwise kernel wrote W (the optimizer's, or the update of W), X^H W is
# several times slower than W x once W is about the size of the L2 caches (the timings are in
# docs/speed.md). Our reading, not checked inside MKL: elementwise kernels leave each
# thread's block of rows in its core's cache, and MKL does not split X^H W by those rows.
# Large products are therefore summed over row blocks, one per thread; below n = 1024 the extra
# sum costs more than it saves.
def times(W: Tensor, X: Tensor) -> Tensor:
    """``W @ X`` for a skinny ``X`` (Note [skinny products])."""
    if W.ndim == 2 and X.shape[-1] == 1:
        return W @ X
    return (X.mT.contiguous() @ W.mT).mT


def adjoint_times(W: Tensor, X: Tensor) -> Tensor:
    """``W^H @ X`` for a skinny ``X`` (Note [skinny products])."""
    return _adjoint_rows(W, X).mH


def _adjoint_rows(W: Tensor, X: Tensor) -> Tensor:
    """``X^H @ W``, shape ``(..., k, n)``: ``adjoint_times`` before its final transpose."""
    n = W.shape[-2]
    if W.device.type != "cpu" or n < 1024 or torch.compiler.is_compiling():  # (a thread count is not traced)
        return X.mH.contiguous() @ W
    blocks = torch.get_num_threads()
    if blocks > 1 and n % blocks == 0 and W.is_contiguous():
        batch, rows = W.shape[:-2], n // blocks
        X_blocks = X.mH.reshape(batch + (X.shape[-1], blocks, rows)).transpose(-3, -2)
        return (X_blocks @ W.view(batch + (blocks, rows, W.shape[-1]))).sum(dim=-3)
    return X.mH.contiguous() @ W


def add_low_rank(W: Tensor, L: Tensor, R: Tensor, *, inplace: bool = False) -> Tensor:
    """``W + L @ R`` for ``W`` of shape ``(..., n, p)``, ``L`` ``(..., n, m)`` and ``R`` ``(..., m, p)``:
    one fused product-and-add per matrix (``addmm``, ``baddbmm``), no ``n × p`` product formed.
    A new tensor; with ``inplace``, written into ``W`` (contiguous), which is returned."""
    if W.ndim == 2:
        return W.addmm_(L, R) if inplace else torch.addmm(W, L, R)
    n, p, m = W.shape[-2], W.shape[-1], L.shape[-1]
    L, R = L.reshape(-1, n, m), R.reshape(-1, m, p)
    if inplace:
        W.view(-1, n, p).baddbmm_(L, R)
        return W
    return torch.baddbmm(W.reshape(-1, n, p), L, R).reshape(W.shape)


def expm_skew(S: Tensor, sync_free: bool = False) -> Tensor:
    """``exp(S)`` for skew-Hermitian ``S`` (``S^H = −S``), batched over ``(..., m, m)``.

    Since ``S² = −S^H S``, the exponential series splits into even and odd terms:
    ``exp(S) = cos(√(S^H S)) + S · sinc(√(S^H S))``, two analytic functions of the Hermitian
    positive semi-definite ``S^H S``, evaluated through its ``eigh``. Real ``S`` stays real.
    ``eigh`` of ``S^H S`` is accurate to ``eps·‖S‖²``, so a larger ``S`` is scaled by ``2^-s`` to
    norm ≤ 1 first and the result squared ``s`` times (error ≈ ``eps·‖S‖``, as ``matrix_exp``).
    For the small matrices projUNN uses this is a few times faster than ``matrix_exp``; a real
    2×2 ``S = [[0, −θ], [θ, 0]]`` (projUNN-T at k=1) is the rotation by ``θ``, exactly. With
    ``sync_free``, scaling and squaring with a fixed budget instead, reading nothing on the host
    (Note [sync-free steps] in ``projunn.updates``).
    """
    if S.shape[-1] == 2 and not S.is_complex():
        theta = S[..., 1, 0]
        cos, sin = torch.cos(theta), torch.sin(theta)
        return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))
    if sync_free:
        return _expm_fixed_budget(S)
    norm = torch.linalg.matrix_norm(S).max().item() if S.numel() else 0.0
    squarings = max(0, math.ceil(math.log2(norm))) if norm > 1 else 0
    if squarings:
        S = S / 2**squarings
    lam, U = torch.linalg.eigh(S.mH @ S)
    sigma = lam.clamp_min(0).sqrt()
    cos = U * torch.cos(sigma).unsqueeze(-2)
    sinc = U * torch.sinc(sigma / torch.pi).unsqueeze(-2)
    X = (cos + S @ sinc) @ U.mH
    for _ in range(squarings):
        X = X @ X
    return X


def _expm_fixed_budget(S: Tensor, squarings: int = 16, degree: int = 18) -> Tensor:
    """``exp(S)`` with work independent of ``S``'s values (Note [sync-free steps] in ``projunn.updates``)."""
    norm = torch.linalg.matrix_norm(S)
    s = torch.ceil(torch.log2(norm.clamp_min(1.0))).clamp_max(squarings)  # 0..squarings, per matrix
    X = S * torch.exp2(-s)[..., None, None]
    eye = _eye_like(S)
    E = eye
    for j in range(degree, 0, -1):  # Horner: I + X/1 (I + X/2 (I + ...))
        E = eye + (X @ E) / j
    for i in range(squarings):
        E = torch.where((i < s)[..., None, None], E @ E, E)
    return E


def polar(W: Tensor) -> Tensor:
    """The unitary polar factor ``U V^H`` of ``W = U Σ V^H``: the closest unitary matrix in
    Frobenius norm. Batched over ``(..., n, n)``; O(n³) (an SVD), for occasional use only.
    A rectangular ``(..., n, p)`` ``W`` gets the closest matrix with orthonormal columns (``n > p``)
    or rows (``n < p``), from its thin SVD: O(n·p·min(n, p)) (Note [rectangular unitarity])."""
    matrix(W)
    # In double precision, rounded once: a float32 SVD leaves ‖U V^H‖ off by ~5e-5 at n = 1024 (measured),
    # more than the drift that drift control re-projects (~1e-5), where double gives ~1e-6.
    with full_precision():
        return _polar_factor(W.to(_double_dtype(W))).to(W.dtype)


def _polar_factor(W: Tensor) -> Tensor:
    U, _, Vh = torch.linalg.svd(W, full_matrices=W.shape[-1] == W.shape[-2])
    return U @ Vh


def _polar_newton(M: Tensor, iterations: int = 10) -> Tensor:
    """The unitary polar factor of nonsingular ``(..., m, m)`` ``M`` by scaled Newton iterations,
    reading nothing on the host (Note [sync-free steps] in ``projunn.updates``)."""
    X = M
    for _ in range(iterations):
        inverse, _ = torch.linalg.inv_ex(X)
        gamma = (torch.linalg.matrix_norm(inverse) / torch.linalg.matrix_norm(X)).sqrt()[..., None, None]
        X = 0.5 * (gamma * X + inverse.mH / gamma)
    return X


def unitarity_error(W: Tensor) -> Tensor:
    """``‖W^H W − I‖_F`` per matrix of a ``(..., n, n)`` batch, shape ``(...)``.

    Computed in double precision, so that for float32 weights the figure is the
    stored matrix's own error and not the rounding of the measurement. Returns
    float64 (real) whatever the input dtype. For a rectangular ``(..., n, p)`` batch, the error
    of the smaller Gram matrix: ``‖W^H W − I_p‖_F`` (tall), ``‖W W^H − I_n‖_F`` (wide)
    (Note [rectangular unitarity]).

    The matrices are the last two dimensions. A tensor declared to hold other matrices (a convolution
    kernel ``(C_out, C_in, kh, kw)`` declared by ``projunn.orthogonal_`` is one ``C_out × C_in·kh·kw``
    matrix) gives here the errors of its ``kh × kw`` blocks: measure a model's declared matrices with
    ``projunn.unitarity_errors(model)``, or one with ``unitarity_error(as_matrix(W, batch_dims))``.
    """
    matrix(W)
    W = _short_side(W.detach().to(_double_dtype(W)))
    return torch.linalg.matrix_norm(W.mH @ W - _eye_like(W))


def estimate_unitarity_error(W: Tensor, generator: torch.Generator | None = None, probes: int = 4) -> Tensor:
    """An O(n²) estimate of ``unitarity_error(W)``, per matrix of a ``(..., n, n)`` batch
    (O(n·p) for a rectangular ``(..., n, p)`` one).

    ``‖(W^H W − I) z‖`` for Gaussian ``z`` has mean square ``‖W^H W − I‖_F²``; this averages
    ``probes`` of them, in double precision. ``z`` is drawn from ``generator``, on its device.
    """
    W = _short_side(W.detach().to(_double_dtype(W)))
    z = _randn(W.shape[:-2] + (W.shape[-1], probes), W, generator)
    residual = W.mH @ (W @ z) - z
    return residual.abs().pow(2).sum(dim=(-2, -1)).div(probes).sqrt()

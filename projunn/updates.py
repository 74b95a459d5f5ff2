"""The projUNN updates: move a unitary matrix by a rank-k step and stay unitary.

All functions take batches ``(..., n, n)``, never modify their inputs and keep the
input's dtype and device. Real inputs (orthogonal matrices) give real outputs.

Note [projUNN in the 2k subspace]
---------------------------------
Let ``W`` be unitary, ``a, b`` of shape ``(n, k)`` and ``ΔW = a b^H``. Put
``â = W^H a`` and take the reduced QR ``[b, â] = Q R`` (``Q`` is ``n × m`` with
orthonormal columns, ``m = min(n, 2k)``; ``R = [R1, R2]`` is ``m × 2k``). Then
``b = Q R1`` and ``â = Q R2``, so

    W^H ΔW = â b^H = Q G Q^H   with   G = R2 R1^H   (m × m).

Both updates act as the identity on the orthogonal complement of span(Q), hence

    W⁺ = W + (W Q) (X − I) Q^H

for an ``m × m`` unitary ``X``:

* projUNN-T moves along the geodesic in the direction of the tangent projection
  ``Ω = ½(W^H ΔW − ΔW^H W) = Q S Q^H`` with ``S = ½(G − G^H)``:
  ``W⁺ = W exp(Ω)``, i.e. ``X = exp(S)``.
* projUNN-D takes the polar factor of ``M = W + ΔW = W (I + Q G Q^H)``. On span(Q),
  ``M Q = W Q (I + G)``; on its complement ``M`` equals ``W``. So the polar factor
  of ``M`` is ``W + W Q (P − I) Q^H`` with ``P = U V^H`` from the SVD
  ``I + G = U Σ V^H``. This is ``M (M^H M)^(-1/2)`` when ``M`` is invertible and
  one of its (equally close) unitary factors when it is not; it never divides by
  a singular value, so rank-deficient or zero steps need no special case.

The QR is Householder-based, so ``Q`` is orthonormal even when ``[b, â]`` is rank
deficient (``a = 0``, ``b ∥ â``, ...). The cost is two products of ``W`` with an
``n × m`` matrix, one rank-m update of ``W`` and O(m³) work: O(k n²) in all. No
``n × n`` eigen-decomposition, SVD or exponential is ever formed.

Note [projUNN-T at k = 1, real]
-------------------------------
The paper's default step needs no QR. With ``B = [b, â]`` (``n × 2``) and
``J = [[0, −1], [1, 0]]``, the tangent step is ``Ω = ½(â b^T − b â^T) = ½ B J B^T``.
A real skew matrix of rank 2 turns its plane by ``θ``, where ``θ² = −½ tr(Ω²)``;
with the Gram matrix ``Γ = B^T B = [[p, q], [q, r]]`` that is ``θ² = ¼ det Γ``. Since
``Ω³ = −θ² Ω``, the exponential series sums to

    exp(Ω) − I = s Ω + c Ω²,   s = sin θ / θ,   c = (1 − cos θ) / θ² = ½ (sin(θ/2) / (θ/2))²,

and ``Ω² = ¼ B J Γ J B^T`` with ``J Γ J = [[−r, q], [q, −p]]``. So
``W⁺ = W + (W B) M B^T`` with the 2 × 2 matrix ``M = (s/2) J + (c/4) J Γ J``. For one matrix on
the CPU ``M`` is computed on the host from the three numbers of ``Γ`` (the fewest kernels); for
a batch, or without host synchronisation (``sync_free``, Note [sync-free steps]), by the same
formulas as tensors on ``W``'s device. ``s`` and
``c`` are even, smooth functions of ``θ``, evaluated without cancellation, so ``θ → 0``
(``a = 0``, ``b ∥ â``) needs no special case and a rounding error in ``det Γ`` only
perturbs them by ``O(eps·‖a‖²‖b‖²)``.
Every term of ``(W B) M B^T`` has size ``‖a‖‖b‖`` or ``‖a‖²‖b‖²`` whatever the split of
scale between ``a`` and ``b``: the result is unitary to rounding for the small steps an
optimizer takes (for huge, nearly parallel ``a, b`` the ``‖a‖²‖b‖²`` term dominates).

Note [sync-free steps]
----------------------
On a GPU, every number read on the host stops the CPU until the GPU has caught up, and a step
that reads one cannot be captured in a CUDA graph. With ``sync_free=True`` the step reads none:
the ``m × m`` factors (``m = 2k``) are computed with fixed work instead of work chosen from their
values.

* projUNN-T at ``k = 1``, real: the closed form of Note [projUNN-T at k = 1, real], as tensors.
* projUNN-T otherwise: ``exp(S)`` by scaling and squaring with a fixed budget: ``S`` is scaled by
  ``2^-s``, ``s = ⌈log2 ‖S‖_F⌉`` clipped to ``0..16``, computed on the device, so that the scaled
  matrix has norm ≤ 1; a degree-18 Taylor polynomial (truncation ``< 1/19! ≈ 8e-18``); then 16
  squarings, each kept only where ``i < s``. Exact to rounding for ``‖S‖_F ≤ 2^16``, a rotation by
  65,536 radians; the usual path instead picks the number of squarings on the host.
* projUNN-D: the polar factor of ``I + G`` by Newton's iteration ``X ← ½(γX + X^{-H}/γ)`` with
  Higham's scaling ``γ = sqrt(‖X^{-1}‖_F / ‖X‖_F)``, 10 iterations (quadratic convergence; ``I + G``
  is within a step's size of ``I``), instead of an SVD, whose convergence check reads the device.
  A singular ``I + G`` (a step that lands exactly on a rank-deficient ``M``) gives a non-finite
  factor, which ``ProjUNN`` skips; the SVD path handles it.
* The QR of ``[b, â]`` and the products read nothing.

On either path the ``2k × 2k`` factors (the exponential, the polar factor, the k = 1 closed form)
are computed in double precision, negligible work next to the ``n × 2k`` products: the two paths
then differ by the float32 rounding of those products only.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "projunn_t",
    "projunn_d",
    "unitarity_error",
    "polar",
    "low_rank_step",
    "expm_skew",
    "times",
    "adjoint_times",
    "full_precision",
]

PROJECTORS = ("T", "D")


# The per-backend settings of float32 products (torch >= 2.9; before, one global setting).
_MATMUL_BACKENDS = [
    b for b in (getattr(torch.backends.cuda, "matmul", None), getattr(getattr(torch.backends, "mkldnn", None), "matmul", None))
    if hasattr(b, "fp32_precision")
]


def _precision_reader() -> Callable[[str, str], str] | None:
    """A reader of the per-backend settings: torch's own (0.1 µs a call, against ~1 µs for the
    public properties; it is read at every step) when this torch has it, else the properties;
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


def _check_inputs(W: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"Expected a square weight of shape (..., n, n), got shape {tuple(W.shape)}")
    if not (W.is_floating_point() or W.is_complex()):
        raise ValueError(f"Expected a floating point or complex weight, got dtype {W.dtype}")
    n = W.shape[-1]
    for name, x in (("a", a), ("b", b)):
        if x.ndim != W.ndim or x.shape[-2] != n or x.shape[:-2] != W.shape[:-2]:
            raise ValueError(
                f"Expected {name} of shape {tuple(W.shape[:-2]) + (n, 'k')} to match W of shape "
                f"{tuple(W.shape)}, got shape {tuple(x.shape)}"
            )
        if x.is_complex() and not W.is_complex():
            raise ValueError(
                f"W is real ({W.dtype}) but {name} is complex ({x.dtype}); a real orthogonal W "
                "needs a real step (pass a complex W to get a unitary result)"
            )
    if a.shape[-1] != b.shape[-1] or a.shape[-1] < 1:
        raise ValueError(f"Expected a and b with the same number k >= 1 of columns, got {a.shape[-1]} and {b.shape[-1]}")
    return a.to(W.dtype), b.to(W.dtype)


def _eye_like(x: Tensor) -> Tensor:
    return torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)


def _in_double(function: Callable[..., Tensor], M: Tensor, *args: Any) -> Tensor:
    """``function(M, *args)`` computed in double precision, in ``M``'s dtype: for the ``2k × 2k``
    factors of a step, whose cost is negligible next to the ``n × 2k`` products."""
    wide = torch.complex128 if M.is_complex() else torch.float64
    return function(M.to(wide), *args).to(M.dtype)


def low_rank_step(W: Tensor, a: Tensor, b: Tensor, projector: str, sync_free: bool = False) -> tuple[Tensor, Tensor]:
    """Factors ``(L, R)`` of the projUNN step: ``W⁺ = W + L @ R``.

    ``W`` is ``(..., n, n)`` unitary, ``a, b`` are ``(..., n, k)``; ``L`` is
    ``(..., n, m)`` and ``R`` is ``(..., m, n)`` with ``m = min(n, 2k)`` (``m = 2`` for a
    real projUNN-T step at ``k = 1``). See Note [projUNN in the 2k subspace] and
    Note [projUNN-T at k = 1, real]; ``sync_free`` reads nothing on the host (Note [sync-free
    steps]). Inputs are assumed validated and of ``W``'s dtype.
    """
    if projector not in PROJECTORS:
        raise ValueError(f"Unknown projector {projector!r}; expected one of {PROJECTORS}")
    k = a.shape[-1]
    if projector == "T" and k == 1 and not W.is_complex():
        return _plane_rotation(W, a, b, on_host=W.ndim == 2 and W.device.type == "cpu" and not sync_free)
    a_hat = adjoint_times(W, a)
    Q, R = torch.linalg.qr(torch.cat([b, a_hat], dim=-1))
    G = R[..., k:] @ R[..., :k].mH
    if projector == "T":
        X_minus_I = _in_double(expm_skew, 0.5 * (G - G.mH), sync_free)
    else:
        G.diagonal(dim1=-2, dim2=-1).add_(1)
        X_minus_I = _in_double(_polar_newton if sync_free else _polar_factor, G)
    X_minus_I.diagonal(dim1=-2, dim2=-1).sub_(1)
    return times(W, Q), X_minus_I @ Q.mH


def _plane_rotation(W: Tensor, a: Tensor, b: Tensor, on_host: bool) -> tuple[Tensor, Tensor]:
    """``(L, R)`` of projUNN-T for real ``(..., n, n)`` ``W`` and ``k = 1`` (Note [projUNN-T at
    k = 1, real]), the 2 × 2 factor on the host (``on_host``, one matrix) or as tensors on the
    device. Non-finite ``a`` or ``b`` give a non-finite ``R``."""
    Bt = torch.cat([b.mT, _adjoint_rows(W, a)], dim=-2)  # B^T = [b, â]^T, 2 × n
    gram = Bt @ Bt.mT
    if on_host:
        (p, q), (_, r) = gram.tolist()
        theta = 0.5 * math.sqrt(max(p * r - q * q, 0.0))
        if math.isfinite(theta):
            half = 0.5 * theta
            s = math.sin(theta) / theta if theta else 1.0
            c = 0.5 * (math.sin(half) / half) ** 2 if half else 0.5
            M = [[-0.25 * c * r, 0.25 * c * q - 0.5 * s], [0.25 * c * q + 0.5 * s, -0.25 * c * p]]
        else:
            M = [[math.nan] * 2] * 2
        M = torch.tensor(M, dtype=W.dtype, device=W.device)
    else:
        gram = gram.double()
        p, q, r = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]
        theta = 0.5 * (p * r - q * q).clamp_min(0).sqrt()
        s = torch.sinc(theta / math.pi)  # sin θ / θ
        c = 0.5 * torch.sinc(theta / (2 * math.pi)) ** 2  # (1 − cos θ) / θ²
        M = torch.stack([-0.25 * c * r, 0.25 * c * q - 0.5 * s, 0.25 * c * q + 0.5 * s, -0.25 * c * p], dim=-1)
        M = M.unflatten(-1, (2, 2)).to(W.dtype)
    return times(W, Bt.mT), M @ Bt


def _polar_newton(M: Tensor, iterations: int = 10) -> Tensor:
    """The unitary polar factor of nonsingular ``(..., m, m)`` ``M`` by scaled Newton iterations,
    reading nothing on the host (Note [sync-free steps])."""
    X = M
    for _ in range(iterations):
        inverse, _ = torch.linalg.inv_ex(X)
        gamma = (torch.linalg.matrix_norm(inverse) / torch.linalg.matrix_norm(X)).sqrt()[..., None, None]
        X = 0.5 * (gamma * X + inverse.mH / gamma)
    return X


def expm_skew(S: Tensor, sync_free: bool = False) -> Tensor:
    """``exp(S)`` for skew-Hermitian ``S`` (``S^H = −S``), batched over ``(..., m, m)``.

    Since ``S² = −S^H S``, the exponential series splits into even and odd terms:
    ``exp(S) = cos(√(S^H S)) + S · sinc(√(S^H S))``, two analytic functions of the Hermitian
    positive semi-definite ``S^H S``, evaluated through its ``eigh``. Real ``S`` stays real.
    ``eigh`` of ``S^H S`` is accurate to ``eps·‖S‖²``, so a larger ``S`` is scaled by ``2^-s`` to
    norm ≤ 1 first and the result squared ``s`` times (error ≈ ``eps·‖S‖``, as ``matrix_exp``).
    For the small matrices projUNN uses this is a few times faster than ``matrix_exp``; a real
    2×2 ``S = [[0, −θ], [θ, 0]]`` (projUNN-T at k=1) is the rotation by ``θ``, exactly. With
    ``sync_free``, scaling and squaring with a fixed budget instead (Note [sync-free steps]).
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
    """``exp(S)`` with work independent of ``S``'s values (Note [sync-free steps])."""
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


# Note [skinny products]: W is (..., n, n) and X is (..., n, k) with k ≪ n. BLAS reads W once
# (one pass, the whole cost when n is large) only for a thin left factor: written as X^T W^T
# or X^H W, the product is one pass; as W @ X or W^H @ X it took two to five passes on MKL
# (all but W @ x for one matrix and one vector, a plain matrix-vector product).
# Measured on a 2-core CPU at n = 1024 (a 4 MB matrix, the size of the two L2 caches): right
# after an elementwise kernel wrote W (the optimizer's, or the update of W), X^H W took 116 µs
# against 40 µs for W x. Our reading, not checked inside MKL: elementwise kernels leave each
# thread's block of rows in its core's cache, and MKL does not split X^H W by those rows.
# Large products are therefore summed over row blocks, one per thread (57 µs there, no slower
# at n = 2048, 4096); below n = 1024 the extra sum costs more than it saves.
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
    n, blocks = W.shape[-2], torch.get_num_threads()
    if W.device.type == "cpu" and n >= 1024 and blocks > 1 and n % blocks == 0 and W.is_contiguous():
        batch, rows = W.shape[:-2], n // blocks
        X_blocks = X.mH.reshape(batch + (X.shape[-1], blocks, rows)).transpose(-3, -2)
        return (X_blocks @ W.view(batch + (blocks, rows, n))).sum(dim=-3)
    return X.mH.contiguous() @ W


def _apply(W: Tensor, L: Tensor, R: Tensor) -> Tensor:
    if W.ndim == 2:
        return torch.addmm(W, L, R)
    shape = W.shape
    n, m = shape[-1], L.shape[-1]
    return torch.baddbmm(W.reshape(-1, n, n), L.reshape(-1, n, m), R.reshape(-1, m, n)).reshape(shape)


def projunn_t(W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """projUNN-T: ``W exp(½(W^H a b^H − b a^H W))``, the geodesic step along the tangent
    projection of ``ΔW = a b^H``.

    Args:
        W: ``(..., n, n)`` unitary (complex) or orthogonal (real) matrices.
        a, b: ``(..., n, k)`` factors of the Euclidean step ``ΔW = a b^H``.

    Returns a new ``(..., n, n)`` tensor; ``W``, ``a`` and ``b`` are not modified.
    O(k n²) per matrix (Note [projUNN in the 2k subspace]). ``a`` and ``b`` must be finite:
    NaN/Inf give a NaN result or a ``torch.linalg.LinAlgError``, depending on the path
    (``ProjUNN`` catches both and keeps the matrix).
    """
    a, b = _check_inputs(W, a, b)
    with full_precision():
        return _apply(W, *low_rank_step(W, a, b, "T"))


def projunn_d(W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """projUNN-D: the unitary matrix closest in Frobenius norm to ``W + a b^H`` (its polar factor).

    Args:
        W: ``(..., n, n)`` unitary (complex) or orthogonal (real) matrices.
        a, b: ``(..., n, k)`` factors of the Euclidean step ``ΔW = a b^H``.

    Returns a new ``(..., n, n)`` tensor; ``W``, ``a`` and ``b`` are not modified.
    O(k n²) per matrix (Note [projUNN in the 2k subspace]). ``a`` and ``b`` must be finite:
    NaN/Inf give a NaN result or a ``torch.linalg.LinAlgError``, depending on the path
    (``ProjUNN`` catches both and keeps the matrix).
    """
    a, b = _check_inputs(W, a, b)
    with full_precision():
        return _apply(W, *low_rank_step(W, a, b, "D"))


def unitarity_error(W: Tensor) -> Tensor:
    """``‖W^H W − I‖_F`` per matrix of a ``(..., n, n)`` batch, shape ``(...)``.

    Computed in double precision, so that for float32 weights the figure is the
    stored matrix's own error and not the rounding of the measurement. Returns
    float64 (real) whatever the input dtype.
    """
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"Expected a square matrix of shape (..., n, n), got shape {tuple(W.shape)}")
    W = W.detach().to(torch.complex128 if W.is_complex() else torch.float64)
    return torch.linalg.matrix_norm(W.mH @ W - _eye_like(W))


def polar(W: Tensor) -> Tensor:
    """The unitary polar factor ``U V^H`` of ``W = U Σ V^H``: the closest unitary matrix in
    Frobenius norm. Batched over ``(..., n, n)``; O(n³) (an SVD), for occasional use only."""
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"Expected a square matrix of shape (..., n, n), got shape {tuple(W.shape)}")
    with full_precision():
        return _polar_factor(W)


def _polar_factor(W: Tensor) -> Tensor:
    U, _, Vh = torch.linalg.svd(W)
    return U @ Vh

"""The projUNN updates: move a unitary matrix by a rank-k step and stay unitary.

All functions take batches ``(..., n, n)``, never modify their inputs and keep the
input's dtype and device. Real inputs (orthogonal matrices) give real outputs. They also take
rectangular batches ``(..., n, p)`` with orthonormal columns (``n > p``) or rows (``n < p``):
Note [projUNN on the Stiefel manifold].

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
* projUNN-T otherwise (``projunn.linalg.expm_skew(S, sync_free=True)``): ``exp(S)`` by scaling and
  squaring with a fixed budget: ``S`` is scaled by ``2^-s``, ``s = ⌈log2 ‖S‖_F⌉`` clipped to
  ``0..16``, computed on the device, so that the scaled matrix has norm ≤ 1; a degree-18 Taylor
  polynomial (truncation ``< 1/19! ≈ 8e-18``); then 16 squarings, each kept only where ``i < s``.
  Exact to rounding for ``‖S‖_F ≤ 2^16``, a rotation by 65,536 radians; the usual path instead
  picks the number of squarings on the host.
* projUNN-D (``projunn.linalg._polar_newton``): the polar factor of ``I + G`` by Newton's
  iteration ``X ← ½(γX + X^{-H}/γ)`` with Higham's scaling ``γ = sqrt(‖X^{-1}‖_F / ‖X‖_F)``,
  10 iterations (quadratic convergence; ``I + G`` is within a step's size of ``I``), instead of
  an SVD, whose convergence check reads the device. A singular ``I + G`` (a step that lands
  exactly on a rank-deficient ``M``) gives a non-finite factor, which ``ProjUNN`` skips; the SVD
  path handles it.
* The QR of ``[b, â]`` and the products read nothing.

On either path the ``2k × 2k`` factors (the exponential, the polar factor, the k = 1 closed form)
are computed in double precision, negligible work next to the ``n × 2k`` products: the two paths
then differ by the float32 rounding of those products only. A rectangular step (Note [projUNN on
the Stiefel manifold]) takes one more QR, of ``a⊥``, and for projUNN-D the QR of ``N`` before
Newton's iteration on its square factor (``polar(Q R) = Q polar(R)``).

Note [projUNN on the Stiefel manifold]
--------------------------------------
``W`` is ``n × p`` with ``n > p`` and ``W^H W = I_p``; the step is ``ΔW = a b^H`` (``a``: ``n × k``,
``b``: ``p × k``). The paper defines both updates for square matrices; on the Stiefel manifold they are:

* projUNN-T: ``W⁺ = exp(A) W``, ``A = P ΔW W^H − W ΔW^H P``, ``P = I − ½ W W^H`` (the geodesic of the
  canonical metric; its first-order step is the tangent projection ``ΔW − W sym(W^H ΔW)``);
* projUNN-D: ``W⁺`` = the polar factor ``U V^H`` of the thin SVD of ``M = W + a b^H``.

Split ``a`` along the range of ``W`` and its complement: ``a = W â + a⊥``, ``â = W^H a``,
``a⊥ = a − W â``. Take, as in Note [projUNN in the 2k subspace], the reduced QR
``[b, â] = Q [R1, R2]`` (``Q``: ``p × m``, ``m = min(p, 2k)``) and ``G = R2 R1^H``, and the
reduced QR ``a⊥ = Q⊥ R⊥`` (``Q⊥``: ``n × k``). Since ``â`` lies in span(Q), ``W â = (W Q) R2``:
``a⊥`` costs no further pass over ``W``. The columns of ``V = [W Q, Q⊥]`` are orthonormal
(``W Q`` because ``W`` is an isometry, ``Q⊥ ⊥ range(W)``), and

    P a = ½ W â + a⊥,   A = W Ω W^H + a⊥ b^H W^H − W b a⊥^H = V S V^H,
    S = [[½(G − G^H), −C^H], [C, 0]],   C = R⊥ R1^H   (k × m),

with ``Ω = ½(â b^H − b â^H)``, so ``exp(A) = I + V (exp(S) − I) V^H``. With ``V^H W = [Q^H; 0]``:

    W⁺ = W + V (X − [I; 0]) Q^H,   X = exp(S)[:, :m]   ((m + k) × m).

For projUNN-D, ``M`` maps ``z ⊥ span(Q)`` to ``W z`` (``b^H z = 0``), orthogonal to ``V``'s
columns, and ``M Q = W Q (I + G) + Q⊥ C = V N`` with ``N = [[I + G], [C]]``. The polar factor of
``M`` therefore keeps ``W z`` and maps ``Q`` to ``V polar(N)``: the same formula with
``X = polar(N)``, the ``(m + k) × m`` polar factor of the thin SVD. This never forms the Gram
matrix ``M^H M`` (whose condition number is the square of ``M``'s).

``S`` is ``(m + k) × (m + k)``, at most ``3k``: ``A`` has rank ``≤ 2k``, but ``V`` spans the
``3k``-dimensional ``span[W Q, a⊥]`` so that it has orthonormal columns without a pass over ``W``
more (the orthonormal basis of ``[P a, W b]`` itself would need ``Q_U^H W``). Cost: ``W^H a``,
``W Q`` and the update, three passes over ``W``, O(n·p·k); the QR of ``a⊥``, O(n·k²); O(k³) for
``X``. For ``p = n`` ``a⊥ = 0`` and this is Note [projUNN in the 2k subspace]; square inputs take
that path (and the k = 1 closed form) as before. Degenerate cases need nothing special: the
Householder QRs give orthonormal ``Q``, ``Q⊥`` for rank-deficient ``[b, â]`` or ``a⊥`` (``a = 0``,
``a ∈ range(W)``, ``k > n − p``), and a column of ``Q⊥`` that spans nothing of ``a⊥`` has a zero
row in ``R⊥`` and in ``C``, so ``X − [I; 0]`` has a zero row there and that column is never used.
In floating point such a column, or ``a⊥`` computed with cancellation, is off orthogonality by
``O(eps·‖a‖/‖a⊥‖)`` and enters scaled by ``‖a⊥‖‖b‖``: an error of ``O(eps·‖a‖‖b‖)``, as the step's.

A wide ``W`` (``n < p``, ``W W^H = I_n``) is updated through ``W^H``, which is tall, with the
step ``ΔW^H = b a^H``: ``W^H + L R`` becomes ``W + R^H L^H``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .checks import floating, matrix, one_of
from .linalg import (
    _adjoint_rows,
    _in_double,
    _polar_factor,
    _polar_newton,
    add_low_rank,
    adjoint_times,
    expm_skew,
    full_precision,
    times,
)

__all__ = ["projunn_t", "projunn_d", "low_rank_step", "PROJECTORS"]

PROJECTORS = ("T", "D")


def _check_inputs(W: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    floating(matrix(W, "a weight"))
    for name, x, rows in (("a", a, W.shape[-2]), ("b", b, W.shape[-1])):
        if x.ndim != W.ndim or x.shape[-2] != rows or x.shape[:-2] != W.shape[:-2]:
            raise ValueError(
                f"Expected {name} of shape {tuple(W.shape[:-2]) + (rows, 'k')} to match W of shape "
                f"{tuple(W.shape)}, got shape {tuple(x.shape)}"
            )
        if x.is_complex() and not W.is_complex():
            raise ValueError(
                f"W is real ({W.dtype}) but {name} is complex ({x.dtype}); a real orthogonal W "
                "needs a real step (pass a complex W to get a unitary result)"
            )
    if a.shape[-1] != b.shape[-1] or a.shape[-1] < 1:
        raise ValueError(
            f"Expected a and b with the same number k >= 1 of columns, got {a.shape[-1]} and {b.shape[-1]}"
        )
    return a.to(W.dtype), b.to(W.dtype)


def low_rank_step(W: Tensor, a: Tensor, b: Tensor, projector: str, sync_free: bool = False) -> tuple[Tensor, Tensor]:
    """Factors ``(L, R)`` of the projUNN step: ``W⁺ = W + L @ R``.

    ``W`` is ``(..., n, n)`` unitary, ``a, b`` are ``(..., n, k)``; ``L`` is
    ``(..., n, m)`` and ``R`` is ``(..., m, n)`` with ``m = min(n, 2k)`` (``m = 2`` for a
    real projUNN-T step at ``k = 1``). See Note [projUNN in the 2k subspace] and
    Note [projUNN-T at k = 1, real]; ``sync_free`` reads nothing on the host (Note [sync-free
    steps]). Inputs are assumed validated and of ``W``'s dtype. A rectangular ``(..., n, p)``
    ``W`` takes ``a``: ``(..., n, k)``, ``b``: ``(..., p, k)`` and gives ``L``: ``(..., n, m)``,
    ``R``: ``(..., m, p)`` with ``m = min(n, p, 2k)`` (Note [projUNN on the Stiefel manifold]).
    """
    one_of("projector", projector, PROJECTORS)
    n, p = W.shape[-2:]
    if n > p:
        return _stiefel_step(W, a, b, projector, sync_free)
    if n < p:  # through W^H, tall, and ΔW^H = b a^H
        L, R = _stiefel_step(W.mH, b, a, projector, sync_free)
        return R.mH, L.mH
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


def _stiefel_step(W: Tensor, a: Tensor, b: Tensor, projector: str, sync_free: bool) -> tuple[Tensor, Tensor]:
    """``(L, R)`` for a tall ``(..., n, p)`` ``W`` (``n > p``): Note [projUNN on the Stiefel manifold]."""
    k = a.shape[-1]
    Q, R = torch.linalg.qr(torch.cat([b, adjoint_times(W, a)], dim=-1))
    R1, R2 = R[..., :k], R[..., k:]
    m = Q.shape[-1]
    WQ = times(W, Q)
    Q_perp, R_perp = torch.linalg.qr(a - WQ @ R2)  # a⊥ = a − W â, with W â = (W Q) R2
    C = R_perp @ R1.mH
    G = R2 @ R1.mH
    if projector == "T":
        top = torch.cat([0.5 * (G - G.mH), -C.mH], dim=-1)
        bottom = torch.cat([C, C.new_zeros(C.shape[:-1] + (C.shape[-2],))], dim=-1)
        X_minus_I = _in_double(_exp_minus_identity, torch.cat([top, bottom], dim=-2), m, sync_free)
    else:
        G.diagonal(dim1=-2, dim2=-1).add_(1)
        X_minus_I = _in_double(_polar_minus_identity, torch.cat([G, C], dim=-2), sync_free)
    return torch.cat([WQ, Q_perp], dim=-1) @ X_minus_I, Q.mH


# The (m + k) × m factors of the Stiefel step, X − [I; 0], with the identity taken off in double
# precision: rounded afterwards, the small step keeps its relative precision.
def _exp_minus_identity(S: Tensor, m: int, sync_free: bool) -> Tensor:
    X = expm_skew(S, sync_free)[..., :m]
    X.diagonal(dim1=-2, dim2=-1).sub_(1)
    return X


def _polar_minus_identity(N: Tensor, sync_free: bool) -> Tensor:
    if sync_free:  # polar(Q R) = Q polar(R), Newton's iteration on the square R
        Q, R = torch.linalg.qr(N)
        X = Q @ _polar_newton(R)
    else:
        X = _polar_factor(N)
    X.diagonal(dim1=-2, dim2=-1).sub_(1)
    return X


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


def projunn_t(W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """projUNN-T: ``W exp(½(W^H a b^H − b a^H W))``, the geodesic step along the tangent
    projection of ``ΔW = a b^H``.

    Args:
        W: ``(..., n, n)`` unitary (complex) or orthogonal (real) matrices.
        a: ``(..., n, k)``, the left factor of the Euclidean step ``ΔW = a b^H``.
        b: ``(..., n, k)``, its right factor.

    Returns a new ``(..., n, n)`` tensor; ``W``, ``a`` and ``b`` are not modified.
    O(k n²) per matrix (Note [projUNN in the 2k subspace]).

    A rectangular ``W`` of shape ``(..., n, p)``, ``n > p``, with orthonormal columns takes ``a``:
    ``(..., n, k)`` and ``b``: ``(..., p, k)`` and moves to ``exp(A) W``,
    ``A = P ΔW W^H − W ΔW^H P``, ``P = I − ½ W W^H``, which is the formula above when ``p = n``;
    a wide one (``n < p``, orthonormal rows) gets the same on ``W^H`` with ``ΔW^H = b a^H``.
    O(n·p·k + n·k²) (Note [projUNN on the Stiefel manifold]). ``a`` and ``b`` must be finite:
    NaN/Inf give a NaN result or a ``torch.linalg.LinAlgError``, depending on the path
    (``ProjUNN`` catches both and keeps the matrix).
    """
    return _step(W, a, b, "T")


def projunn_d(W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """projUNN-D: the unitary matrix closest in Frobenius norm to ``W + a b^H`` (its polar factor).

    Arguments, result, cost and non-finite inputs as for ``projunn_t``. For a rectangular ``W``, the
    closest matrix with orthonormal columns (tall) or rows (wide): ``U V^H`` of the thin SVD
    ``W + a b^H = U Σ V^H`` (Note [projUNN on the Stiefel manifold]).
    """
    return _step(W, a, b, "D")


def _step(W: Tensor, a: Tensor, b: Tensor, projector: str) -> Tensor:
    """``W + L @ R`` with ``(L, R) = low_rank_step(W, a, b, projector)``, inputs checked first."""
    a, b = _check_inputs(W, a, b)
    with full_precision():
        return add_low_rank(W, *low_rank_step(W, a, b, projector))

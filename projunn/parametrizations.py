"""The O(n³) baselines: a unitary matrix as a map of a skew-Hermitian one, ``W = φ(A)``.

* ``"matrix_exp"``: ``W = exp(A)``, expRNN (Lezcano-Casado & Martínez-Rubio, ICML 2019) in its
  static mode (``-m exprnn``): ``A`` is the parameter, no change of base.
* ``"cayley"``: ``W = D (I + A)⁻¹(I − A)``, scoRNN (Helfrich, Willmott & Ye, ICML 2018), with the
  diagonal scaling ``D = diag(1, …, 1, −1, …, −1)`` holding ``negative_ones`` entries −1 last (it
  lets the map reach matrices with eigenvalues −1). With ``D = I``, applied to each frequency's
  matrix of an ``OrthogonalConv2d``, it is a full-width Cayley convolution (Trockman & Kolter,
  ICLR 2021).

Note [row-vector baselines]: expRNN and scoRNN multiply row vectors, ``h_t = σ(x_t U + h_{t−1} B)``
with ``B = exp(A)`` or ``B = (I + A)⁻¹(I − A) D``; the layers here multiply column vectors,
``h_t = σ(W h_{t−1} + V x_t)``, so the same recurrence has ``W = Bᵀ``. Since ``exp(A)ᵀ = exp(−A)``
and ``((I + A)⁻¹(I − A) D)ᵀ = D (I − A)⁻¹(I + A)``, the maps here are theirs with ``A`` replaced by
``−A`` (which is why ``D`` is on the left): trained from ``−A₀``, the elementwise optimizers move
``−A`` exactly as theirs move ``A``, and ``W`` stays ``Bᵀ`` at every step.

``parametrize(module, map)`` registers the map (``torch.nn.utils.parametrize``) on every matrix a
module declares in ``unitary_parameter_names``: ``module.weight`` is then computed from the
stored ``module.parametrizations.weight.original`` at each access, and an ordinary optimizer
trains ``original`` (the matrix stays unitary to rounding, at the cost of an O(n³) map and its
backward per forward pass).

Rectangular matrices (the Stiefel manifold, ``(..., n, p)`` with orthonormal columns, or rows
when wide) go through torch's own ``torch.nn.utils.parametrizations.orthogonal`` (Note [rectangular
baselines]); so does every matrix under the third map, ``"torch"``.

Note [rectangular baselines]
----------------------------
For an ``n × p`` weight (``n > p``; a wide one is transposed), ``"matrix_exp"`` and ``"cayley"``
register ``torch.nn.utils.parametrizations.orthogonal(module, name, orthogonal_map=map)``: it
embeds the trained ``n × p`` lower-trapezoidal ``X`` in an ``n × n`` skew matrix ``A``, maps it
to ``exp(A)`` or torch's Cayley map ``(I + A/2)(I − A/2)⁻¹`` (not scoRNN's scaled one: there is
no ``D`` to choose on the Stiefel manifold, so ``negative_ones`` is refused here) and keeps
``base @ Q[:, :p]``, where ``base`` is the starting matrix completed to an orthogonal ``n × n``
one (torch's dynamic trivialization, never re-based here): O(n³) per forward in the long side
``n``, as expRNN's square map is. ``"torch"`` is that function with torch's default map:
``matrix_exp`` for a square or complex matrix, Householder reflections
(``torch.linalg.householder_product``, O(n·p²)) for a real rectangular one, the cheapest
parametrization torch offers. In all three the weight keeps its value at registration (``X`` starts
so that ``A = 0``).

Note [storing a skew-Hermitian matrix]
--------------------------------------
The stored ``X`` is any ``(..., n, n)`` matrix; the map reads ``A = U − U^H + i·Im diag(X)``
with ``U`` the strict upper triangle of ``X`` (the imaginary diagonal only exists for complex
``X``). So ``A`` is skew-Hermitian whatever ``X`` is, ``A = X`` when ``X`` is skew-Hermitian,
and the lower triangle of ``X`` is never read (its gradient is zero): as expRNN's code stores its
``A`` (``A.triu(diagonal=1)``, then ``A - A.t()``; the expRNN section of ``docs/reproduction.md``).
For real ``X`` the gradient of a loss ``L`` with respect to ``X_ij``, ``i < j``, is ``G_ij − G_ji``
with ``G = ∂L/∂A``: the upper triangle of scoRNN's skew gradient ``G − G^T``, so an elementwise
optimizer (RMSprop) moves the pair ``(A_ij, A_ji)`` exactly as scoRNN's update of ``A`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize as torch_parametrize

from .checks import one_of
from .linalg import _double_dtype, _eye_like
from .walk import named_unitary_parameters

__all__ = ["MatrixExp", "Cayley", "parametrize", "skew", "MAPS"]


def skew(X: Tensor) -> Tensor:
    """The skew-Hermitian matrix that ``X`` stores (Note [storing a skew-Hermitian matrix])."""
    U = X.triu(1)
    A = U - U.mH
    if X.is_complex():
        A = A + torch.diag_embed(1j * X.diagonal(dim1=-2, dim2=-1).imag)
    return A


def _skew_part(A: Tensor) -> Tensor:
    return (A - A.mH) / 2


def _reached(phi: nn.Module, A: Tensor, W: Tensor, why: str) -> Tensor:
    """``A``, after checking that ``φ(A)`` is ``W`` (to ``100·n·eps``): a ``ValueError`` saying ``why`` if not."""
    error = (phi(A) - W).abs().max().item() if W.numel() else 0.0
    if not error <= 100 * W.shape[-1] * torch.finfo(W.dtype).eps:
        raise ValueError(f"the {type(phi).__name__} map cannot reach this matrix (error {error:.2g}): {why}")
    return A


class MatrixExp(nn.Module):
    """``W = exp(A)`` (expRNN), computed in double precision and rounded once: torch's single-precision
    ``matrix_exp`` leaves ``‖W^H W − I‖`` at ~3e-5 already for 8×8 rotations (measured, torch 2.14),
    where expRNN's own ``expm32`` is accurate to float32. ``right_inverse(W)`` is the principal
    logarithm of ``W``, from its eigendecomposition (in double precision): ``exp(log W) = W`` for
    every unitary ``W``, and for every real orthogonal ``W`` of determinant +1 (``exp`` of a real
    ``A`` has no other); a real ``W`` of determinant −1 is a ``ValueError``."""

    def forward(self, X: Tensor) -> Tensor:
        return torch.linalg.matrix_exp(skew(X).to(_double_dtype(X))).to(X.dtype)

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> Tensor:
        wide = W.to(torch.complex128)
        eigenvalues, V = torch.linalg.eig(wide)
        log = V @ torch.diag_embed(1j * eigenvalues.angle()) @ torch.linalg.inv(V)
        log = _skew_part(log)
        log = (log if W.is_complex() else log.real).to(W.dtype)
        return _reached(self, log, W, "a real orthogonal matrix of determinant −1 is not exp of a real skew matrix")


class Cayley(nn.Module):
    """``W = D (I + A)⁻¹(I − A)`` (scoRNN, Note [row-vector baselines]), ``D`` diagonal with
    ``negative_ones`` entries −1 last.

    ``right_inverse(W)`` is ``A = (I + D W)⁻¹(I − D W)`` (the Cayley transform is its own inverse);
    it needs ``D W`` without the eigenvalue −1, which is what ``D`` is for (a real ``D W`` of
    determinant −1 always has it): otherwise a ``ValueError``."""

    def __init__(self, n: int, negative_ones: int = 0) -> None:
        super().__init__()
        if isinstance(negative_ones, bool) or not isinstance(negative_ones, int) or not 0 <= negative_ones <= n:
            raise ValueError(f"negative_ones must be an integer in 0..n={n}, got {negative_ones!r}")
        self.negative_ones = negative_ones
        signs = torch.ones(n)
        signs[n - negative_ones :] = -1
        self.register_buffer("signs", signs)  # the diagonal of D

    def forward(self, X: Tensor) -> Tensor:
        A, I = skew(X), _eye_like(X)
        return self.signs.to(X.real.dtype)[:, None] * torch.linalg.solve(I + A, I - A)

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> Tensor:
        B, I = self.signs.to(W.real.dtype)[:, None] * W, _eye_like(W)
        why = f"D·W has the eigenvalue −1; change negative_ones (now {self.negative_ones}) or the initialisation"
        try:
            A = _skew_part(torch.linalg.solve(I + B, I - B))
        except torch.linalg.LinAlgError:
            raise ValueError(f"the Cayley map cannot reach this matrix: {why}") from None
        return _reached(self, A, W, why)


MAPS = ("matrix_exp", "cayley", "torch")


def parametrize(module: nn.Module, map: str, negative_ones: int = 0) -> nn.Module:
    """Re-express every matrix that ``module`` or a submodule declares unitary as ``φ(A)``, ``φ`` one of
    ``MAPS``, with ``A`` the new trainable ``parametrizations.<name>.original``; returns ``module``.

    Square matrices: ``"matrix_exp"`` is ``MatrixExp`` (expRNN), ``"cayley"`` is ``Cayley`` (scoRNN).
    Rectangular ones, and every matrix under ``"torch"``: ``torch.nn.utils.parametrizations.orthogonal``
    (Note [rectangular baselines]).

    The matrices keep their values, except that ``negative_ones > 0`` (``"cayley"`` only, square
    matrices only) makes a matrix ``W₀`` start at ``D W₀``: scoRNN's initialisation
    ``(cayley(A₀) D)ᵀ = D cayley(−A₀)`` when ``W₀`` is ``projunn.init.cayley_``'s ``cayley(A₀)ᵀ``
    (Note [row-vector baselines]).
    """
    one_of("parametrization", map, MAPS)
    if negative_ones and map != "cayley":
        raise ValueError(
            f"negative_ones is scoRNN's scaling of the Cayley map; {map!r} takes none, got {negative_ones!r}"
        )
    matrices = list(named_unitary_parameters(module, remove_duplicate=False))  # (registering changes the modules)
    owners: dict[int, str] = {}
    for qualified_name, weight in matrices:
        if owners.setdefault(id(weight), qualified_name) != qualified_name:
            raise ValueError(
                f"{owners[id(weight)]} and {qualified_name} are one shared matrix: a parametrization re-expresses "
                "the parameter of one module, so give each module its own matrix"
            )
    for qualified_name, weight in matrices:
        owner, _, name = qualified_name.rpartition(".")
        held = getattr(module.get_submodule(owner), name)
        if held.shape != weight.shape:
            raise ValueError(
                f"{qualified_name} of shape {tuple(held.shape)} is declared as matrices of shape "
                f"{tuple(weight.shape)}; "
                "a parametrization re-expresses the last two dimensions of a tensor, so it takes only matrices "
                "declared in them (projunn.orthogonal_ with batch_dims = ndim - 2)"
            )
    if negative_ones:
        for qualified_name, weight in matrices:
            if weight.shape[-1] != weight.shape[-2]:
                raise ValueError(
                    f"negative_ones is scoRNN's scaling of a square matrix; {qualified_name} has shape "
                    f"{tuple(weight.shape)} (Note [rectangular baselines])"
                )
    for qualified_name, weight in matrices:
        owner, _, name = qualified_name.rpartition(".")
        n = weight.shape[-1]
        if map == "torch" or weight.shape[-1] != weight.shape[-2]:
            torch_map = None if map == "torch" else map
            torch_parametrizations.orthogonal(module.get_submodule(owner), name, orthogonal_map=torch_map)
            continue
        parametrization = MatrixExp() if map == "matrix_exp" else Cayley(n, negative_ones).to(weight.device)
        if negative_ones:
            with torch.no_grad():
                weight.mul_(parametrization.signs.to(weight.real.dtype)[:, None])
        torch_parametrize.register_parametrization(module.get_submodule(owner), name, parametrization)
    if not matrices:
        raise ValueError(
            f"the {map} parametrization needs a model with unitary matrices (e.g. model=urnn); "
            f"{type(module).__name__} has none"
        )
    return module

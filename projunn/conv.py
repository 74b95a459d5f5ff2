"""Full-width orthogonal (or unitary) circular convolutions, parametrized in the Fourier domain.

A circular convolution whose kernel covers the whole ``H × W`` image is diagonalized by the
2-D DFT: with the orthonormal DFT ``𝓕`` (``norm="ortho"``),

    y = 𝓕⁻¹[ K̂(u, v) · 𝓕[x](u, v) ]          (one C × C matrix K̂(u, v) per frequency)

and, by Parseval, the map is orthogonal (``‖y‖ = ‖x‖``) exactly when every ``K̂(u, v)`` is
unitary. ``OrthogonalConv2d`` stores those matrices as batches, declared in
``unitary_parameter_names``, so that ``projunn.ProjUNN`` updates all of them at once.

Note [Hermitian symmetry of a real convolution]
-----------------------------------------------
The map sends real images to real images iff ``K̂(−u, −v) = conj(K̂(u, v))`` (indices mod
``H`` and ``W``). ``rfft2`` keeps the columns ``v = 0 .. W//2`` (``W_f = W//2 + 1`` of them);
the others are conjugates of kept ones. Among the kept bins:

* a column ``v`` with ``0 < v < W/2`` has its partner column ``−v`` outside the kept range, so
  its ``H`` bins are all free: complex unitary matrices;
* the *edge* columns ``v = 0`` and, for even ``W``, ``v = W/2`` are their own partners
  (``−v ≡ v``): in them, bin ``(u, v)`` pairs with ``(−u, v)``. Only one of each pair is free
  (we keep ``u < −u mod H``, a complex unitary matrix); the other, *redundant*, bin holds its
  conjugate;
* the *self-conjugate* bins ``(u, v) ≡ (−u, −v)``, i.e. ``u ∈ {0, H/2}`` and ``v ∈ {0, W/2}``
  (halves only for even sizes; 1, 2 or 4 bins), must equal their own conjugate: real
  orthogonal matrices.

So with ``F_r = (1 + [H even]) (1 + [W even])`` self-conjugate bins, there are
``F_c = (H·W − F_r) / 2`` free complex bins. The layer keeps ``weight`` of shape
``(F_c, C, C)`` (complex) and ``weight_real`` of shape ``(F_r, C, C)`` (real). A forward pass
multiplies each free frequency's channels by ``weight`` where it lies and the self-conjugate
ones by ``weight_real``; a redundant bin's result, its partner's conjugate, is never formed: the
inverse transform counts the free bin for both (Note [spectra as matrix products]). Because the
redundant bins are conjugates *by construction*, the operator is exactly real and orthogonal
whatever values the free matrices take between projUNN steps (no "hermitize" pass), and the
gradient of a redundant bin flows back to its free partner.
Degrees of freedom: ``F_c·C² + F_r·C(C−1)/2`` (the dimension of the group of real
shift-equivariant orthogonal maps), stored in ``2·F_c·C² + F_r·C² = H·W·C²`` reals, as many
as an unconstrained full-width kernel.

Note [spectra as matrix products]
---------------------------------
A forward pass is three linear maps per image: the 2-D DFT, a ``C_out × C_in`` matrix at each
frequency, the inverse DFT. The matrices are batched products over the frequencies, which BLAS
runs at speed only when each frequency's ``B × C`` block has a unit stride and, on the CPU, when
each product writes one contiguous tensor (otherwise PyTorch multiplies one matrix at a time).
``torch.fft`` puts the transformed dimensions innermost, ``(B, C, H, W_f)``: around its FFTs the
products needed a transposing copy of every spectrum, forward and backward, which made ``copy_``
30 % of the orthogonal ResNet9's forward+backward, nearly as much as the products (docs/speed.md).
Here the transforms are matrix products too, each writing the layout the next one reads. For a
real layer, ``x`` of shape ``(B, C, H, W)``:

1. Along ``w``: ``Z = A_W xᵀ``, with ``x`` viewed ``(B·C·H, W)`` and ``A_W`` the real DFT
   (``_real_dft``, ``W × W``: rows ``v = 0``; ``Re`` of each ``0 < v < W/2``; their ``Im``;
   ``v = W/2`` for even ``W``; scale ``1/√W``). ``Z`` is ``(W, B·C, H)``: per row a
   ``(B·C) × H`` matrix, ``h`` contiguous. The conjugate coefficients ``v > W/2`` are never formed.
2. Along ``h``, into *planes*: ``(H·W, B, C)`` reals, one ``B × C`` plane per real degree of
   freedom of the spectrum: the real parts of the ``F_c`` free bins in ``weight``'s order, then
   their imaginary parts, then the ``F_r`` self-conjugate bins in ``weight_real``'s order. An
   interior column (``0 < v < W/2``) is complex, ``z = Z_r + i·Z_i``: with ``C_H`` and ``S_H`` the
   ``H × H`` matrices ``cos(2π·u·h/H)/√H`` and ``sin(2π·u·h/H)/√H``, its DFT is
   ``X_r = C_H Z_r + S_H Z_i``, ``X_i = C_H Z_i − S_H Z_r``: four batched products over the
   interior columns (two accumulating), each writing the contiguous planes of its bins. An edge
   column (``v = 0``, ``v = W/2``) is real: ``A_H`` gives its free bins' ``Re`` and ``Im`` and its
   self-conjugate bins; its redundant bins are never formed.
3. The matrices: ``Y_r = X_r K_rᵀ − X_i K_iᵀ`` and ``Y_i = X_r K_iᵀ + X_i K_rᵀ``, four batched
   products over all free bins, and one with ``weight_real`` over the self-conjugate bins; they
   read the planes where they lie. ``K_r``, ``K_i`` are one copy of the matrices
   (``F_c·C_out·C_in`` numbers), not of the images.
4. The inverse: step 2 transposed, then ``y = Zᵀ S_W``, written ``(B, C, H, W)``, with
   ``S_W = D A_W``, where ``D`` doubles the rows of the complex coefficients (each stands for
   itself and its conjugate): ``S_Wᵀ A_W = I``, the irfft of the rfft. An edge column's inverse is
   ``(D A_H)ᵀ``: there a free bin stands for its redundant partner too. The interior columns' DFT
   is unitary, its inverse its transpose.

Backward: the adjoint of every step is a product of the same shape. ``∂Y`` is step 1–2 applied to
``∂y`` with the synthesis matrices ``S_W``, ``D A_H`` (the adjoint of ``y = Zᵀ S`` is ``S ∂yᵀ``);
``∂X_r = ∂Y_r K_r + ∂Y_i K_i`` and ``∂X_i = ∂Y_i K_r − ∂Y_r K_i``; ``∂x`` is step 4 applied to
``∂X`` with the analysis matrices; ``∂K_r = ∂Y_rᵀ X_r + ∂Y_iᵀ X_i`` and
``∂K_i = ∂Y_iᵀ X_r − ∂Y_rᵀ X_i`` (PyTorch's complex gradient ``∂L/∂Re + i·∂L/∂Im``). The share of
a redundant bin in its free partner's gradient comes in through ``D``: nothing is gathered or
scattered. A bias adds ``b·√(H·W)`` to the DC plane, its gradient is that plane's sum.

The transforms equal ``rfft2`` and ``irfft2`` on Hermitian spectra (a redundant bin the conjugate
of its partner, as the layer's always are), so the layer's values are its FFT form's to rounding.
Cost: a DFT of length ``n`` as a product takes ``n²`` multiply-adds a line against
``O(n log n)`` for an FFT; at the sizes of a full-width convolution (``n ≤ 32``) either is bound
by memory traffic, and each stage here reads and writes its arrays once (step 2 twice, where it
accumulates); docs/speed.md times them against ``torch.fft``'s. The
transforms run in full precision whatever the float32 matmul setting (TF32, oneDNN bf16;
``linalg.full_precision``), as ``torch.fft`` did; the frequency matrices' products follow the
setting, as before; autocast is off inside. The complex layer: step 1 takes the ``(re, im)``
pairs, ``(B·C·H, 2W)``, with the ``2W × 2W`` real form of the complex DFT (``_complex_dft``),
every column is interior and every bin free. Degenerate sizes: ``W ≤ 2`` has no interior column,
``H ≤ 2`` no free edge bin, and a 2 × 2 image no complex bin (``weight`` is ``None``).

Note [channel growth]
---------------------
With ``C_out > C_in`` the layer widens its input to ``C = C_out`` channels, ``x̃ = R x`` with an
``R`` of orthonormal columns (so ``‖x̃‖ = ‖x‖``), and applies the ``C × C`` unitary matrices:
``K̂ R`` per frequency, an isometry. Rather than widening every image, the layer multiplies by
``K̂ R`` (``C_out × C_in``), which costs ``O(C_out·C)`` per frequency and keeps the products at
``C_in`` columns.

* ``"zeros"``: ``x̃ = [x; 0]``, ``K̂ R`` is the first ``C_in`` columns of ``K̂``. At the identity
  initialisation the new channels are zero.
* ``"repeat"``: channel ``j`` of ``x̃`` is channel ``j mod C_in`` of ``x`` divided by the square
  root of its number of copies; ``K̂ R`` sums the columns of each copy, scaled. The projUNN
  authors' layer repeats the channels the same way (``x.repeat``, then the first ``C_out``)
  without the scaling, which is not an isometry: ``‖x̃‖ = sqrt(2)‖x‖`` when ``C_out = 2 C_in``.
  In their ResNet9 every convolution is followed by BatchNorm, which removes a constant factor
  per channel, so the two agree there up to BatchNorm's ``eps`` whenever every channel has the
  same number of copies (``C_out`` a multiple of ``C_in``: 64 → 128, 128 → 256), and at the
  identity initialisation in any case (3 → 64: 22 or 21 copies). With the identity
  initialisation, repetition is what makes every output channel start alive.

The complex variant (``complex=True``) maps complex images to complex images with ``fft2``:
all ``H·W`` bins are free unitary matrices, ``weight`` of shape ``(H·W, C, C)``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .checks import one_of, positive_int
from .init import INITIALISERS
from .linalg import full_precision

__all__ = ["OrthogonalConv2d", "CHANNEL_GROWTHS", "kernel_from_matrices", "matrices_from_kernel"]

CHANNEL_GROWTHS = ("zeros", "repeat")


def _pair(value: object, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in pair)
    ):
        raise ValueError(f"{name} must be a positive integer or a pair (H, W) of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _complex_twin(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _real_layout(H: int, W: int) -> tuple[int, Tensor, int, int]:
    """Where each kept ``rfft2`` bin reads its matrix (Note [Hermitian symmetry of a real convolution]).

    Bins are numbered column by column, ``p = v·H + u`` for ``v < W_f = W//2 + 1``. The interior
    columns ``1 .. (W−1)//2`` come right after column 0, so their ``n_int = H·((W−1)//2)`` bins
    are the block ``[H, H + n_int)``, and they hold ``weight[:n_int]`` in that order. The edge
    columns (0 and, for even ``W``, ``W/2``) are listed in ``edges``: first their ``F_e`` free
    bins, holding ``weight[n_int:]``, then the ``F_r`` self-conjugate bins, holding
    ``weight_real``, then the ``F_e`` redundant bins, each holding the conjugate of the matrix of
    its partner, in the partners' order. So the edge matrices are
    ``[weight[n_int:], weight_real, conj(weight[n_int:])]``.

    Returns ``(n_int, edges, F_c, F_r)`` with ``F_c = n_int + F_e``.
    """
    Wf = W // 2 + 1
    v = torch.arange(Wf).repeat_interleave(H)
    u = torch.arange(H).repeat(Wf)
    partner_u = (-u) % H
    edge = (2 * v) % W == 0  # columns 0 and (W even) W/2, where (u, v) pairs with (−u, v)
    free = (edge & (u < partner_u)).nonzero().flatten()
    self_conjugate = (edge & (u == partner_u)).nonzero().flatten()
    redundant = v[free] * H + partner_u[free]
    n_int = H * ((W - 1) // 2)
    return n_int, torch.cat([free, self_conjugate, redundant]), n_int + len(free), len(self_conjugate)


def _edge_kernel(free: Tensor | None, real: Tensor) -> Tensor:
    """The edge-column matrices ``[free, real, conj(free)]`` (see ``_real_layout``), complex;
    ``free`` holds the free edge bins' matrices (``None`` if there are none)."""
    real = real.to(_complex_twin(real.dtype))
    return real if free is None else torch.cat([free, real, free.conj()])


def kernel_from_matrices(weight: Tensor | None, weight_real: Tensor, image_size: tuple[int, int]) -> Tensor:
    """A real ``OrthogonalConv2d``'s matrices on the ``rfft2`` grid, ``(H, W//2 + 1, ...)`` complex.

    ``weight`` ``(F_c, ...)`` and ``weight_real`` ``(F_r, ...)`` are laid out as the layer's
    parameters of the same names (``None`` for ``weight`` when ``F_c = 0``); the trailing
    dimensions are anything (matrices, vectors). Each redundant edge bin gets the conjugate of
    its partner's entry (Note [Hermitian symmetry of a real convolution]). ``layer.kernel()`` is
    this applied to the matrices the layer applies. The inverse is ``matrices_from_kernel``.
    """
    H, W = image_size
    n_int, edges, F_c, F_r = _real_layout(H, W)
    if (0 if weight is None else len(weight)) != F_c or len(weight_real) != F_r:
        raise ValueError(
            f"a {H}x{W} image has {F_c} free and {F_r} self-conjugate bins, got weight of "
            f"{None if weight is None else len(weight)} and weight_real of {len(weight_real)}"
        )
    parts = [] if weight is None else [weight[:n_int]]
    Ke = _edge_kernel(None if weight is None else weight[n_int:], weight_real)
    order = torch.cat([torch.arange(H, H + n_int), edges]).argsort().to(Ke.device)
    return torch.cat(parts + [Ke]).index_select(0, order).unflatten(0, (-1, H)).transpose(0, 1)


def matrices_from_kernel(kernel: Tensor, image_size: tuple[int, int]) -> tuple[Tensor | None, Tensor]:
    """The inverse of ``kernel_from_matrices``: ``(weight, weight_real)`` from a grid ``(H, W//2 + 1, ...)``.

    Reads the free bins as they are and the real part of the self-conjugate ones; the redundant
    edge bins are not read. So it inverts ``kernel_from_matrices`` exactly, and maps a grid
    without the Hermitian symmetry of a real convolution (e.g. the projUNN authors' layer, a free
    matrix at every ``rfft2`` bin) to the real layer that agrees with it on its free bins.
    """
    H, W = image_size
    Wf = W // 2 + 1
    if tuple(kernel.shape[:2]) != (H, Wf):
        raise ValueError(f"expected a kernel of shape ({H}, {Wf}, ...) for a {H}x{W} image, got {tuple(kernel.shape)}")
    n_int, edges, F_c, F_r = _real_layout(H, W)
    F_e = F_c - n_int
    columns = kernel.transpose(0, 1).reshape(Wf * H, *kernel.shape[2:])  # bin v·H + u
    edges = edges.to(kernel.device)
    weight = torch.cat([columns[H : H + n_int], columns[edges[:F_e]]]) if F_c else None
    return weight, columns[edges[F_e : F_e + F_r]].real


# The transforms of Note [spectra as matrix products], public (not in __all__) so that a benchmark can time
# them alone (scripts/bench/conv.py --floor): frequency_grid → dft_matrices → spectral_analysis, spectral_synthesis.
class FrequencyGrid(NamedTuple):
    """Where each stage of Note [spectra as matrix products] reads and writes, for one image size.

    ``rows``: rows of the ``w``-stage's output, ``W`` for real images (``v = 0``; ``Re`` of the
    interior columns; their ``Im``; ``v = W/2`` for even ``W``), ``2W`` for complex ones (``Re``
    of every column, then ``Im``); and as many planes per ``h``: ``H·rows``. ``columns``: the
    complex columns, whose ``Re`` rows start at row ``first``. ``edges``: the rows of the real edge
    columns (``v = 0`` and, for even ``W``, ``v = W/2``; none for complex images), each with
    ``free`` free bins (from bin ``free_start + e·free``) and ``own`` self-conjugate bins.
    ``complex_bins``: ``F_c``; planes ``[0, F_c)`` hold their real parts, ``[F_c, 2F_c)`` their
    imaginary parts, the rest the self-conjugate bins.
    """

    H: int
    W: int
    rows: int
    first: int
    columns: int
    edges: tuple[int, ...]
    free: int
    own: int
    free_start: int
    complex_bins: int


def frequency_grid(H: int, W: int, complex: bool) -> FrequencyGrid:
    if complex:
        return FrequencyGrid(H, W, 2 * W, 0, W, (), 0, 0, 0, H * W)
    n_int, _, F_c, _ = _real_layout(H, W)
    edges = (0, W - 1) if W % 2 == 0 else (0,)
    return FrequencyGrid(H, W, W, 1, (W - 1) // 2, edges, (H - 1) // 2, 1 + (H % 2 == 0), n_int, F_c)


def _real_dft(n: int) -> Tensor:
    """``A_n``, the orthonormal DFT ``e^{−2πi·k·j/n}/√n`` of a real signal of length ``n`` as an
    ``n × n`` real matrix (float64): row ``k = 0``; ``Re`` of each ``0 < k < n/2``; their ``Im``;
    ``k = n/2`` for even ``n``. The other coefficients are conjugates of these."""
    k, j = torch.arange(n // 2 + 1)[:, None], torch.arange(n)
    angle = (k * j % n).double() * (2 * math.pi / n)
    re, im = angle.cos() / math.sqrt(n), -angle.sin() / math.sqrt(n)
    m = (n + 1) // 2
    return torch.cat([re[:1], re[1:m], im[1:m], re[n // 2 :] if n % 2 == 0 else re[:0]])


def _doubling(n: int) -> Tensor:
    """``D``, the row weights of ``_real_dft(n)``'s inverse ``(D A_n)ᵀ``: 2 on the rows of a complex
    coefficient (it stands for itself and its conjugate), 1 on the real ones."""
    weights = torch.full((n, 1), 2.0, dtype=torch.float64)
    weights[0] = 1
    if n % 2 == 0:
        weights[-1] = 1
    return weights


def _complex_dft(n: int) -> Tensor:
    """The orthonormal DFT of a complex signal of length ``n`` as a ``2n × 2n`` real matrix
    (float64): rows ``Re`` of every ``k``, then ``Im``; columns ``(j, re/im)``, the order of
    ``torch.view_as_real``."""
    k, j = torch.arange(n)[:, None], torch.arange(n)
    angle = (k * j % n).double() * (2 * math.pi / n)
    c, s = angle.cos() / math.sqrt(n), angle.sin() / math.sqrt(n)
    # e^{−iθ}(a + ib) = (a cos θ + b sin θ) + i(b cos θ − a sin θ)
    return torch.cat([torch.stack([c, s], -1), torch.stack([-s, c], -1)]).reshape(2 * n, 2 * n)


class DFTMatrices(NamedTuple):
    """The constant matrices of Note [spectra as matrix products] for one grid, dtype and device.

    ``analysis`` and ``synthesis``: ``(along w, along h to the free bins' Re, to their Im, to the
    self-conjugate bins)``; the last three are ``None`` without edge columns. ``cos``, ``sin``:
    ``cos(2π·u·h/H)/√H`` and ``sin(2π·u·h/H)/√H``, ``H × H``, for the complex columns.
    """

    analysis: tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]
    synthesis: tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]
    cos: Tensor
    sin: Tensor


@functools.lru_cache(maxsize=64)
def dft_matrices(grid: FrequencyGrid, dtype: torch.dtype, device: torch.device) -> DFTMatrices:
    H, W = grid.H, grid.W
    if grid.edges:
        A_w, A_h = _real_dft(W), _real_dft(H)
        S_w, S_h = _doubling(W) * A_w, _doubling(H) * A_h
        m = grid.free
        rows = [slice(1, 1 + m), slice(1 + m, 1 + 2 * m), [0, H - 1] if H % 2 == 0 else [0]]
        analysis = (A_w, *(A_h[r] for r in rows))
        synthesis = (S_w, *(S_h[r] for r in rows))
    else:  # complex images: the DFT is unitary, its inverse its transpose
        analysis = synthesis = (_complex_dft(W), None, None, None)
    u = torch.arange(H)[:, None]
    angle = (u * u.T % H).double() * (2 * math.pi / H)

    def put(m: Tensor | None) -> Tensor | None:
        return None if m is None else m.to(dtype=dtype, device=device).contiguous()

    cos, sin = put(angle.cos() / math.sqrt(H)), put(angle.sin() / math.sqrt(H))
    return DFTMatrices(tuple(map(put, analysis)), tuple(map(put, synthesis)), cos, sin)


def spectral_analysis(x: Tensor, grid: FrequencyGrid, spectra: DFTMatrices, matrices: tuple) -> Tensor:
    """``(B, C, H, W_in)`` real (``W_in = 2W``: a complex image's ``(re, im)`` pairs) → planes
    ``(H·rows, B, C)``, by the products of Note [spectra as matrix products], with ``matrices`` the
    analysis ones (the transform) or the synthesis ones (the adjoint of the inverse)."""
    B, C, H = x.shape[:3]
    BC, F_c = B * C, grid.complex_bins
    along_w, free_re, free_im, own = matrices
    Z = torch.mm(along_w, x.reshape(-1, x.shape[-1]).mT).view(grid.rows, BC, H)  # row = coefficient in w
    planes = x.new_empty(H * grid.rows, BC)
    if grid.columns:  # complex columns: Re = C·Z_r + S·Z_i, Im = C·Z_i − S·Z_r
        n, f = grid.columns, grid.first
        Z_r, Z_i = Z[f : f + n].mT, Z[f + n : f + 2 * n].mT  # (n, H, B·C)
        P_r, P_i = planes[: n * H].view(n, H, BC), planes[F_c : F_c + n * H].view(n, H, BC)
        cos, sin = spectra.cos.expand(n, H, H), spectra.sin.expand(n, H, H)
        torch.bmm(cos, Z_r, out=P_r)
        P_r.baddbmm_(sin, Z_i)
        torch.bmm(cos, Z_i, out=P_i)
        P_i.baddbmm_(sin, Z_r, alpha=-1)
    for e, row in enumerate(grid.edges):  # real columns: their free and self-conjugate bins only
        Z_e = Z[row].mT
        if grid.free:
            start = grid.free_start + e * grid.free
            torch.mm(free_re, Z_e, out=planes[start : start + grid.free])
            torch.mm(free_im, Z_e, out=planes[F_c + start : F_c + start + grid.free])
        start = 2 * F_c + e * grid.own
        torch.mm(own, Z_e, out=planes[start : start + grid.own])
    return planes.view(-1, B, C)


def spectral_synthesis(planes: Tensor, grid: FrequencyGrid, spectra: DFTMatrices, matrices: tuple) -> Tensor:
    """Planes ``(H·rows, B, C)`` → ``(B, C, H, W_in)``: the inverse of ``spectral_analysis`` with the
    synthesis ``matrices``, its adjoint with the analysis ones (Note [spectra as matrix products])."""
    _, B, C = planes.shape
    BC, H, F_c = B * C, grid.H, grid.complex_bins
    along_w, free_re, free_im, own = matrices
    planes = planes.view(-1, BC)
    Z = planes.new_empty(grid.rows, BC, H)
    if grid.columns:  # z_r = Y_rᵀ C − Y_iᵀ S, z_i = Y_rᵀ S + Y_iᵀ C
        n, f = grid.columns, grid.first
        P_r, P_i = planes[: n * H].view(n, H, BC).mT, planes[F_c : F_c + n * H].view(n, H, BC).mT
        Z_r, Z_i = Z[f : f + n], Z[f + n : f + 2 * n]  # (n, B·C, H)
        cos, sin = spectra.cos.expand(n, H, H), spectra.sin.expand(n, H, H)
        torch.bmm(P_r, cos, out=Z_r)
        Z_r.baddbmm_(P_i, sin, alpha=-1)
        torch.bmm(P_r, sin, out=Z_i)
        Z_i.baddbmm_(P_i, cos)
    for e, row in enumerate(grid.edges):
        start = 2 * F_c + e * grid.own
        torch.mm(planes[start : start + grid.own].mT, own, out=Z[row])
        if grid.free:
            start = grid.free_start + e * grid.free
            Z[row].addmm_(planes[start : start + grid.free].mT, free_re)
            Z[row].addmm_(planes[F_c + start : F_c + start + grid.free].mT, free_im)
    return torch.mm(Z.view(grid.rows, -1).mT, along_w).view(B, C, H, -1)


def _as_real(x: Tensor) -> Tensor:
    return torch.view_as_real(x).flatten(-2) if x.is_complex() else x


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off inside the layer's products: they write into float planes (``out=``), and its
    transforms keep full precision as ``torch.fft``'s did."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class _SpectralConv(torch.autograd.Function):
    """``y = 𝓕⁻¹[K̂ 𝓕[x] + 𝓕[b]]`` for ``x`` of shape ``(B, C_a, H, W)`` (real, or complex for a
    complex ``grid``) by Note [spectra as matrix products]; returns ``(B, C_b, H, W)``.

    The matrices come as the layer applies them: ``free`` ``(F_c, C_b, C_a)`` complex (``None`` if
    ``F_c = 0``), in ``weight``'s order; ``real`` ``(F_r, C_b, C_a)`` in ``weight_real``'s order
    (``None`` for complex images); ``bias`` ``(C_b,)`` or ``None``.
    """

    @staticmethod
    def forward(ctx, x, free, real, bias, grid):  # type: ignore[override]
        spectra = dft_matrices(grid, x.real.dtype, x.device)
        F_c = grid.complex_bins
        K = None if free is None else torch.view_as_real(free.resolve_conj()).permute(3, 0, 1, 2).contiguous()
        with _no_autocast(x.device):
            with full_precision():
                X = spectral_analysis(_as_real(x.contiguous()), grid, spectra, spectra.analysis)
            Y = X.new_empty(X.shape[:2] + ((free if free is not None else real).shape[1],))
            if F_c:  # Y_r = X_r K_rᵀ − X_i K_iᵀ, Y_i = X_r K_iᵀ + X_i K_rᵀ
                X_r, X_i, Y_r, Y_i = X[:F_c], X[F_c : 2 * F_c], Y[:F_c], Y[F_c : 2 * F_c]
                torch.bmm(X_r, K[0].mT, out=Y_r)
                Y_r.baddbmm_(X_i, K[1].mT, alpha=-1)
                torch.bmm(X_r, K[1].mT, out=Y_i)
                Y_i.baddbmm_(X_i, K[0].mT)
            if real is not None:
                torch.bmm(X[2 * F_c :], real.mT, out=Y[2 * F_c :])
            if bias is not None:  # a constant image: b·sqrt(H·W) at DC (Note [spectra as matrix products])
                scale = math.sqrt(grid.H * grid.W)
                if real is None:
                    Y[0].add_(bias.real, alpha=scale)
                    Y[F_c].add_(bias.imag, alpha=scale)
                else:
                    Y[2 * F_c].add_(bias, alpha=scale)
            with full_precision():
                y = spectral_synthesis(Y, grid, spectra, spectra.synthesis)
        ctx.save_for_backward(X, K, real)
        ctx.grid, ctx.complex = grid, x.is_complex()
        return torch.view_as_complex(y.unflatten(-1, (-1, 2))) if ctx.complex else y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        X, K, real = ctx.saved_tensors
        grid = ctx.grid
        spectra = dft_matrices(grid, X.dtype, X.device)
        F_c = grid.complex_bins
        dx = dfree = dreal = dbias = None
        with _no_autocast(X.device):
            with full_precision():
                dY = spectral_analysis(_as_real(dy.contiguous()), grid, spectra, spectra.synthesis)
            dY_r, dY_i = dY[:F_c], dY[F_c : 2 * F_c]
            if ctx.needs_input_grad[0]:  # ∂X_r = ∂Y_r K_r + ∂Y_i K_i, ∂X_i = ∂Y_i K_r − ∂Y_r K_i
                dX = dY.new_empty(X.shape)
                if F_c:
                    dX_r, dX_i = dX[:F_c], dX[F_c : 2 * F_c]
                    torch.bmm(dY_r, K[0], out=dX_r)
                    dX_r.baddbmm_(dY_i, K[1])
                    torch.bmm(dY_i, K[0], out=dX_i)
                    dX_i.baddbmm_(dY_r, K[1], alpha=-1)
                if real is not None:
                    torch.bmm(dY[2 * F_c :], real, out=dX[2 * F_c :])
                with full_precision():
                    dx = spectral_synthesis(dX, grid, spectra, spectra.analysis)
                dx = torch.view_as_complex(dx.unflatten(-1, (-1, 2))) if ctx.complex else dx
            if ctx.needs_input_grad[1]:  # ∂K_r = ∂Y_rᵀ X_r + ∂Y_iᵀ X_i, ∂K_i = ∂Y_iᵀ X_r − ∂Y_rᵀ X_i
                X_r, X_i = X[:F_c], X[F_c : 2 * F_c]
                dK = torch.bmm(dY_r.mT, X_r).baddbmm_(dY_i.mT, X_i)
                dK_i = torch.bmm(dY_i.mT, X_r).baddbmm_(dY_r.mT, X_i, alpha=-1)
                dfree = torch.complex(dK, dK_i)
            if ctx.needs_input_grad[2]:
                dreal = torch.bmm(dY[2 * F_c :].mT, X[2 * F_c :])
            if ctx.needs_input_grad[3]:
                scale = math.sqrt(grid.H * grid.W)
                if ctx.complex:
                    dbias = torch.complex(dY[0].sum(0), dY[F_c].sum(0)) * scale
                else:
                    dbias = dY[2 * F_c].sum(0) * scale
        return dx, dfree, dreal, dbias, None


class OrthogonalConv2d(nn.Module):
    """Full-width circular convolution that is orthogonal (real) or unitary (``complex=True``).

    ``y = S( 𝓕⁻¹[ K̂(u, v) 𝓕[x](u, v) ] ) + b``, with ``𝓕`` the orthonormal 2-D DFT over the
    last two dimensions, ``K̂(u, v)`` a unitary ``C × C`` matrix per frequency
    (Note [Hermitian symmetry of a real convolution]) and ``S`` the subsampling
    ``y[..., ::s_h, ::s_w]``. The equivalent spatial kernel covers the whole image, with
    circular (periodic) boundaries.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``. The unitary matrices are
            ``C × C`` with ``C = max(C_in, C_out)``. If ``C_out > C_in`` the input is widened to
            ``C_out`` channels by ``channel_growth`` (Note [channel growth]): the map is an
            isometry, ``‖y‖ = ‖x‖``. If ``C_out < C_in`` the first ``C_out`` output channels of a
            ``C_in``-channel orthogonal map are kept (the first ``C_out`` rows of each ``K̂``): a
            co-isometry, so ``‖y‖ ≤ ‖x‖`` (a contraction).
        image_size: ``H`` or ``(H, W)``; the layer only accepts inputs of exactly this size.
        stride: ``s`` or ``(s_h, s_w)``: keep every ``s``-th pixel of the orthogonal map's output
            (a contraction); the output is ``(ceil(H / s_h), ceil(W / s_w))``.
        bias: add a learnable per-channel bias (zeros at initialisation).
        init: initialiser of the unitary matrices, a key of ``projunn.init.INITIALISERS``:
            ``"haar"`` (a random orthogonal/unitary convolution), ``"identity"`` (the identity
            map), ``"henaff"``, ``"cayley"``.
        complex: a unitary convolution of complex images (``fft2``; every frequency free).
        channel_growth: ``"zeros"`` (pad the input with zero channels) or ``"repeat"`` (repeat its
            channels, the projUNN authors' layer, scaled to keep the norm); Note [channel growth].
            The scale of each input channel is the buffer ``repeat_scale`` (``1/sqrt(copies)``; not
            saved): filled with 1 it is the authors' unscaled repetition, which the lockstep against
            their code sets to take that difference out.
        dtype: real dtype of the layer (default: torch's default); complex weights use its
            complex twin. Prefer this argument to ``Module.to(dtype)``, which PyTorch applies
            to complex parameters too.
        device: device of the parameters.

    Shapes: input ``(..., C_in, H, W)``, output ``(..., C_out, ceil(H/s_h), ceil(W/s_w))``.
    Parameters: ``weight`` (complex, ``(F_c, C, C)``; ``(H·W, C, C)`` for ``complex=True``;
    ``None`` for images without a complex bin, e.g. 2×2) and ``weight_real`` (real,
    ``(F_r, C, C)``; ``None`` for ``complex=True``), both in ``unitary_parameter_names``.
    ``weight`` lists frequencies column by column (``v`` major), the interior columns first and
    the free bins of the edge columns last (``_real_layout``); ``kernel()`` and
    ``full_kernel()`` put the matrices on the ``(u, v)`` grid.

    Cost per image: the DFT of ``C_in·H·W`` values and the inverse DFT of ``C_out·H·W`` values, as
    matrix products (about ``W + 2H`` multiply-adds per value), and at each of the ``(H·W + F_r)/2``
    free and self-conjugate frequencies a ``C_out × C_in`` matrix-vector product, batched over
    the frequencies, reading ``weight`` and ``weight_real`` in place (Note [spectra as matrix
    products]).
    """

    unitary_parameter_names = ("weight", "weight_real")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        bias: bool = False,
        init: str = "haar",
        complex: bool = False,
        channel_growth: str = "zeros",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            positive_int(name, value)
        one_of("init", init, INITIALISERS)
        one_of("channel_growth", channel_growth, CHANNEL_GROWTHS)
        real = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(real, torch.dtype) or not real.is_floating_point:
            raise ValueError(
                f"dtype must be a real floating dtype (complex weights use its complex twin), got {dtype!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size = _pair(image_size, "image_size")
        self.stride = _pair(stride, "stride")
        self.init, self.complex, self.channel_growth = init, bool(complex), channel_growth
        H, W = self.image_size
        C = max(in_channels, out_channels)
        copies = torch.bincount(torch.arange(C) % in_channels, minlength=in_channels)
        self.register_buffer("repeat_scale", copies.to(real).rsqrt(), persistent=False)
        cdtype = _complex_twin(real)
        self._grid = frequency_grid(H, W, self.complex)
        if self.complex:
            self.num_complex, self.num_real = H * W, 0
            self.weight = nn.Parameter(torch.empty(H * W, C, C, dtype=cdtype, device=device))
            self.register_parameter("weight_real", None)
        else:
            _, _, F_c, F_r = _real_layout(H, W)
            self.num_complex, self.num_real = F_c, F_r
            if F_c:
                self.weight = nn.Parameter(torch.empty(F_c, C, C, dtype=cdtype, device=device))
            else:
                self.register_parameter("weight", None)
            self.weight_real = nn.Parameter(torch.empty(F_r, C, C, dtype=real, device=device))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, dtype=cdtype if self.complex else real, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fill the unitary matrices with ``init`` and zero the bias."""
        for name in self.unitary_parameter_names:
            param = getattr(self, name)
            if param is not None:
                INITIALISERS[self.init](param)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    @property
    def output_size(self) -> tuple[int, int]:
        """``(ceil(H / s_h), ceil(W / s_w))``."""
        (H, W), (sh, sw) = self.image_size, self.stride
        return -(-H // sh), -(-W // sw)

    def _real_dtype(self) -> torch.dtype:
        return self.weight.real.dtype if self.complex else self.weight_real.dtype

    def kernel(self) -> Tensor:
        """The channel-mixing matrices at every kept frequency, ``(H, W_f, C_out, C_in)`` complex:
        ``W_f = W//2 + 1`` (the ``rfft2`` bins) for the real layer, ``W_f = W`` for the complex one.

        Differentiable in the parameters. For analysis and tests: ``forward`` multiplies by the
        stored matrices without assembling this (Note [spectra as matrix products]). For the real
        layer this is ``kernel_from_matrices`` of the applied matrices; ``matrices_from_kernel``
        takes a kernel back to the layer's ``(weight, weight_real)``.
        """
        H, W = self.image_size
        free, real = self._factors()
        if self.complex:
            return free.unflatten(0, (W, H)).transpose(0, 1)
        return kernel_from_matrices(free, real, self.image_size)

    def full_kernel(self) -> Tensor:
        """``K̂(u, v)`` on the full ``fft2`` grid, ``(H, W, C_out, C_in)`` complex.

        For the real layer the columns past ``W//2`` are ``conj(K̂(−u, −v))``, so that
        ``𝓕⁻¹[K̂ 𝓕[x]]`` computed with complex FFTs equals ``forward`` (before stride and bias).
        For analysis and tests.
        """
        H, W = self.image_size
        kept = self.kernel()
        if self.complex:
            return kept
        Wf = W // 2 + 1
        u = torch.arange(H, device=kept.device)
        v = torch.arange(Wf, W, device=kept.device)
        mirrored = kept[(-u) % H][:, (-v) % W].conj()
        return torch.cat([kept, mirrored], dim=1)

    def _check(self, x: Tensor, channels: int, size: tuple[int, int], what: str) -> None:
        if x.ndim < 3 or x.shape[-3] != channels or tuple(x.shape[-2:]) != size:
            raise ValueError(
                f"Expected {what} of shape (..., C={channels}, H={size[0]}, W={size[1]}), got shape {tuple(x.shape)}"
            )
        real = self._real_dtype()
        if x.is_complex() and not self.complex:
            raise ValueError(
                f"This OrthogonalConv2d is real and takes real {what}s, got dtype {x.dtype}; "
                "use complex=True for complex images"
            )
        expected = (real, _complex_twin(real)) if self.complex else (real,)
        if x.dtype not in expected:
            raise ValueError(f"Expected {what} of dtype {' or '.join(map(str, expected))} (the layer's), got {x.dtype}")

    def _columns(self, K: Tensor) -> Tensor:
        """The ``C_out × C_in`` matrices the layer applies, from the stored ``C_out × C`` rows ``K``
        (Note [channel growth])."""
        i, C = self.in_channels, K.shape[-1]
        if self.channel_growth == "zeros" or C == i:
            return K[..., :i]
        copies = -(-C // i)
        K = torch.nn.functional.pad(K, (0, copies * i - C))
        return K.unflatten(-1, (copies, i)).sum(-2) * self.repeat_scale

    def _factors(self, adjoint: bool = False) -> tuple[Tensor | None, Tensor | None]:
        """``(free, real)``: the ``C_out × C_in`` matrices the layer applies (their adjoints,
        ``C_in × C_out``, for ``adjoint=True``); ``real`` is ``None`` for the complex layer."""
        o = self.out_channels
        free = None if self.weight is None else self._columns(self.weight[:, :o])
        real = None if self.weight_real is None else self._columns(self.weight_real[:, :o])
        if adjoint:
            free = None if free is None else free.mH
            real = None if real is None else real.mT
        return free, real

    def _mix(self, x: Tensor, adjoint: bool = False, bias: Tensor | None = None) -> Tensor:
        """``𝓕⁻¹[K̂ 𝓕[x] + 𝓕[b]]`` (``K̂^H`` for ``adjoint=True``) for ``x`` of shape
        ``(B, C_a, H, W)`` and an optional per-channel bias ``b``. A constant image has a
        single nonzero coefficient, ``b·sqrt(H·W)`` at DC, so the bias costs ``B·C_b``
        additions, and subsampling after it changes nothing."""
        if self.complex:
            x = x.to(_complex_twin(self._real_dtype()))
        free, real = self._factors(adjoint)
        return _SpectralConv.apply(x, free, real, bias, self._grid)  # Note [spectra as matrix products]

    def forward(self, x: Tensor) -> Tensor:
        """``x`` of shape ``(..., C_in, H, W)`` → ``(..., C_out, ceil(H/s_h), ceil(W/s_w))``."""
        self._check(x, self.in_channels, self.image_size, "input")
        batch = x.shape[:-3]
        y = self._mix(x.reshape((-1,) + tuple(x.shape[-3:])), bias=self.bias)
        sh, sw = self.stride
        if sh > 1 or sw > 1:
            y = y[..., ::sh, ::sw]
        return y.reshape(batch + tuple(y.shape[-3:]))

    def adjoint(self, y: Tensor) -> Tensor:
        """The adjoint (transpose; conjugate transpose for ``complex=True``) of the linear part
        of ``forward``, ``x ↦ S(𝓕⁻¹[K̂ 𝓕[x]])`` (no bias): ``x = 𝓕⁻¹[K̂^H 𝓕[Sᵀ y]]``, where
        ``Sᵀ`` puts ``y`` back on the kept pixels, with zeros elsewhere.

        ``y`` of shape ``(..., C_out, ceil(H/s_h), ceil(W/s_w))`` → ``(..., C_in, H, W)``. With
        ``stride=1`` and ``C_out >= C_in`` the linear part is an isometry, so
        ``adjoint(forward(x) − b) = x`` (``inverse`` does that).
        """
        self._check(y, self.out_channels, self.output_size, "input to adjoint")
        batch = y.shape[:-3]
        y = y.reshape((-1,) + tuple(y.shape[-3:]))
        sh, sw = self.stride
        if sh > 1 or sw > 1:
            full = y.new_zeros(y.shape[:-2] + self.image_size)
            full[..., ::sh, ::sw] = y
            y = full
        x = self._mix(y, adjoint=True)
        return x.reshape(batch + tuple(x.shape[-3:]))

    def inverse(self, y: Tensor) -> Tensor:
        """``adjoint(y − b)``: the inverse of ``forward`` (a left inverse when ``C_out > C_in``).

        Defined for ``stride=1`` and ``out_channels >= in_channels`` only: subsampling and
        dropping channels lose information.
        """
        if self.stride != (1, 1) or self.out_channels < self.in_channels:
            raise ValueError(
                "inverse needs stride 1 and out_channels >= in_channels (an isometry), got "
                f"stride={self.stride}, in_channels={self.in_channels}, out_channels={self.out_channels}"
            )
        if self.bias is not None:
            self._check(y, self.out_channels, self.output_size, "input to inverse")
            y = y - self.bias[:, None, None]
        return self.adjoint(y)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}", f"image_size={self.image_size}"]
        if self.stride != (1, 1):
            parts.append(f"stride={self.stride}")
        parts.append(f"bias={self.bias is not None}")
        parts.append(f"init={self.init!r}")
        if self.channel_growth != "zeros" and self.out_channels > self.in_channels:
            parts.append(f"channel_growth={self.channel_growth!r}")
        if self.complex:
            parts.append("complex=True")
        return ", ".join(parts)

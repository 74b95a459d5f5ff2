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
multiplies each free frequency's channels by ``weight`` where it lies, the self-conjugate
ones by ``weight_real`` and each redundant one by the conjugate of its partner's matrix
(Note [frequency-batched products]). Because the redundant bins are conjugates *by
construction*, the operator is exactly real and orthogonal whatever values the free matrices
take between projUNN steps (no "hermitize" pass), and the gradient of a redundant bin flows
back to its free partner.
Degrees of freedom: ``F_c·C² + F_r·C(C−1)/2`` (the dimension of the group of real
shift-equivariant orthogonal maps), stored in ``2·F_c·C² + F_r·C² = H·W·C²`` reals, as many
as an unconstrained full-width kernel.

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

import torch
from torch import Tensor, nn

from .checks import one_of, positive_int
from .init import INITIALISERS

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

    Bins are numbered column by column, ``p = v·H + u`` for ``v < W_f = W//2 + 1`` (the
    order ``_FrequencyMix`` works in). The interior columns ``1 .. (W−1)//2`` come right after
    column 0, so their ``n_int = H·((W−1)//2)`` bins are the block ``[H, H + n_int)``, and
    they hold ``weight[:n_int]`` in that order. The edge columns (0 and, for even ``W``,
    ``W/2``) are listed in ``edges``: first their ``F_e`` free bins, holding
    ``weight[n_int:]``, then the ``F_r`` self-conjugate bins, holding ``weight_real``, then the
    ``F_e`` redundant bins, each holding the conjugate of the matrix of its partner, in the
    partners' order. So the edge matrices are ``[weight[n_int:], weight_real, conj(weight[n_int:])]``.

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


def _frequency_major(X: Tensor) -> Tensor:
    """``(B, C, H, W_f) → (W_f·H, B, C)``, bin ``v·H + u`` first, contiguous (one copy)."""
    return X.permute(3, 2, 0, 1).reshape(X.shape[3] * X.shape[2], X.shape[0], X.shape[1])


def _spatial_major(Xt: Tensor, H: int) -> Tensor:
    """The inverse of ``_frequency_major``: ``(W_f·H, B, C) → (B, C, H, W_f)`` contiguous."""
    return Xt.unflatten(0, (-1, H)).permute(2, 3, 1, 0).contiguous()


class _FrequencyMix(torch.autograd.Function):
    """``Y[b, :, u, v] = K̂(u, v) X[b, :, u, v]``, the channel mixing at every frequency, for
    ``X`` of shape ``(B, C_a, H, W_f)`` (complex); returns ``(B, C_b, H, W_f)``.

    The matrices come as stored: ``free`` ``(F_c, C_b, C_a)`` complex; for the real layer
    ``real`` ``(F_r, C_b, C_a)`` real and the layout of ``_real_layout`` (``n_int``,
    ``edges``); for the complex layer ``real = edges = None`` and ``n_int = H·W``: every bin
    is interior.

    Note [frequency-batched products]: a batched matmul over frequencies wants each
    frequency's ``B × C`` block contiguous, while FFTs give ``(B, C, H, W_f)``, frequency
    fastest. So the input is transposed once to ``(W_f·H, B, C)`` (column by column), and the
    output transposed back; the backward pass does the same. (Autograd's own backward of
    ``permute → bmm → permute`` hands ``bmm`` views with no unit stride, which CPU ``bmm``
    multiplies one matrix at a time, copying each: several times slower fwd+bwd; docs/speed.md.)
    Column by column, the interior bins are one block in ``weight``'s order, so one ``bmm``
    reads ``weight`` where it lies: the ``C²·H·W_f`` kernel is never assembled, nor its
    gradient scattered. Only the ``≤ 2H`` edge-column bins are gathered, for a second, small
    ``bmm``; ordered as in ``_real_layout``, their matrices are a concatenation.
    """

    @staticmethod
    def forward(ctx, X, free, real, n_int, edges):  # type: ignore[override]
        H = X.shape[2]
        Xt = _frequency_major(X)
        start = 0 if edges is None else H  # column 0 is an edge column of a real layer
        Yt = Xt.new_empty(Xt.shape[:2] + (free.shape[1] if free is not None else real.shape[1],))
        if n_int:
            torch.bmm(Xt[start : start + n_int], free[:n_int].mT, out=Yt[start : start + n_int])
        Ke = None
        if edges is not None:
            Ke = _edge_kernel(None if free is None else free[n_int:], real)
            Yt.index_copy_(0, edges, torch.bmm(Xt.index_select(0, edges), Ke.mT))
        ctx.save_for_backward(Xt, free, Ke, edges)
        ctx.n_int, ctx.start, ctx.H = n_int, start, H
        ctx.num_real = 0 if real is None else real.shape[0]
        return _spatial_major(Yt, H)

    @staticmethod
    def backward(ctx, dY):  # type: ignore[override]
        Xt, free, Ke, edges = ctx.saved_tensors
        n, start, H = ctx.n_int, ctx.start, ctx.H
        interior = slice(start, start + n)
        dYt = _frequency_major(dY)
        dX = dfree = dreal = None
        if ctx.needs_input_grad[0]:
            dXt = dYt.new_empty(Xt.shape)
            if n:
                torch.bmm(dYt[interior], free[:n].conj(), out=dXt[interior])
            if edges is not None:
                dXt.index_copy_(0, edges, torch.bmm(dYt.index_select(0, edges), Ke.conj()))
            dX = _spatial_major(dXt, H)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            if free is not None:
                dfree = free.new_empty(free.shape)
                if n:
                    torch.bmm(dYt[interior].mT, Xt[interior].conj(), out=dfree[:n])
            if edges is not None:
                dKe = torch.bmm(dYt.index_select(0, edges).mT, Xt.index_select(0, edges).conj())
                F_e, F_r = (0 if free is None else free.shape[0] - n), ctx.num_real
                if free is not None:  # a redundant bin holds the conjugate of its partner's matrix
                    torch.add(dKe[:F_e], dKe[F_e + F_r :].conj(), out=dfree[n:])
                dreal = dKe[F_e : F_e + F_r].real
        return dX, dfree, dreal, None, None


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

    Cost per image: two FFTs of ``C·H·W`` values and, at each of the ``H·W_f`` kept
    frequencies, a ``C_out × C_in`` matrix-vector product: one batched matmul over the interior
    frequencies, reading ``weight`` in place, and a small one over the ≤ ``2H`` bins of the
    edge columns (Note [frequency-batched products]).
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
        self.register_buffer("_repeat_scale", copies.to(real).rsqrt(), persistent=False)
        cdtype = _complex_twin(real)
        if self.complex:
            self.num_complex, self.num_real, self._n_int = H * W, 0, H * W
            self.weight = nn.Parameter(torch.empty(H * W, C, C, dtype=cdtype, device=device))
            self.register_parameter("weight_real", None)
            self.register_buffer("_edges", None, persistent=False)
        else:
            n_int, edges, F_c, F_r = _real_layout(H, W)
            self.num_complex, self.num_real, self._n_int = F_c, F_r, n_int
            if F_c:
                self.weight = nn.Parameter(torch.empty(F_c, C, C, dtype=cdtype, device=device))
            else:
                self.register_parameter("weight", None)
            self.weight_real = nn.Parameter(torch.empty(F_r, C, C, dtype=real, device=device))
            self.register_buffer("_edges", edges.to(device), persistent=False)
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
        stored matrices without assembling this (Note [frequency-batched products]). For the real
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
        return K.unflatten(-1, (copies, i)).sum(-2) * self._repeat_scale

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
        H, W = self.image_size
        if self.complex:
            X = torch.fft.fft2(x.to(_complex_twin(self._real_dtype())), norm="ortho")
        else:
            X = torch.fft.rfft2(x, norm="ortho")
        free, real = self._factors(adjoint)
        # Note [frequency-batched products]
        Y = _FrequencyMix.apply(X, free, real, self._n_int, self._edges)
        if bias is not None:
            Y[:, :, 0, 0] += bias * (H * W) ** 0.5
        if self.complex:
            return torch.fft.ifft2(Y, norm="ortho")
        return torch.fft.irfft2(Y, s=(H, W), norm="ortho")

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

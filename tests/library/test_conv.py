"""Tests of projunn.conv.OrthogonalConv2d: exact orthogonality of the full-width convolution."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import projunn
from projunn.conv import OrthogonalConv2d

SIZES = [(6, 6), (5, 7), (4, 5), (1, 1), (2, 2)]  # even, odd, mixed, degenerate


def rel_norm_error(layer: OrthogonalConv2d, x: torch.Tensor) -> float:
    """max over the batch of |‖conv(x)‖ / ‖x‖ − 1|."""
    y = layer(x)
    ratio = y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    return (ratio - 1).abs().max().item()


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def conv_matrix(layer: OrthogonalConv2d) -> torch.Tensor:
    """The matrix of the (linear, bias-free) layer, column j = layer(e_j)."""
    H, W = layer.image_size
    n = layer.in_channels * H * W
    basis = torch.eye(n, dtype=torch.float64).reshape(n, layer.in_channels, H, W)
    return layer(basis).reshape(n, -1).T


# (a) norm preservation, at initialisation and after training ---------------------------


@pytest.mark.parametrize("init", ["haar", "identity"])
@pytest.mark.parametrize("size", SIZES)
def test_norm_preserved_at_init(init, size):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(4, 4, size, init=init)
    x = torch.randn(8, 4, *size)
    assert rel_norm_error(layer, x) <= 1e-5
    assert rel_error(layer.adjoint(layer(x)), x) <= 1e-5


def test_norm_preserved_with_more_output_channels():
    torch.manual_seed(0)
    layer = OrthogonalConv2d(3, 8, (5, 6))  # zero-padded input: an isometry
    x = torch.randn(8, 3, 5, 6)
    assert rel_norm_error(layer, x) <= 1e-5
    assert rel_error(layer.adjoint(layer(x)), x) <= 1e-5


def test_fewer_output_channels_is_a_contraction():
    torch.manual_seed(0)
    layer = OrthogonalConv2d(8, 3, (5, 6), dtype=torch.float64)
    x = torch.randn(16, 8, 5, 6, dtype=torch.float64)
    y = layer(x)
    assert (y.flatten(1).norm(dim=1) <= x.flatten(1).norm(dim=1) * (1 + 1e-12)).all()
    z = torch.randn(16, 3, 5, 6, dtype=torch.float64)  # a co-isometry: the adjoint is an isometry
    assert rel_error(layer.adjoint(z).flatten(1).norm(dim=1), z.flatten(1).norm(dim=1)) <= 1e-12


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
def test_norm_preserved_after_projunn_training(projector, size):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(4, 4, size)
    teacher = OrthogonalConv2d(4, 4, size)
    x = torch.randn(16, 4, *size)
    with torch.no_grad():
        target = teacher(x)
    start = [p.detach().clone() for p in layer.parameters()]
    opt = projunn.ProjUNN(projunn.param_groups(layer, unitary_lr=1e-2), "RMSprop", lr=1e-2, projector=projector, rank=1)
    losses = []
    for _ in range(100):
        loss = (layer(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]  # it learned something ...
    assert all((p - q).abs().max() > 1e-2 for p, q in zip(layer.parameters(), start))  # every matrix moved
    x_new = torch.randn(8, 4, *size)
    assert rel_norm_error(layer, x_new) <= 1e-5  # ... and is still exactly orthogonal
    assert rel_error(layer.adjoint(layer(x_new)), x_new) <= 1e-5
    for p in projunn.unitary_parameters(layer):
        assert projunn.unitarity_error(p).max() <= 1e-5


def test_param_groups_find_both_unitary_parameters():
    layer = OrthogonalConv2d(3, 3, (4, 5), bias=True)
    found = projunn.unitary_parameters(layer)
    assert [id(p) for p in found] == [id(layer.weight), id(layer.weight_real)]
    assert layer.weight.is_complex() and not layer.weight_real.is_complex()
    groups = projunn.param_groups(layer, unitary_lr=1e-3)
    assert groups[0]["params"] == [layer.bias] and groups[1]["unitary"]


# (b) gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, c_in, c_out, stride, complex_",
    [
        ((4, 4), 2, 2, 1, False),
        ((3, 5), 2, 2, 1, False),
        ((4, 4), 2, 3, 2, False),
        ((3, 5), 3, 2, (1, 2), False),
        ((2, 2), 2, 2, 1, False),
        ((3, 4), 2, 2, 1, True),
    ],
)
def test_gradcheck(size, c_in, c_out, stride, complex_):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(c_in, c_out, size, stride=stride, bias=True, complex=complex_, dtype=torch.float64)
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]
    dtype = torch.complex128 if complex_ else torch.float64
    x = torch.randn(2, c_in, *size, dtype=dtype, requires_grad=True)
    y = torch.randn(2, c_out, *layer.output_size, dtype=dtype, requires_grad=True)

    def forward(x, *ps):
        return functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *params))

    adjoint = Adjoint(layer)
    unitary = [n for n in names if n != "bias"]

    def adjoint_call(y, *ps):
        return functional_call(adjoint, {f"layer.{n}": p for n, p in zip(unitary, ps)}, (y,))

    assert torch.autograd.gradcheck(adjoint_call, (y, *params[: len(unitary)]))


def test_repeat_growth_is_the_authors_repetition_scaled_and_differentiable():
    # Note [channel growth]: K̂ applied to the input's channels repeated (the authors' x.repeat, first
    # C_out channels), each copy divided by sqrt(its number of copies).
    torch.manual_seed(0)
    layer = OrthogonalConv2d(3, 8, (4, 5), init="haar", channel_growth="repeat", dtype=torch.float64)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    copies = torch.tensor([3.0, 3.0, 2.0], dtype=torch.float64)
    widened = x.repeat(1, 3, 1, 1)[:, :8] / copies.sqrt()[torch.arange(8) % 3][:, None, None]
    square = OrthogonalConv2d(8, 8, (4, 5), init="identity", dtype=torch.float64)
    with torch.no_grad():
        square.weight.copy_(layer.weight)
        square.weight_real.copy_(layer.weight_real)
    assert rel_error(layer(x), square(widened)) <= 1e-12
    params = [layer.weight.detach().clone().requires_grad_(), layer.weight_real.detach().clone().requires_grad_()]
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, w, r: functional_call(layer, {"weight": w, "weight_real": r}, (x,)), (x, *params)
    )


class Adjoint(torch.nn.Module):
    def __init__(self, layer: OrthogonalConv2d) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.layer.adjoint(y)


# (c) real output, shapes, identity, complex variant ---------------------------------------


@pytest.mark.parametrize(
    "size, c_in, c_out, stride",
    [((6, 6), 3, 3, 1), ((5, 7), 3, 3, 1), ((6, 7), 2, 4, 2), ((7, 6), 4, 2, (2, 3)), ((1, 6), 2, 2, 1)],
)
def test_real_output_equals_hermitian_complex_convolution(size, c_in, c_out, stride):
    """The layer equals ``ifft2(K̂ fft2(x))`` over the full spectrum, whose imaginary part is zero."""
    torch.manual_seed(0)
    layer = OrthogonalConv2d(c_in, c_out, size, stride=stride, bias=True, dtype=torch.float64)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, c_in, *size, dtype=torch.float64)
    y = layer(x)
    assert y.dtype == torch.float64 and not y.is_complex()
    assert y.shape == (3, c_out, -(-size[0] // layer.stride[0]), -(-size[1] // layer.stride[1]))
    assert tuple(y.shape[-2:]) == layer.output_size
    K = layer.full_kernel()  # (H, W, C_out, C_in)
    X = torch.fft.fft2(x, norm="ortho")
    z = torch.fft.ifft2(torch.einsum("uvoi,biuv->bouv", K, X), norm="ortho")
    assert z.imag.abs().max() <= 1e-12 * z.abs().max()  # no imaginary leakage
    sh, sw = layer.stride
    assert rel_error(y, z.real[..., ::sh, ::sw] + layer.bias[:, None, None]) <= 1e-12
    # Hermitian symmetry of the full kernel, K̂(−u, −v) = conj K̂(u, v)
    H, W = size
    flipped = K[(-torch.arange(H)) % H][:, (-torch.arange(W)) % W]
    assert (flipped - K.conj()).abs().max() <= 1e-15


def test_is_a_circular_convolution_with_a_real_full_width_kernel():
    """Shift-equivariant: y = Σ_i k_i ⊛ x_i with k_i = conv(δ_i), the response to a delta at the origin."""
    torch.manual_seed(0)
    H, W, C = 3, 5, 2
    layer = OrthogonalConv2d(C, C, (H, W), dtype=torch.float64)
    deltas = torch.zeros(C, C, H, W, dtype=torch.float64)
    deltas[torch.arange(C), torch.arange(C), 0, 0] = 1
    k = layer(deltas)  # k[i] = response to a delta in channel i: (C_out, H, W)
    x = torch.randn(C, H, W, dtype=torch.float64)
    expected = sum(
        x[i, a, b] * torch.roll(k[i], shifts=(a, b), dims=(-2, -1))
        for i in range(C)
        for a in range(H)
        for b in range(W)
    )
    assert rel_error(layer(x), expected) <= 1e-12
    assert (k.abs() > 1e-8).float().mean() > 0.9  # the kernel does cover the whole image


def test_shapes_batch_dims_and_dtype():
    layer = OrthogonalConv2d(3, 5, (6, 7), stride=2)
    assert layer(torch.randn(3, 6, 7)).shape == (5, 3, 4)
    assert layer(torch.randn(2, 4, 3, 6, 7)).shape == (2, 4, 5, 3, 4)
    assert layer.adjoint(torch.randn(2, 5, 3, 4)).shape == (2, 3, 6, 7)
    double = OrthogonalConv2d(2, 2, 4, dtype=torch.float64)
    assert double.weight.dtype == torch.complex128 and double.weight_real.dtype == torch.float64
    assert double(torch.randn(1, 2, 4, 4, dtype=torch.float64)).dtype == torch.float64


def test_stride_adjoint_is_the_transpose():
    torch.manual_seed(0)
    layer = OrthogonalConv2d(2, 3, (5, 6), stride=2, dtype=torch.float64)
    M = conv_matrix(layer)
    H2, W2 = layer.output_size
    n = 3 * H2 * W2
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 3, H2, W2)
    Mt = layer.adjoint(basis).reshape(n, -1).T
    assert (Mt - M.T).abs().max() <= 1e-12


def test_identity_init_is_the_identity_map():
    layer = OrthogonalConv2d(4, 4, (5, 6), init="identity")
    x = torch.randn(3, 4, 5, 6)
    assert (layer(x) - x).abs().max() <= 1e-6
    grow = OrthogonalConv2d(2, 4, (5, 6), init="identity")  # zero-padding of the channels
    x = torch.randn(3, 2, 5, 6)
    assert (grow(x) - torch.cat([x, torch.zeros_like(x)], dim=1)).abs().max() <= 1e-6


def test_inverse_undoes_bias():
    torch.manual_seed(0)
    layer = OrthogonalConv2d(3, 3, (4, 5), bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 4, 5)
    assert rel_error(layer.inverse(layer(x)), x) <= 1e-5


@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
def test_complex_variant_is_unitary(size):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(4, 4, size, complex=True)
    assert layer.weight_real is None and layer.weight.shape == (size[0] * size[1], 4, 4)
    x = torch.randn(8, 4, *size, dtype=torch.complex64)
    y = layer(x)
    assert y.is_complex()
    assert rel_norm_error(layer, x) <= 1e-5
    assert rel_error(layer.adjoint(y), x) <= 1e-5
    K = layer.full_kernel()  # (H, W, C, C): the matrices on the (u, v) grid
    z = torch.fft.ifft2(torch.einsum("uvoi,biuv->bouv", K, torch.fft.fft2(x, norm="ortho")), norm="ortho")
    assert rel_error(y, z) <= 1e-5
    identity = OrthogonalConv2d(4, 4, size, complex=True, init="identity")
    assert (identity(x) - x).abs().max() <= 1e-6
    # its full kernel has no Hermitian symmetry: a real input gives a complex output
    assert layer(x.real).imag.abs().max() > 1e-2


# (d) the convolution matrix is exactly orthogonal ------------------------------------------


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (6, 7), (2, 5), (1, 6), (5, 1), (2, 2), (1, 1)])
def test_conv_matrix_is_orthogonal(size):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(3, 3, size, dtype=torch.float64)
    M = conv_matrix(layer)
    eye = torch.eye(M.shape[0], dtype=torch.float64)
    assert (M.T @ M - eye).abs().max() <= 1e-12
    assert (M @ M.T - eye).abs().max() <= 1e-12


@pytest.mark.parametrize("growth", ["zeros", "repeat"])
@pytest.mark.parametrize("c_in, c_out", [(2, 5), (5, 2), (3, 8), (2, 4)])
def test_conv_matrix_isometry_or_coisometry(c_in, c_out, growth):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(c_in, c_out, (4, 5), dtype=torch.float64, channel_growth=growth)
    M = conv_matrix(layer)  # (c_out·H·W, c_in·H·W)
    G = M.T @ M if c_out > c_in else M @ M.T
    assert (G - torch.eye(G.shape[0], dtype=torch.float64)).abs().max() <= 1e-12


def test_free_rfft_bins_would_not_be_orthogonal():
    """Why the Hermitian constraint matters: unitary matrices at all rfft2 bins, chosen
    independently (no conjugate pairs, complex DC), do not give an orthogonal map."""
    torch.manual_seed(0)
    H, W, C = 4, 4, 2
    K = projunn.init.haar_(torch.empty(H * (W // 2 + 1), C, C, dtype=torch.complex128))

    def naive(x):
        X = torch.fft.rfft2(x, norm="ortho").flatten(-2)
        Y = torch.einsum("foi,bif->bof", K, X).unflatten(-1, (H, W // 2 + 1))
        return torch.fft.irfft2(Y, s=(H, W), norm="ortho")

    n = C * H * W
    M = naive(torch.eye(n, dtype=torch.float64).reshape(n, C, H, W)).reshape(n, -1).T
    assert (M.T @ M - torch.eye(n, dtype=torch.float64)).abs().max() > 1e-2


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (6, 7), (2, 5), (1, 6), (5, 1), (2, 2), (1, 1), (32, 32)])
def test_parameter_count(size):
    H, W = size
    layer = OrthogonalConv2d(2, 2, size)
    F_r = (1 + (H % 2 == 0)) * (1 + (W % 2 == 0))
    assert layer.num_real == F_r and layer.weight_real.shape == (F_r, 2, 2)
    assert layer.num_complex == (H * W - F_r) // 2
    assert 2 * layer.num_complex + layer.num_real == H * W
    assert (layer.weight is None) == (layer.num_complex == 0)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = OrthogonalConv2d(3, 3, (5, 6), bias=True)
    b = OrthogonalConv2d(3, 3, (5, 6), bias=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 5, 6)
    assert torch.equal(a(x), b(x))
    assert set(a.state_dict()) == {"weight", "weight_real", "bias"}


# (e) invalid arguments and inputs ---------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_channels=0), "in_channels must be a positive integer, got 0"),
        (dict(out_channels=True), "out_channels must be a positive integer, got True"),
        (dict(image_size=0), r"image_size must be a positive integer or a pair \(H, W\) of them, got 0"),
        (dict(image_size=(4,)), r"image_size .* got \(4,\)"),
        (dict(image_size=(4, 2.5)), r"image_size .* got \(4, 2.5\)"),
        (dict(stride=0), "stride must be a positive integer or a pair .* got 0"),
        (dict(init="orthogonal"), "Unknown init 'orthogonal'; expected one of 'identity', 'haar'"),
        (dict(channel_growth="tile"), "Unknown channel_growth 'tile'; expected one of 'zeros', 'repeat'"),
        (dict(dtype=torch.complex64), "dtype must be a real floating dtype .* got torch.complex64"),
        (dict(dtype=torch.int32), "got torch.int32"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = dict(in_channels=2, out_channels=2, image_size=4) | kwargs
    with pytest.raises(ValueError, match=message):
        OrthogonalConv2d(**args)


def test_invalid_inputs():
    layer = OrthogonalConv2d(3, 3, (4, 5))
    expected = r"Expected input of shape \(\.\.\., C=3, H=4, W=5\), got shape \(2, 2, 4, 5\)"
    with pytest.raises(ValueError, match=expected):
        layer(torch.randn(2, 2, 4, 5))
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 5, 4\)"):
        layer(torch.randn(2, 3, 5, 4))
    with pytest.raises(ValueError, match=r"got shape \(4, 5\)"):
        layer(torch.randn(4, 5))
    with pytest.raises(ValueError, match="takes real inputs, got dtype torch.complex64; use complex=True"):
        layer(torch.randn(2, 3, 4, 5, dtype=torch.complex64))
    with pytest.raises(ValueError, match="Expected input of dtype torch.float32 .* got torch.float64"):
        layer(torch.randn(2, 3, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Expected input to adjoint of shape \(\.\.\., C=3, H=4, W=5\)"):
        layer.adjoint(torch.randn(2, 3, 2, 3))


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(in_channels=4, out_channels=2)])
def test_inverse_rejects_non_isometries(kwargs):
    layer = OrthogonalConv2d(**(dict(in_channels=2, out_channels=2, image_size=4) | kwargs))
    with pytest.raises(ValueError, match="inverse needs stride 1 and out_channels >= in_channels"):
        layer.inverse(torch.randn(1, layer.out_channels, *layer.output_size))


def test_projunn_accepts_the_layer_with_a_tiny_image():
    """A 2×2 image has only self-conjugate bins: no complex parameter, and projUNN still runs."""
    layer = OrthogonalConv2d(3, 3, 2)
    assert layer.weight is None
    opt = projunn.ProjUNN(projunn.param_groups(layer), "SGD", lr=0.1)
    x = torch.randn(4, 3, 2, 2)
    layer(x).sum().backward()
    opt.step()
    assert rel_norm_error(layer, x) <= 1e-5
    assert math.isfinite(projunn.unitarity_error(layer.weight_real).max().item())


# (g) the layer's matrices on the rfft2 grid, and back ---------------------------------------


@pytest.mark.parametrize("size", [(4, 4), (8, 8), (6, 5), (5, 7), (2, 2), (1, 3), (1, 1)])
def test_matrices_from_kernel_inverts_kernel(size):
    """``matrices_from_kernel`` takes ``kernel()`` back to the stored parameters, bit for bit, and
    ``kernel_from_matrices`` of those is ``kernel()`` again."""
    from projunn.conv import kernel_from_matrices, matrices_from_kernel

    layer = OrthogonalConv2d(3, 3, size, dtype=torch.float64)
    K = layer.kernel().detach()
    weight, real = matrices_from_kernel(K, size)
    if layer.weight is None:
        assert weight is None
    else:
        assert torch.equal(weight, layer.weight.detach())
    assert torch.equal(real, layer.weight_real.detach())
    assert torch.equal(kernel_from_matrices(weight, real, size), K)


@pytest.mark.parametrize("size", [(4, 4), (6, 5), (5, 7)])
def test_the_grid_layout_is_rfft2s(size):
    """Against torch.fft: the rfft2 of a real spatial kernel has the Hermitian symmetry, so reading its
    free and self-conjugate bins and writing the grid back gives it again; and for any other grid the
    redundant bins come back as the conjugates of their partners, the rest as they were."""
    from projunn.conv import kernel_from_matrices, matrices_from_kernel

    g = torch.Generator().manual_seed(0)
    H, W = size
    spatial = torch.randn(3, 2, H, W, dtype=torch.float64, generator=g)
    K = torch.fft.rfft2(spatial).permute(2, 3, 0, 1)  # (H, W_f, C_out, C_in)
    assert torch.allclose(kernel_from_matrices(*matrices_from_kernel(K, size), size), K, atol=1e-12)
    noisy = K + 1e-3 * torch.randn(K.shape, dtype=K.dtype, generator=g)
    back = kernel_from_matrices(*matrices_from_kernel(noisy, size), size)
    full = torch.fft.fft2(torch.fft.irfft2(back.permute(2, 3, 0, 1), s=size)).permute(2, 3, 0, 1)
    assert torch.allclose(full[:, : W // 2 + 1], back, atol=1e-12)  # a real convolution's grid
    assert torch.equal(back[:, 1 : (W + 1) // 2], noisy[:, 1 : (W + 1) // 2])  # interior columns as given


def test_kernel_layout_functions_refuse_other_shapes():
    from projunn.conv import kernel_from_matrices, matrices_from_kernel

    with pytest.raises(
        ValueError, match=r"expected a kernel of shape \(4, 3, \.\.\.\) for a 4x4 image, got \(4, 4, 2, 2\)"
    ):
        matrices_from_kernel(torch.zeros(4, 4, 2, 2), (4, 4))
    with pytest.raises(ValueError, match="a 4x4 image has 6 free and 4 self-conjugate bins, got weight of 5"):
        kernel_from_matrices(torch.zeros(5, 2, 2, dtype=torch.complex64), torch.zeros(4, 2, 2), (4, 4))


# (h) the transforms as matrix products (Note [spectra as matrix products]) -----------------------


@pytest.mark.parametrize("size", [(4, 4), (6, 5), (5, 7), (8, 3), (2, 2), (1, 4), (3, 1), (1, 1)])
def test_planes_are_the_rfft2_bins_and_synthesis_inverts_them(size):
    """The analysis of an image holds torch.fft's ``rfft2`` at the free and self-conjugate bins (the
    redundant ones are their conjugates); the synthesis inverts it, and with the analysis matrices it is
    the analysis's transpose (what the backward pass uses)."""
    from projunn.conv import dft_matrices, frequency_grid, kernel_from_matrices, spectral_analysis, spectral_synthesis

    g = torch.Generator().manual_seed(0)
    H, W = size
    grid = frequency_grid(H, W, False)
    spectra = dft_matrices(grid, torch.float64, torch.device("cpu"))
    x = torch.randn(3, 2, H, W, dtype=torch.float64, generator=g)
    planes = spectral_analysis(x, grid, spectra, spectra.analysis)
    F_c = grid.complex_bins
    free = torch.complex(planes[:F_c], planes[F_c : 2 * F_c]) if F_c else None
    grid_values = kernel_from_matrices(free, planes[2 * F_c :], size)  # (H, W//2 + 1, B, C)
    expected = torch.fft.rfft2(x, norm="ortho").permute(2, 3, 0, 1)
    assert (grid_values - expected).abs().max() <= 1e-13
    assert (spectral_synthesis(planes, grid, spectra, spectra.synthesis) - x).abs().max() <= 1e-13
    other = torch.randn(planes.shape, dtype=torch.float64, generator=g)
    transposed = spectral_synthesis(other, grid, spectra, spectra.analysis)
    assert torch.allclose((planes * other).sum(), (x * transposed).sum(), rtol=1e-12)


@pytest.mark.parametrize("size", [(4, 4), (5, 3)])
def test_complex_planes_are_the_fft2_bins(size):
    from projunn.conv import dft_matrices, frequency_grid, spectral_analysis, spectral_synthesis

    g = torch.Generator().manual_seed(1)
    H, W = size
    grid = frequency_grid(H, W, True)
    spectra = dft_matrices(grid, torch.float64, torch.device("cpu"))
    x = torch.randn(3, 2, H, W, dtype=torch.complex128, generator=g)
    planes = spectral_analysis(torch.view_as_real(x).flatten(-2), grid, spectra, spectra.analysis)
    bins = torch.complex(planes[: H * W], planes[H * W :]).unflatten(0, (W, H)).transpose(0, 1)  # (H, W, B, C)
    assert (bins - torch.fft.fft2(x, norm="ortho").permute(2, 3, 0, 1)).abs().max() <= 1e-13
    back = torch.view_as_complex(spectral_synthesis(planes, grid, spectra, spectra.synthesis).unflatten(-1, (-1, 2)))
    assert (back - x).abs().max() <= 1e-13


@pytest.mark.parametrize("size", [(1, 1), (1, 3), (3, 1), (2, 1)])
def test_gradcheck_on_images_without_free_bins(size):
    """Images whose spectrum is all self-conjugate bins, or has no interior column, with a bias."""
    torch.manual_seed(0)
    layer = OrthogonalConv2d(2, 3, size, bias=True, dtype=torch.float64)
    names = [name for name, p in layer.named_parameters() if p is not None]
    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]
    x = torch.randn(2, 2, *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *ps: functional_call(layer, dict(zip(names, ps)), (x,)), (x, *params))


def test_autocast_leaves_the_layer_in_float32():
    torch.manual_seed(0)
    layer = OrthogonalConv2d(3, 6, (6, 5), channel_growth="repeat")
    x = torch.randn(4, 3, 6, 5, requires_grad=True)
    expected = layer(x)
    (grad,) = torch.autograd.grad(expected.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32 and torch.equal(y, expected)
    assert torch.equal(torch.autograd.grad(y.square().sum(), x)[0], grad)


def test_forward_backward_copies_no_image():
    """The products and transforms read and write the images where they lie: in a forward and backward
    pass, no copy is as large as an image batch (only the frequency matrices are copied)."""
    from torch.profiler import profile

    torch.manual_seed(0)
    layer = OrthogonalConv2d(8, 8, (16, 16), init="haar")
    x = torch.randn(64, 8, 16, 16, requires_grad=True)
    grad = torch.randn(64, 8, 16, 16)
    with profile(record_shapes=True) as prof:
        layer(x).backward(grad)
    # an in-place baddbmm_ "copies" its accumulator onto itself, which moves nothing
    copies = [e for e in prof.events() if e.name == "aten::copy_" and e.cpu_parent.name != "aten::baddbmm_"]
    sizes = [math.prod(shape) for e in copies for shape in e.input_shapes if shape]
    assert sizes and x.numel() > 4 * max(sizes)

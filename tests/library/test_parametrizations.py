"""The expRNN / scoRNN / Cayley-convolution parametrizations (projunn/parametrizations.py): the maps
against float64 references, their inverses, scoRNN's own gradient formula, the initialisations the
baselines start from, and exact orthogonality of Cayley convolutions after training."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import projunn
from projunn import init
from projunn.conv import OrthogonalConv2d
from projunn.parametrizations import Cayley, MatrixExp, parametrize, skew

DTYPES = [torch.float64, torch.complex128]


def random_skew(shape, dtype, generator):
    X = torch.randn(shape, dtype=dtype, generator=generator)
    return (X - X.mH) / 2


def signs(n: int, negative_ones: int) -> torch.Tensor:
    return torch.tensor([1.0] * (n - negative_ones) + [-1.0] * negative_ones, dtype=torch.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["real", "complex"])
def test_stored_matrix_reads_as_a_skew_hermitian_one(dtype):
    g = torch.Generator().manual_seed(0)
    S = random_skew((3, 6, 6), dtype, g)
    assert torch.allclose(skew(S), S, atol=1e-15)  # a skew-Hermitian X is its own A
    X = torch.randn(3, 6, 6, dtype=dtype, generator=g)
    A = skew(X)
    assert torch.allclose(A, -A.mH)
    assert torch.equal(skew(X.triu()), A)  # the lower triangle is never read


@pytest.mark.parametrize("dtype", DTYPES, ids=["real", "complex"])
def test_maps_against_float64_references(dtype):
    g = torch.Generator().manual_seed(1)
    S = random_skew((4, 7, 7), dtype, g)
    assert torch.allclose(MatrixExp()(S), torch.linalg.matrix_exp(S), atol=1e-13)
    I = torch.eye(7, dtype=dtype)
    D = signs(7, 3).to(dtype)
    reference = torch.diag(D) @ torch.linalg.inv(I + S) @ (I - S)  # scoRNN's (I + A)^{-1}(I - A) D, transposed, at -A
    assert torch.allclose(Cayley(7, 3).double()(S), reference, atol=1e-13)
    for W in (MatrixExp()(S), Cayley(7, 3).double()(S)):
        assert projunn.unitarity_error(W).max() <= 1e-13
    looped = torch.stack([MatrixExp()(s) for s in S])  # batched == looped
    assert torch.allclose(MatrixExp()(S), looped, atol=1e-15)


def test_single_precision_exponential_stays_unitary():
    # torch's float32 matrix_exp leaves ~3e-5 here; the map computes in double precision
    A = torch.zeros(8, 8)
    for i, s in enumerate([0.2865, 0.5314, 0.3976, 0.3607]):
        A[2 * i, 2 * i + 1], A[2 * i + 1, 2 * i] = -s, s
    W = MatrixExp()(A)
    assert W.dtype == torch.float32 and projunn.unitarity_error(W) <= 10 * 8 * torch.finfo(torch.float32).eps


INITS = ["identity", "haar", "henaff", "cayley", "exprnn_cayley"]


@pytest.mark.parametrize("name", INITS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["real", "complex"])
def test_right_inverses_recover_the_matrix(name, dtype):
    g = torch.Generator().manual_seed(2)
    W = torch.empty(3, 8, 8, dtype=dtype)
    init.INITIALISERS[name](W) if name == "identity" else init.INITIALISERS[name](W, generator=g)
    if name == "haar" and not W.is_complex():
        W[:, :, 0] *= torch.linalg.det(W).sign()[:, None]  # exp and Cayley reach determinant +1 only
    A = MatrixExp().right_inverse(W)
    assert torch.allclose(A, -A.mH, atol=1e-15) and torch.allclose(MatrixExp()(A), W, atol=1e-12)
    cayley = Cayley(8, 2).double()
    WD = cayley.signs.to(dtype)[:, None] * W  # what parametrize() starts from: D·W
    A = cayley.right_inverse(WD)
    assert torch.allclose(A, -A.mH, atol=1e-15) and torch.allclose(cayley(A), WD, atol=1e-10)


def test_unreachable_matrices_are_refused():
    reflection = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="determinant −1 is not exp of a real skew matrix"):
        MatrixExp().right_inverse(reflection)
    with pytest.raises(ValueError, match=r"eigenvalue −1; change negative_ones \(now 0\)"):
        Cayley(3).double().right_inverse(reflection)
    flip_last = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="eigenvalue −1"):
        Cayley(3).double().right_inverse(flip_last)
    scaled = Cayley(3, negative_ones=1).double()  # what D is for: W = cayley(0) D
    assert torch.equal(scaled.right_inverse(flip_last), torch.zeros(3, 3, dtype=torch.float64))


def test_training_matches_scornn_transposed():
    # scoRNN (scoRNN_mnist.py: makeW, Cayley_Transform_Deriv) multiplies row vectors with
    # B = (I + A)^{-1}(I - A) D and updates A with dL/dA = V^T - V, V = (I + A)^{-T} G (D + B^T),
    # G = dL/dB. Here W = B^T from the stored -A (Note [row-vector baselines]): the same matrix, and
    # the stored upper triangle gets minus scoRNN's skew gradient, so RMSprop moves it as theirs.
    g = torch.Generator().manual_seed(3)
    n, rho = 9, 4
    A = random_skew((n, n), torch.float64, g)  # scoRNN's A
    target = torch.randn(n, n, dtype=torch.float64, generator=g)
    I, D = torch.eye(n, dtype=torch.float64), torch.diag(signs(n, rho))
    B = torch.linalg.solve(I + A, I - A) @ D
    X = (-A).clone().requires_grad_()
    W = Cayley(n, rho).double()(X)
    assert torch.allclose(W, B.T, atol=1e-13)
    loss = (W * target).sum() + W.pow(3).sum()  # any loss of the recurrence's matrix
    loss.backward()
    G = (target + 3 * W.detach() ** 2).T  # dL/dB
    V = torch.linalg.solve((I + A).T, G @ (D + B.T))
    dfa = V.T - V
    assert torch.allclose(X.grad.triu(1), -dfa.triu(1), atol=1e-12)
    assert torch.equal(X.grad.tril(), torch.zeros(n, n, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=["real", "complex"])
def test_gradcheck(dtype):
    g = torch.Generator().manual_seed(4)
    X = torch.randn(2, 5, 5, dtype=dtype, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(MatrixExp(), (X,))
    assert torch.autograd.gradcheck(Cayley(5, 2).double(), (X,))


def test_parametrize_keeps_the_matrix_and_starts_at_the_baselines_initialisations():
    torch.manual_seed(0)
    rnn = projunn.UnitaryRNN(1, 10, nonlinearity="modrelu", init="cayley")
    W0 = rnn.weight_hh.detach().clone()
    parametrize(rnn, "cayley", negative_ones=3)
    stored = rnn.parametrizations.weight_hh.original.detach()
    D = torch.diag(signs(10, 3)).float()
    assert torch.allclose(rnn.weight_hh, D @ W0, atol=1e-6)  # scoRNN's cayley(A0) D, transposed
    # -A0 with scoRNN's A0: 2×2 blocks [[0, s], [-s, 0]], s = -tan(θ/2) ∈ [-1, 0], θ ~ U[0, π/2]
    rows, cols = torch.arange(0, 10, 2), torch.arange(1, 10, 2)
    s = -stored[rows, cols]
    assert ((s >= -1 - 1e-6) & (s <= 1e-6)).all() and s.abs().sum() > 0
    blocks = torch.zeros(10, 10)
    blocks[rows, cols], blocks[cols, rows] = -s, s
    assert torch.allclose(stored, blocks, atol=1e-6)
    theta = 2 * torch.atan(-s)  # scoRNN's B0 = (I + A0)^{-1}(I - A0) D has rotation blocks by θ
    assert torch.allclose(W0[rows, rows], torch.cos(theta), atol=1e-6) and torch.allclose(
        W0[cols, rows], torch.sin(theta), atol=1e-6
    )

    rnn = projunn.UnitaryRNN(1, 10, nonlinearity="modrelu", init="exprnn_cayley")
    W0 = rnn.weight_hh.detach().clone()
    parametrize(rnn, "matrix_exp")
    assert torch.allclose(rnn.weight_hh, W0, atol=1e-6)
    s = -rnn.parametrizations.weight_hh.original.detach()[rows, cols]  # expRNN's A0: the same -tan(θ/2) blocks ...
    assert ((s >= -1 - 1e-6) & (s <= 1e-6)).all()
    B0 = torch.linalg.matrix_exp(torch.zeros(10, 10).index_put_((rows, cols), s).index_put_((cols, rows), -s))
    assert torch.allclose(W0, B0.T, atol=1e-6)  # ... and W0 = exp(A0)^T, expRNN's matrix transposed


def test_parametrize_errors():
    rnn = projunn.UnitaryRNN(1, 4)
    with pytest.raises(ValueError, match="Unknown parametrization 'qr'; expected one of 'matrix_exp', 'cayley'"):
        parametrize(rnn, "qr")
    with pytest.raises(ValueError, match="'matrix_exp' takes none, got 2"):
        parametrize(rnn, "matrix_exp", negative_ones=2)
    with pytest.raises(ValueError, match="negative_ones must be an integer in 0..n=4, got 5"):
        parametrize(rnn, "cayley", negative_ones=5)
    with pytest.raises(ValueError, match="the cayley parametrization needs a model with unitary matrices"):
        parametrize(torch.nn.Linear(3, 3), "cayley")


def test_a_shared_unitary_matrix_is_refused_not_half_parametrized():
    """Two layers sharing one recurrent matrix: torch would re-express it in the first layer only and
    leave the second multiplying by the raw parameter (then the skew-Hermitian A)."""
    first, second = projunn.UnitaryRNN(1, 4), projunn.UnitaryRNN(1, 4)
    second.weight_hh = first.weight_hh
    model = torch.nn.Sequential(first, second)
    assert [name for name, _ in projunn.named_unitary_parameters(model)] == ["0.weight_hh"]
    shared = [name for name, _ in projunn.named_unitary_parameters(model, remove_duplicate=False)]
    assert shared == ["0.weight_hh", "1.weight_hh"]
    for name in ("matrix_exp", "cayley"):
        with pytest.raises(ValueError, match=r"^0.weight_hh and 1.weight_hh are one shared matrix"):
            parametrize(model, name)
        assert not torch.nn.utils.parametrize.is_parametrized(first)  # refused before anything changed


@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
def test_cayley_convolutions_stay_orthogonal_while_training(size):
    # The paper's fourth CIFAR10 row: every frequency's matrix through the Cayley map, trained by RMSprop.
    torch.manual_seed(0)
    layer = OrthogonalConv2d(4, 6, size, init="identity", channel_growth="repeat")
    parametrize(layer, "cayley")
    teacher = OrthogonalConv2d(4, 6, size, channel_growth="repeat")
    x = torch.randn(16, 4, *size)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.RMSprop(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = (layer(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    x_new = torch.randn(8, 4, *size)
    with torch.no_grad():
        ratio = layer(x_new).flatten(1).norm(dim=1) / x_new.flatten(1).norm(dim=1)
        assert (ratio - 1).abs().max() <= 1e-5  # the acceptance bound: norm preserved after 100 steps
        for name in ("weight", "weight_real"):
            assert projunn.unitarity_error(getattr(layer, name)).max() <= 1e-5


def test_cayley_convolution_gradcheck():
    torch.manual_seed(0)
    layer = OrthogonalConv2d(2, 3, (3, 4), init="identity", channel_growth="repeat", dtype=torch.float64)
    parametrize(layer, "cayley")
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn_like(p))  # away from the identity
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)

    def forward(x, *ps):
        return functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *params))
    assert math.isclose(layer(x).norm().item(), x.norm().item(), rel_tol=1e-12)


RECTANGULAR = [(12, 5), (5, 12), (2, 9, 4)]


@pytest.mark.parametrize("map", ["matrix_exp", "cayley", "torch"])
@pytest.mark.parametrize("shape", RECTANGULAR, ids=["tall", "wide", "batched"])
def test_rectangular_matrices_go_through_torchs_orthogonal_and_stay_orthogonal(map, shape):
    """On the Stiefel manifold, parametrize is torch.nn.utils.parametrizations.orthogonal with the same map
    (Note [rectangular baselines]): the same matrix after the same training, and orthonormal
    columns (rows when wide) to float64 rounding throughout."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    ours, theirs = (torch.nn.Module() for _ in range(2))
    for module in (ours, theirs):
        module.weight = torch.nn.Parameter(torch.empty(shape, dtype=torch.float64))
    projunn.orthogonal_(ours, "weight", generator=g, batch_dims=len(shape) - 2)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
    start = ours.weight.detach().clone()
    torch.manual_seed(1)  # torch completes a tall start to a square base with a random matrix
    parametrize(ours, map)
    torch.manual_seed(1)
    torch.nn.utils.parametrizations.orthogonal(theirs, "weight", orthogonal_map=None if map == "torch" else map)
    assert torch.allclose(ours.weight, start, atol=1e-13)  # registration keeps the matrix
    steps = [torch.optim.RMSprop(m.parameters(), lr=1e-2) for m in (ours, theirs)]
    target = torch.randn(shape, dtype=torch.float64, generator=g)
    for _ in range(20):
        for module, opt in zip((ours, theirs), steps):
            opt.zero_grad()
            (module.weight - target).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(ours.weight, theirs.weight, atol=1e-12)
    assert (ours.weight - start).abs().max() > 0.05  # it did move
    (name, W), *_ = projunn.named_unitary_parameters(ours)
    assert name == "weight" and projunn.unitarity_error(W).max() < 1e-12


def test_rectangular_parametrization_errors():
    tall = projunn.orthogonal_(torch.nn.Linear(3, 6))
    with pytest.raises(ValueError, match=r"scaling of a square matrix; weight has shape \(6, 3\)"):
        parametrize(tall, "cayley", negative_ones=1)
    kernel = projunn.orthogonal_(torch.nn.Conv2d(2, 4, 3))  # read as the 4 × 18 matrix of im2col
    with pytest.raises(ValueError, match=r"weight of shape \(4, 2, 3, 3\) is declared as matrices of shape \(4, 18\)"):
        parametrize(kernel, "torch")

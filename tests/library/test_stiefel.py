"""Rectangular projUNN (the Stiefel manifold) and declaring any parameter orthogonal.

References share no code with the library: Haar matrices from our own QR with the sign fix,
projUNN-T as ``exp(A) W`` with ``A = P ΔW W^H − W ΔW^H P``, ``P = I − ½ W W^H`` (``exp`` of the
skew-Hermitian ``A`` through ``eigh(iA)``, and ``torch.linalg.matrix_exp`` for steps of norm ~1,
outside the band where its unbatched path is off: see test_updates.py), projUNN-D as
``U V^H`` of the thin SVD of ``W + a b^H``; a wide ``W`` is defined through ``W^H``, step ``b a^H``.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import projunn
from projunn.linalg import estimate_unitarity_error
from projunn.updates import _stiefel_step, low_rank_step
from tests.helpers.references import REAL, max_abs, reference_d, reference_exp

PROJECTORS = {"T": projunn.projunn_t, "D": projunn.projunn_d}


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------
def haar(n: int, p: int, dtype: torch.dtype, g: torch.Generator, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Haar-distributed orthonormal columns (n ≥ p) or rows (n < p), in float64/complex128 then ``dtype``."""
    wide = torch.complex128 if dtype.is_complex else torch.float64
    Q, R = torch.linalg.qr(torch.randn(batch + (max(n, p), min(n, p)), dtype=wide, generator=g))
    d = R.diagonal(dim1=-2, dim2=-1)
    Q = Q * (d / d.abs()).unsqueeze(-2)
    return (Q.mH if n < p else Q).to(dtype)


def gaussian(shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, generator=g)


def generator_A(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A = P ΔW W^H − W ΔW^H P`` for a tall or square ``W``."""
    eye = torch.eye(W.shape[-2], dtype=W.dtype)
    P = eye - 0.5 * W @ W.mH
    step = a @ b.mH
    return P @ step @ W.mH - W @ step.mH @ P


def reference_t(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor, expm=reference_exp) -> torch.Tensor:
    if W.shape[-2] < W.shape[-1]:
        return reference_t(W.mH, b, a, expm).mH
    return expm(generator_A(W, a, b)) @ W


REFERENCES = {"T": reference_t, "D": reference_d}


def gram_error(W: torch.Tensor) -> torch.Tensor:
    """‖W^H W − I‖_F (tall) or ‖W W^H − I‖_F (wide), by hand, in double precision."""
    W = W.to(torch.complex128 if W.is_complex() else torch.float64)
    if W.shape[-2] < W.shape[-1]:
        W = W.mH
    return torch.linalg.matrix_norm(W.mH @ W - torch.eye(W.shape[-1], dtype=W.dtype))


def ks(n: int, p: int) -> list[int]:
    """1, 2, p // 2 and p (the update of full rank; for a wide matrix also min(n, p) = n, the
    largest rank ProjUNN's samplers give)."""
    r = min(n, p)
    return sorted({1, 2, max(p // 2, 1), p, r} & set(range(1, p + 1)))


SHAPES = [(9, 4), (4, 9), (40, 7), (7, 40), (6, 1), (1, 6), (5, 4)]
ACCURACY = [
    pytest.param(projector, dtype, n, p, k, id=f"{projector}-{str(dtype)[6:]}-{n}x{p}-k{k}")
    for projector in ("T", "D")
    for dtype in (torch.float64, torch.complex128)
    for n, p in SHAPES
    for k in ks(n, p)
]


# ---------------------------------------------------------------------------------------------
# the updates against the references
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("projector, dtype, n, p, k", ACCURACY)
@pytest.mark.parametrize("scale", [1e-2, 1.0])
def test_matches_reference(projector, dtype, n, p, k, scale):
    g = torch.Generator().manual_seed(n * 100 + p * 10 + k)
    W = haar(n, p, dtype, g)
    a, b = scale * gaussian((n, k), dtype, g), gaussian((p, k), dtype, g)
    out = PROJECTORS[projector](W, a, b)
    assert out.shape == W.shape and out.dtype == dtype
    error = max_abs(out, REFERENCES[projector](W, a, b))
    assert error <= 1e-10
    # unitary to rounding: O(eps·‖a‖‖b‖) (the size of the step, Note [projUNN on the Stiefel manifold])
    assert gram_error(out).item() <= 1e-14 * (1 + torch.linalg.norm(a).item() * torch.linalg.norm(b).item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("n, p", [(12, 5), (5, 12)], ids=str)
def test_t_matches_matrix_exp(dtype, n, p):
    # steps of norm ~1, outside the band where the unbatched matrix_exp is off (test_updates.py)
    g = torch.Generator().manual_seed(1)
    for k in ks(n, p):
        W = haar(n, p, dtype, g)
        a, b = gaussian((n, k), dtype, g), gaussian((p, k), dtype, g)
        reference = reference_t(W, a, b, expm=torch.linalg.matrix_exp)
        assert max_abs(projunn.projunn_t(W, a, b), reference) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_t_generator_is_skew_of_rank_2k_and_first_order_is_the_tangent_projection(dtype):
    g = torch.Generator().manual_seed(2)
    n, p, k = 20, 6, 2
    W, a, b = haar(n, p, dtype, g), gaussian((n, k), dtype, g), gaussian((p, k), dtype, g)
    A = generator_A(W, a, b)
    assert max_abs(A, -A.mH) <= 1e-13
    assert torch.linalg.matrix_rank(A).item() == 2 * k
    step = a @ b.mH
    sym = W.mH @ step
    tangent = step - W @ (sym + sym.mH) / 2
    for t in (1e-3, 1e-4):
        first_order = (projunn.projunn_t(W, t * a, b) - W) / t
        assert max_abs(first_order, tangent) <= 30 * t  # O(t) remainder
    # and for a square W, A is the one of today's projUNN-T: W exp(½(W^H ΔW − ΔW^H W))
    Q = haar(8, 8, dtype, g)
    a, b = gaussian((8, k), dtype, g), gaussian((8, k), dtype, g)
    omega = 0.5 * (Q.mH @ a @ b.mH - b @ a.mH @ Q)
    assert max_abs(reference_exp(generator_A(Q, a, b)) @ Q, Q @ reference_exp(omega)) <= 1e-12


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_stiefel_formula_on_a_square_matrix_is_the_square_step(projector, dtype):
    # p = n: a⊥ = 0 and the Stiefel step reduces to Note [projUNN in the 2k subspace]
    g = torch.Generator().manual_seed(3)
    for k in (1, 3, 8):
        W, a, b = haar(8, 8, dtype, g), gaussian((8, k), dtype, g), gaussian((8, k), dtype, g)
        L, R = _stiefel_step(W, a, b, projector, sync_free=False)
        assert max_abs(W + L @ R, PROJECTORS[projector](W, a, b)) <= 1e-12


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["float32", "complex64"])
@pytest.mark.parametrize("n, p", [(30, 6), (6, 30)], ids=str)
def test_batched_equals_looped_and_inputs_untouched(projector, dtype, n, p):
    g = torch.Generator().manual_seed(4)
    k = 2
    W = haar(n, p, dtype, g, batch=(2, 3))
    a, b = 0.1 * gaussian((2, 3, n, k), dtype, g), gaussian((2, 3, p, k), dtype, g)
    clones = [x.clone() for x in (W, a, b)]
    out = PROJECTORS[projector](W, a, b)
    for x, x0 in zip((W, a, b), clones):
        assert torch.equal(x, x0)
    looped = torch.stack(
        [torch.stack([PROJECTORS[projector](W[i, j], a[i, j], b[i, j]) for j in range(3)]) for i in range(2)]
    )
    assert max_abs(out, looped) <= 1e-6
    assert out.dtype == dtype and gram_error(out).max().item() <= 10 * min(n, p) * torch.finfo(REAL[dtype]).eps


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("n, p", [(9, 4), (4, 9)], ids=str)
def test_degenerate_steps(projector, n, p):
    g = torch.Generator().manual_seed(5)
    W, dtype = haar(n, p, torch.float64, g), torch.float64
    ref = REFERENCES[projector]
    tall = n > p
    # a zero step leaves W (to rounding)
    zero = PROJECTORS[projector](W, torch.zeros(n, 2, dtype=dtype), gaussian((p, 2), dtype, g))
    assert max_abs(zero, W) <= 1e-14
    # a step inside the range of W (a⊥ = 0 for tall W, b ∈ range(W^H) for wide), and repeated columns
    inside = W @ gaussian((p, 2), dtype, g) if tall else gaussian((n, 2), dtype, g)
    b = gaussian((p, 2), dtype, g) if tall else W.mH @ gaussian((n, 2), dtype, g)
    assert max_abs(PROJECTORS[projector](W, inside, b), ref(W, inside, b)) <= 1e-12
    a = gaussian((n, 1), dtype, g).repeat(1, 3)
    b = gaussian((p, 1), dtype, g).repeat(1, 3)
    assert max_abs(PROJECTORS[projector](W, a, b), ref(W, a, b)) <= 1e-12


@pytest.mark.parametrize("projector", ["T", "D"])
def test_rank_above_the_complement(projector):
    # n − p = 1 < k: a⊥ spans one direction, and the other columns of its Householder Q are unused
    g = torch.Generator().manual_seed(6)
    W = haar(5, 4, torch.complex128, g)
    a, b = gaussian((5, 3), torch.complex128, g), gaussian((4, 3), torch.complex128, g)
    assert max_abs(PROJECTORS[projector](W, a, b), REFERENCES[projector](W, a, b)) <= 1e-12


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("n, p", [(30, 6), (6, 30)], ids=str)
def test_sync_free_factors_agree(projector, n, p):
    g = torch.Generator().manual_seed(7)
    for dtype in (torch.float64, torch.complex128):
        W = haar(n, p, dtype, g, batch=(3,))
        a, b = 0.1 * gaussian((3, n, 2), dtype, g), gaussian((3, p, 2), dtype, g)
        L, R = low_rank_step(W, a, b, projector, sync_free=True)
        assert max_abs(W + L @ R, PROJECTORS[projector](W, a, b)) <= 1e-12


def test_real_stays_real_and_shape_errors_name_what_was_received():
    g = torch.Generator().manual_seed(8)
    W = haar(9, 4, torch.float32, g)
    assert projunn.projunn_t(W, gaussian((9, 1), torch.float32, g), gaussian((4, 1), torch.float32, g)).dtype == (
        torch.float32
    )
    with pytest.raises(ValueError, match=r"Expected b of shape \(4, 'k'\) to match W of shape \(9, 4\), got shape"):
        projunn.projunn_d(W, torch.zeros(9, 1), torch.zeros(9, 1))
    with pytest.raises(ValueError, match=r"Expected a of shape \(9, 'k'\).*got shape \(4, 1\)"):
        projunn.projunn_t(W, torch.zeros(4, 1), torch.zeros(4, 1))


# ---------------------------------------------------------------------------------------------
# samplers, unitarity error, polar, initialisers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["lsi", "column_sampling"])
@pytest.mark.parametrize("n, p", [(40, 7), (7, 40)], ids=str)
def test_samplers_are_exact_on_rectangular_rank_k(sampler, n, p):
    g = torch.Generator().manual_seed(9)
    for dtype in (torch.float64, torch.complex128):
        for k in (1, 3, min(n, p)):
            G = gaussian((2, n, k), dtype, g) @ gaussian((2, k, p), dtype, g)
            a, b = getattr(projunn, sampler)(G, k, generator=g)
            assert a.shape == (2, n, k) and b.shape == (2, p, k)
            assert max_abs(a @ b.mH, G) <= 1e-10 * G.abs().max().item()
    with pytest.raises(
        ValueError, match=rf"rank k must be an integer in 1\.\.min\(n, p\)=7 for a {n} × {p} matrix, got 8"
    ):
        getattr(projunn, sampler)(torch.zeros(n, p), 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128], ids=["float32", "complex128"])
@pytest.mark.parametrize("n, p", [(9, 4), (4, 9)], ids=str)
def test_unitarity_error_estimate_and_polar_of_rectangular(dtype, n, p):
    g = torch.Generator().manual_seed(10)
    M = gaussian((3, n, p), dtype, g)
    assert torch.allclose(projunn.unitarity_error(M), gram_error(M), rtol=1e-12, atol=0)
    W = haar(n, p, torch.float64, g, batch=(3,))
    assert projunn.unitarity_error(W).max().item() <= 1e-14
    assert projunn.unitarity_error(2 * W).max().item() == pytest.approx(3 * min(n, p) ** 0.5, rel=1e-12)
    # the estimate: mean over probes of ‖(W^H W − I) z‖², unbiased; with many probes close to the value
    estimate = estimate_unitarity_error(M, torch.Generator().manual_seed(0), probes=4000)
    assert torch.allclose(estimate, gram_error(M), rtol=0.1)
    P = projunn.polar(M)
    U, _, Vh = torch.linalg.svd(M.to(torch.complex128 if dtype.is_complex else torch.float64), full_matrices=False)
    assert P.shape == M.shape and P.dtype == dtype
    assert max_abs(P.to(U.dtype), U @ Vh) <= 10 * torch.finfo(REAL[dtype]).eps * min(n, p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["real", "complex"])
@pytest.mark.parametrize("shape", [(64, 8), (8, 64), (3, 40, 5)], ids=str)
def test_haar_and_identity_fill_rectangular(dtype, shape):
    n, p = shape[-2:]
    W = projunn.init.haar_(torch.empty(shape, dtype=dtype), generator=torch.Generator().manual_seed(11))
    assert gram_error(W).max().item() <= 10 * min(n, p) * torch.finfo(REAL[dtype]).eps
    # Haar: E|W_ij|² = 1/max(n, p), and complex entries have uniform phase
    assert abs(W.abs().pow(2).mean().item() * max(n, p) - 1) < 1e-5  # (exact: the Gram is the identity)
    big = projunn.init.haar_(torch.empty((200,) + (n, p), dtype=dtype), generator=torch.Generator().manual_seed(1))
    assert abs(big[..., 0, 0].abs().pow(2).mean().item() * max(n, p) - 1) < 0.25
    if dtype.is_complex:
        assert big[..., 0, 0].pow(2).mean().abs().item() * max(n, p) < 0.25
    eye = projunn.init.identity_(torch.empty(shape, dtype=dtype))
    assert torch.equal(eye, torch.eye(n, p, dtype=dtype).expand(shape))


def test_haar_square_is_unchanged():
    # the square path draws as before: the sign-fixed QR of one n × n Gaussian
    W = projunn.init.haar_(torch.empty(2, 6, 6, dtype=torch.float64), generator=torch.Generator().manual_seed(3))
    assert torch.equal(W, haar(6, 6, torch.float64, torch.Generator().manual_seed(3), batch=(2,)))


# ---------------------------------------------------------------------------------------------
# orthogonal_: declaring a parameter of any module
# ---------------------------------------------------------------------------------------------
def is_isometry(layer, x: torch.Tensor) -> float:
    """max |‖layer(x)‖ − ‖x‖| / ‖x‖ per sample."""
    y = layer(x).flatten(1)
    return ((y.norm(dim=1) - x.flatten(1).norm(dim=1)).abs() / x.flatten(1).norm(dim=1)).max().item()


def test_every_linear_of_a_model_in_two_lines():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            projunn.orthogonal_(layer)
    names = [name for name, _ in projunn.named_unitary_parameters(model)]
    assert names == ["0.weight", "2.weight", "4.weight"]
    groups = projunn.param_groups(model, unitary_lr=1e-3)
    assert len(groups) == 2 and groups[1]["unitary"] and len(groups[1]["params"]) == 3
    assert "batch_dims" not in groups[1]
    opt = projunn.ProjUNN(groups, "RMSprop", lr=1e-3, rank=4)
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    start = [p.detach().clone() for p in projunn.unitary_parameters(model)]
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for W, W0 in zip(projunn.unitary_parameters(model), start):
        assert projunn.unitarity_error(W).item() <= 1e-5
        assert max_abs(W, W0) > 1e-3
    # the first layer's map (64 × 20, tall) is an isometry, the last (10 × 64) has orthonormal rows
    assert is_isometry(lambda x: x @ model[0].weight.mT, torch.randn(16, 20)) <= 1e-5
    assert gram_error(model[4].weight).item() <= 1e-5


def test_init_modes():
    g = torch.Generator().manual_seed(12)
    layer = nn.Linear(5, 9)
    before = layer.weight.detach().clone()
    projunn.orthogonal_(layer, init="polar")
    U, _, Vh = torch.linalg.svd(before.double(), full_matrices=False)
    assert max_abs(layer.weight.double(), U @ Vh) <= 1e-6
    projunn.orthogonal_(layer, init="keep")  # already orthogonal: kept as is
    kept = layer.weight.detach().clone()
    projunn.orthogonal_(layer, init="keep")
    assert torch.equal(layer.weight, kept)
    projunn.orthogonal_(layer, init="identity")
    assert torch.equal(layer.weight, torch.eye(9, 5))
    projunn.orthogonal_(layer, init="haar", generator=g)
    assert gram_error(layer.weight).item() <= 1e-6 and not torch.equal(layer.weight, torch.eye(9, 5))
    assert layer.unitary_parameter_names == ("weight",) and layer.unitary_batch_dims == {"weight": 0}
    # a model that was built with nn.init.orthogonal_ is declared with init="keep"
    other = nn.Linear(30, 8)
    nn.init.orthogonal_(other.weight)
    projunn.orthogonal_(other, init="keep")


def test_declaration_errors_say_what_was_received():
    with pytest.raises(ValueError, match=r"not orthogonal: ‖W W\^H − I‖_F = .*init='polar'"):
        projunn.orthogonal_(nn.Linear(9, 5), init="keep")
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*Linear.bias of shape \(5,\)"):
        projunn.orthogonal_(nn.Linear(9, 5), "bias")
    with pytest.raises(ValueError, match=r"Unknown init 'cayley'; expected one of 'haar', 'identity', 'polar', 'keep'"):
        projunn.orthogonal_(nn.Linear(9, 5), init="cayley")
    with pytest.raises(ValueError, match=r"Expected Linear.bias to be an nn.Parameter, got NoneType"):
        projunn.orthogonal_(nn.Linear(9, 5, bias=False), "bias")
    with pytest.raises(ValueError, match=r"batch_dims must be an integer in 0\.\.2, got 3"):
        projunn.orthogonal_(nn.Conv2d(3, 4, 3), batch_dims=3)
    with pytest.raises(ValueError, match=r"int64"):
        layer = nn.Module()
        layer.weight = nn.Parameter(torch.zeros(3, 3, dtype=torch.int64), requires_grad=False)
        projunn.orthogonal_(layer)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        projunn.as_matrix(torch.zeros(2))
    with pytest.raises(ValueError, match=r"UnitaryRNN.weight_hh is declared unitary by its class already"):
        projunn.orthogonal_(projunn.UnitaryRNN(3, 4), "weight_hh")


def test_bad_unitary_groups_fail_before_training():
    W = nn.Parameter(haar(30, 6, torch.float32, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"rank k must be in 1\.\.min\(n, p\)=6 for a 30 × 6 matrix, got 7"):
        projunn.ProjUNN([{"params": [W], "unitary": True}], rank=7)
    with pytest.raises(ValueError, match=r"rank k must be in 1\.\.min\(n, p\)=6 for a 6 × 30 matrix, got 7"):
        projunn.ProjUNN([{"params": [nn.Parameter(W.detach().mT.contiguous())], "unitary": True}], rank=7)
    with pytest.raises(ValueError, match=r"\(shape \(6, 30\)\) is not unitary: ‖W W\^H − I‖_F"):
        projunn.ProjUNN([{"params": [nn.Parameter(2 * W.detach().mT)], "unitary": True}])
    with pytest.raises(ValueError, match=r"got shape \(6,\)"):
        projunn.ProjUNN([{"params": [nn.Parameter(torch.zeros(6))], "unitary": True}])
    conv = nn.Conv2d(2, 3, 3)
    with pytest.raises(ValueError, match=r"rank k must be in 1\.\.min\(n, p\)=3 for a 3 × 18 matrix, got 4"):
        projunn.ProjUNN(projunn.param_groups(projunn.orthogonal_(conv)), rank=4)
    with pytest.raises(ValueError, match=r"\(shape \(3, 2, 3, 3\)\) is not unitary.*give the group batch_dims=0"):
        projunn.ProjUNN([{"params": [conv.weight], "unitary": True}])  # read as 3 × 2 batches of 3 × 3
    projunn.ProjUNN([{"params": [conv.weight], "unitary": True, "batch_dims": 0}])
    with pytest.raises(ValueError, match=r"batch_dims must be None or an integer in 0\.\.2, got 3"):
        projunn.ProjUNN([{"params": [conv.weight], "unitary": True, "batch_dims": 3}])


def test_conv_kernel_is_updated_through_its_flattened_matrix():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 8, 1, bias=False), nn.Flatten(), nn.Linear(8 * 36, 4)
    )
    projunn.orthogonal_(model[0])  # (5, 2, 3, 3) → 5 × 18, wide: orthonormal rows
    projunn.orthogonal_(model[2])  # (8, 5, 1, 1) → 8 × 5, tall: orthonormal columns
    names = dict(projunn.named_unitary_parameters(model))
    assert names["0.weight"].shape == (5, 18) and names["2.weight"].shape == (8, 5)
    view = names["0.weight"]
    assert not isinstance(view, nn.Parameter) and view.data_ptr() == model[0].weight.data_ptr()
    assert projunn.unitary_parameters(model) == [model[0].weight, model[2].weight]
    groups = projunn.param_groups(model, unitary_lr=1e-2, projector="D")
    assert [(len(g["params"]), g.get("batch_dims"), g.get("projector")) for g in groups] == [
        (3, None, None),  # (the biases and the Linear)
        (2, 0, "D"),
    ]
    opt = projunn.ProjUNN(groups, "RMSprop", lr=1e-2, rank=2)
    x = torch.randn(8, 2, 6, 6)
    start = model[0].weight.detach().clone()
    for _ in range(15):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    for name, W in projunn.named_unitary_parameters(model):
        assert projunn.unitarity_error(W).item() <= 1e-5, name
    assert max_abs(model[0].weight, start) > 1e-3
    # the 1×1 convolution with orthonormal columns preserves the norm of every pixel's channels
    assert is_isometry(model[2], torch.randn(4, 5, 3, 3)) <= 1e-5


def test_unitarity_errors_measure_each_declared_matrix_of_resnet18():
    """torchvision's resnet18 with every Conv2d and Linear declared: one number per declared weight,
    the float64 error of its declared matrix (``C_out × C_in·kh·kw``), which the plain function on the
    4-d kernel does not give (it measures the ``kh × kw`` blocks)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    declared = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name in declared:
        projunn.orthogonal_(model.get_submodule(name))
    errors = projunn.unitarity_errors(model)
    assert list(errors) == [f"{name}.weight" for name in declared]  # 20 convolutions and the classifier
    assert len(errors) == 21
    for name, error in errors.items():
        W = model.get_parameter(name).detach().double()
        matrix = W.reshape(W.shape[0], -1)
        gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
        expected = torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=torch.float64))
        assert error.shape == () and error.dtype == torch.float64
        assert abs(error.item() - expected.item()) <= 1e-12 and error.item() < 1e-5, name
    with torch.no_grad():  # off the manifold, each reads its own departure
        model.conv1.weight.mul_(1.1)
    errors = projunn.unitarity_errors(model)
    assert errors["conv1.weight"].item() == pytest.approx(0.21 * 64**0.5, rel=1e-4)  # ‖(1.1² − 1) I_64‖_F
    assert max(e.item() for n, e in errors.items() if n != "conv1.weight") < 1e-5
    kernel = projunn.unitarity_error(model.conv1.weight)  # the sharp edge: the 7 × 7 blocks' errors
    assert kernel.shape == (64, 3) and kernel.min() > 1


def test_channels_last_kernel_is_written_back():
    torch.manual_seed(2)
    conv = projunn.orthogonal_(nn.Conv2d(4, 3, 3)).to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    opt = projunn.ProjUNN(projunn.param_groups(conv), "SGD", lr=0.1, rank=1, reproject_every=1, reproject_tol=0)
    start = conv.weight.detach().clone()
    conv(torch.randn(2, 4, 5, 5)).sum().backward()
    opt.step()
    matrix = projunn.as_matrix(conv.weight.detach(), 0)
    assert projunn.unitarity_error(matrix).item() <= 1e-5 and max_abs(conv.weight, start) > 1e-3


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (2, 9, 4)], ids=str)
def test_full_rank_sgd_step_is_the_projected_update(projector, shape):
    # k = min(n, p): the sketch is exact, so the step is projUNN-T/D of exactly SGD's update
    g = torch.Generator().manual_seed(13)
    W = nn.Parameter(haar(shape[-2], shape[-1], torch.float64, g, batch=shape[:-2]))
    grad = gaussian(shape, torch.float64, g)
    opt = projunn.ProjUNN(
        [{"params": [W], "unitary": True}], "SGD", lr=0.1, projector=projector, rank=min(shape[-2:]), seed=0
    )
    W0 = W.detach().clone()
    W.grad = grad
    opt.step()
    U, S, Vh = torch.linalg.svd(-0.1 * grad, full_matrices=False)
    a, b = U * S.unsqueeze(-2), Vh.mH
    assert max_abs(W.detach(), REFERENCES[projector](W0, a, b)) <= 1e-10


def test_state_dicts_round_trip():
    def build(seed: int) -> tuple[nn.Module, projunn.ProjUNN]:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 16, 6), nn.Linear(6, 3))
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                projunn.orthogonal_(layer)
        return model, projunn.ProjUNN(projunn.param_groups(model, unitary_lr=1e-2), "Adam", lr=1e-2, rank=2)

    def train(model: nn.Module, opt: projunn.ProjUNN, steps: int) -> None:
        for i in range(steps):
            x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(i))
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()

    model, opt = build(0)
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"}
    train(model, opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    twin = copy.deepcopy(model)  # the declaration travels with the module
    assert twin[0].unitary_batch_dims == {"weight": 0}
    train(model, opt, 3)
    restored, restored_opt = build(1)  # a rebuilt model declares its weights again
    buffer.seek(0)
    saved = torch.load(buffer)
    restored.load_state_dict(saved["model"])
    restored_opt.load_state_dict(saved["opt"])
    assert restored_opt.param_groups[-1]["batch_dims"] == 0
    train(restored, restored_opt, 3)
    for (name, W), (_, V) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(W, V), name


def test_capturable_steps_on_rectangular_matrices():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 40), nn.Linear(40, 6))
    for layer in model:
        projunn.orthogonal_(layer)
    for projector in ("T", "D"):
        opt = projunn.ProjUNN(projunn.param_groups(model), "RMSprop", lr=1e-3, projector=projector, capturable=True)
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(8, 16)).pow(2).sum().backward()
            opt.step()
        for _, W in projunn.named_unitary_parameters(model):
            assert projunn.unitarity_error(W).item() <= 1e-5


def fit_stiefel_target(n: int, p: int, steps: int, lr: float, seed: int = 0) -> tuple[float, float, float]:
    """RMSprop on ``−⟨W, T⟩`` (maximal at ``W = T``) for a Haar target ``T``, projUNN-T, k = 1, default
    drift control: (start distance ``‖W − T‖_F``, final distance, largest unitarity error seen)."""
    g = torch.Generator().manual_seed(seed)
    W = nn.Parameter(haar(n, p, torch.float32, g))
    target = haar(n, p, torch.float32, g)
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=lr, rank=1, seed=seed)
    start, worst = (W - target).norm().item(), 0.0
    for step in range(steps):
        opt.zero_grad()
        (-(W * target).sum()).backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            worst = max(worst, projunn.unitarity_error(W).item())
    return start, (W - target).norm().item(), worst


def test_projunn_keeps_a_tall_matrix_semi_orthogonal_and_moves_it():
    start, final, worst = fit_stiefel_target(1000, 16, steps=300, lr=5e-3)
    assert worst <= 1e-5
    assert final < 0.5 * start


@pytest.mark.slow
def test_projunn_keeps_a_30000_by_50_matrix_semi_orthogonal_over_thousands_of_steps():
    # (about 50 ms a step on one CPU core, most of it RMSprop's own passes)
    start, final, worst = fit_stiefel_target(30000, 50, steps=3000, lr=1e-3)
    assert worst <= 1e-5
    assert final < 0.5 * start

"""projUNN-T / projUNN-D against independent float64 references, plus the helpers in projunn.updates.

References (never the library's own code):
* projUNN-T: ``W exp(Ω)``, ``Ω = ½(W^H a b^H − b a^H W)``. ``exp(Ω)`` is evaluated through the
  eigen-decomposition of the Hermitian ``iΩ`` (``exp(Ω) = V e^{−iΛ} V^H``), which is accurate to
  a few ulps for any skew-Hermitian ``Ω``. ``torch.linalg.matrix_exp`` is *not* used directly:
  in torch 2.14 its unbatched path is off by up to ~1.6e-10 for ``‖Ω‖₂ ≈ 0.02-0.05`` (a wrong
  coefficient in its degree-8 Taylor path, pytorch/pytorch#196592), i.e. for exactly the small
  steps projUNN takes; ``test_reference_exp_agrees_with_matrix_exp`` ties the two together
  outside that band.
* projUNN-D: ``U V^H`` from the SVD ``W + a b^H = U Σ V^H``.
"""

from __future__ import annotations

import math

import pytest
import torch

import projunn
from projunn.linalg import adjoint_times, expm_skew, times
from tests.helpers.references import max_abs, reference_d, reference_exp, tolerance

PROJECTORS = {"T": projunn.projunn_t, "D": projunn.projunn_d}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def random_unitary(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Haar unitary/orthogonal matrices (QR of a Gaussian, R's diagonal phases moved into Q),
    built here rather than with projunn.init so the references share nothing with the library."""
    wide = torch.complex128 if dtype.is_complex else torch.float64
    Q, R = torch.linalg.qr(torch.randn(shape, dtype=wide, generator=generator))
    d = R.diagonal(dim1=-2, dim2=-1)
    return (Q * (d / d.abs()).unsqueeze(-2)).to(dtype)


def randn(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, generator=generator)


def reference_t(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    omega = 0.5 * (W.mH @ a @ b.mH - b @ a.mH @ W)
    return W @ reference_exp(omega)


REFERENCES = {"T": reference_t, "D": reference_d}


def frobenius_unitarity_error(W: torch.Tensor) -> torch.Tensor:
    """‖W^H W − I‖_F, by hand, in the input's precision widened to float64/complex128."""
    W = W.to(torch.complex128 if W.is_complex() else torch.float64)
    eye = torch.eye(W.shape[-1], dtype=W.dtype)
    return (W.mH @ W - eye).abs().pow(2).sum(dim=(-2, -1)).sqrt()


def ks_for(n: int) -> list[int]:
    """1, 2, the smallest k with 2k > n, and n (the full-rank update)."""
    return sorted({k for k in (1, 2, n // 2 + 1, n) if 1 <= k <= n})


ACCURACY_CASES = [
    pytest.param(dtype, n, k, id=f"{str(dtype).removeprefix('torch.')}-n{n}-k{k}")
    for dtype in (torch.float64, torch.complex128)
    for n in (1, 2, 3, 8, 64, 257)
    for k in ks_for(n)
]


# ---------------------------------------------------------------------------------------------
# the test oracle itself
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_reference_exp_agrees_with_matrix_exp(dtype):
    g = torch.Generator().manual_seed(0)
    for m in (2, 3, 8, 16):
        A = randn((m, m), dtype, g)
        S = A - A.mH
        for norm in (1e-3, 0.3, 1.0, 5.0):  # outside the band where matrix_exp is inaccurate
            S_n = S / torch.linalg.matrix_norm(S, 2) * norm
            assert max_abs(reference_exp(S_n), torch.linalg.matrix_exp(S_n)) <= tolerance(dtype, m) * max(1, norm)


# ---------------------------------------------------------------------------------------------
# projUNN-T and projUNN-D against the references
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("scale", [1e-3, 1.0], ids=["small-step", "unit-step"])
@pytest.mark.parametrize("dtype, n, k", ACCURACY_CASES)
def test_matches_reference(projector, scale, dtype, n, k):
    g = torch.Generator().manual_seed(1000 * n + k)
    W = random_unitary((n, n), dtype, g)
    a = randn((n, k), dtype, g) * (scale / math.sqrt(n))
    b = randn((n, k), dtype, g)
    out = PROJECTORS[projector](W, a, b)
    assert out.dtype == dtype and out.shape == (n, n)
    assert max_abs(out, REFERENCES[projector](W, a, b)) <= 1e-10


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("n, k", [(3, 1), (3, 2), (16, 1), (16, 3)])
def test_batch_equals_loop(projector, dtype, n, k):
    g = torch.Generator().manual_seed(n + k)
    W = random_unitary((5, n, n), dtype, g)
    a = randn((5, n, k), dtype, g) / math.sqrt(n)
    b = randn((5, n, k), dtype, g)
    batched = PROJECTORS[projector](W, a, b)
    looped = torch.stack([PROJECTORS[projector](W[i], a[i], b[i]) for i in range(5)])
    assert batched.shape == (5, n, n)
    assert max_abs(batched, looped) <= tolerance(dtype, n)
    assert max_abs(batched, REFERENCES[projector](W, a, b)) <= 1e-10


def test_multiple_batch_dimensions():
    g = torch.Generator().manual_seed(7)
    W = random_unitary((2, 3, 6, 6), torch.complex128, g)
    a, b = randn((2, 3, 6, 2), torch.complex128, g), randn((2, 3, 6, 2), torch.complex128, g)
    for projector in "TD":
        assert max_abs(PROJECTORS[projector](W, a, b), REFERENCES[projector](W, a, b)) <= 1e-10


# ---------------------------------------------------------------------------------------------
# degenerate steps
# ---------------------------------------------------------------------------------------------
ALL_DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]
DTYPE_IDS = ["float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("zero", ["a", "b", "both"])
@pytest.mark.parametrize("n, k", [(1, 1), (2, 1), (5, 1), (5, 3), (16, 2)])
def test_zero_step_returns_W_exactly(projector, dtype, zero, n, k):
    g = torch.Generator().manual_seed(3)
    W = random_unitary((n, n), dtype, g)
    r = randn((n, k), dtype, g)
    z = torch.zeros(n, k, dtype=dtype)
    a, b = {"a": (z, r), "b": (r, z), "both": (z, z)}[zero]
    out = PROJECTORS[projector](W, a, b)
    assert torch.equal(out, W)


def degenerate_steps(W: torch.Tensor, k: int, g: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    n, dtype = W.shape[-1], W.dtype
    a = 0.3 * randn((n, k), dtype, g)
    c = randn((k, k), dtype, g)
    return {
        "b=a": (a, a),
        "b=-a": (a, -a),
        "b=a@c": (a, a @ c),
        "b=W^H a": (a, W.mH @ a),
        "b=-0.5 W^H a": (a, -0.5 * W.mH @ a),
        "a=columns of W": (W[:, :k].clone(), a),
        "b=columns of W": (a, W[:, :k].clone()),
        "a=columns of W, b=basis vectors": (W[:, :k].clone(), torch.eye(n, dtype=dtype)[:, :k].contiguous()),
        "a of rank 1": (a[:, :1].expand(n, k).contiguous(), randn((n, k), dtype, g)),
    }


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("n, k", [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (8, 1), (8, 3), (33, 2)])
def test_parallel_factors_match_reference(projector, dtype, n, k):
    g = torch.Generator().manual_seed(10 * n + k)
    W = random_unitary((n, n), dtype, g)
    for name, (a, b) in degenerate_steps(W, k, g).items():
        out = PROJECTORS[projector](W, a, b)
        assert out.isfinite().all(), name
        assert projunn.unitarity_error(out).item() <= tolerance(dtype, n), name
        assert max_abs(out, REFERENCES[projector](W, a, b)) <= 1e-10, name


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["float32", "complex64"])
def test_parallel_factors_float32_stay_unitary(projector, dtype):
    g = torch.Generator().manual_seed(5)
    for n, k in ((2, 1), (3, 2), (16, 1), (16, 4)):
        W = random_unitary((n, n), dtype, g)
        for name, (a, b) in degenerate_steps(W, k, g).items():
            out = PROJECTORS[projector](W, a, b)
            assert out.dtype == dtype
            assert out.isfinite().all(), name
            assert projunn.unitarity_error(out).item() <= tolerance(dtype, n), (name, n, k)


# ---------------------------------------------------------------------------------------------
# dtypes, inputs untouched, errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n, k", [(2, 1), (16, 1), (16, 3), (64, 4)])
def test_dtype_kept_and_result_unitary(projector, dtype, n, k):
    g = torch.Generator().manual_seed(n * k)
    W = random_unitary((n, n), dtype, g)
    a, b = randn((n, k), dtype, g) / math.sqrt(n), randn((n, k), dtype, g)
    out = PROJECTORS[projector](W, a, b)
    assert out.dtype == dtype and not (out.is_complex() ^ dtype.is_complex)
    assert projunn.unitarity_error(out).item() <= tolerance(dtype, n)
    # the low-precision result is the float64 one rounded, not something else that is unitary
    wide = torch.complex128 if dtype.is_complex else torch.float64
    exact = REFERENCES[projector](W.to(wide), a.to(wide), b.to(wide))
    assert max_abs(out.to(wide), exact) <= 100 * tolerance(dtype, n)


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_real_step_with_mixed_precision_keeps_W_dtype(projector, dtype):
    g = torch.Generator().manual_seed(0)
    W = random_unitary((8, 8), dtype, g)
    other = torch.float64 if dtype == torch.float32 else torch.float32
    out = PROJECTORS[projector](W, randn((8, 2), other, g), randn((8, 2), other, g))
    assert out.dtype == dtype


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("which", ["a", "b", "both"])
def test_complex_step_on_real_W_raises(projector, which):
    g = torch.Generator().manual_seed(0)
    W = random_unitary((4, 4), torch.float64, g)
    real, cplx = randn((4, 1), torch.float64, g), randn((4, 1), torch.complex128, g)
    a, b = {"a": (cplx, real), "b": (real, cplx), "both": (cplx, cplx)}[which]
    with pytest.raises(ValueError, match="complex"):
        PROJECTORS[projector](W, a, b)


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
def test_inputs_not_modified(projector, dtype):
    g = torch.Generator().manual_seed(0)
    for shape, k in (((6, 6), 1), ((6, 6), 4), ((3, 6, 6), 2)):
        W = random_unitary(shape, dtype, g)
        a = randn(shape[:-1] + (k,), dtype, g)
        b = randn(shape[:-1] + (k,), dtype, g)
        clones = [x.clone() for x in (W, a, b)]
        out = PROJECTORS[projector](W, a, b)
        for x, x0 in zip((W, a, b), clones):
            assert torch.equal(x, x0)
        assert out.data_ptr() not in {W.data_ptr(), a.data_ptr(), b.data_ptr()}


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize(
    "W_shape, a_shape, b_shape, received",
    [
        ((3, 4), (3, 1), (3, 1), "(3, 4)"),
        ((4,), (4, 1), (4, 1), "(4,)"),
        ((2, 5, 4), (2, 5, 1), (2, 5, 1), "(2, 5, 4)"),
        ((4, 4), (5, 1), (4, 1), "(5, 1)"),
        ((4, 4), (4, 1), (3, 1), "(3, 1)"),
        ((4, 4), (4,), (4, 1), "(4,)"),
        ((2, 4, 4), (3, 4, 1), (2, 4, 1), "(3, 4, 1)"),
        ((2, 4, 4), (4, 1), (4, 1), "(4, 1)"),
    ],
)
def test_shape_errors_name_the_received_shape(projector, W_shape, a_shape, b_shape, received):
    W, a, b = torch.zeros(W_shape), torch.zeros(a_shape), torch.zeros(b_shape)
    with pytest.raises(ValueError) as info:
        PROJECTORS[projector](W, a, b)
    assert received in str(info.value)


@pytest.mark.parametrize("projector", ["T", "D"])
def test_rank_mismatch_and_empty_rank_raise(projector):
    W = torch.eye(4)
    with pytest.raises(ValueError, match="1 and 2"):
        PROJECTORS[projector](W, torch.zeros(4, 1), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="0"):
        PROJECTORS[projector](W, torch.zeros(4, 0), torch.zeros(4, 0))


# ---------------------------------------------------------------------------------------------
# unitarity_error, polar, expm_skew
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
def test_unitarity_error_matches_hand_computation(dtype):
    g = torch.Generator().manual_seed(0)
    M = randn((2, 3, 5, 5), dtype, g)
    err = projunn.unitarity_error(M)
    assert err.shape == (2, 3) and err.dtype == torch.float64
    by_hand = torch.tensor(
        [
            [
                torch.linalg.norm(M[i, j].mH.to(torch.complex128) @ M[i, j].to(torch.complex128) - torch.eye(5)).item()
                for j in range(3)
            ]
            for i in range(2)
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(err, by_hand, rtol=1e-12, atol=0)
    assert torch.allclose(err, frobenius_unitarity_error(M), rtol=1e-12, atol=0)


def test_unitarity_error_uses_conjugate_transpose():
    # A diagonal unitary with non-real phases: W^T W ≠ I but W^H W = I.
    phases = torch.tensor([0.3, 1.1, -2.0], dtype=torch.float64)
    W = torch.diag(torch.polar(torch.ones(3, dtype=torch.float64), phases))
    assert projunn.unitarity_error(W).item() <= 1e-15
    assert projunn.unitarity_error(2 * W).item() == pytest.approx(3 * math.sqrt(3), rel=1e-12)


def test_unitarity_error_rejects_a_vector():
    # (rectangular matrices are measured by their smaller Gram matrix: test_stiefel.py)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        projunn.unitarity_error(torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_polar_is_the_closest_unitary(dtype):
    g = torch.Generator().manual_seed(0)
    n = 6
    M = randn((4, n, n), dtype, g)
    P = projunn.polar(M)
    assert P.shape == M.shape and P.dtype == dtype
    assert projunn.unitarity_error(P).max().item() <= tolerance(dtype, n)
    # M = P H with H = (M^H M)^{1/2} Hermitian positive definite: P = M (M^H M)^{-1/2}, computed by eigh.
    lam, V = torch.linalg.eigh(M.mH @ M)
    inv_sqrt = (V * lam.rsqrt().to(dtype).unsqueeze(-2)) @ V.mH
    assert max_abs(P, M @ inv_sqrt) <= 1e-10
    H = P.mH @ M
    assert max_abs(H, H.mH) <= 1e-12
    assert torch.linalg.eigvalsh(H).min().item() > 0
    # and no nearby unitary matrix is closer to M
    distance = torch.linalg.matrix_norm(M - P)
    for _ in range(20):
        A = 1e-2 * randn((4, n, n), dtype, g)
        other = P @ reference_exp(A - A.mH)
        assert (torch.linalg.matrix_norm(M - other) > distance).all()


def test_polar_of_unitary_is_itself_and_rejects_a_vector():
    g = torch.Generator().manual_seed(0)
    W = random_unitary((3, 7, 7), torch.complex128, g)
    assert max_abs(projunn.polar(W), W) <= tolerance(torch.complex128, 7)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        projunn.polar(torch.zeros(3))


def random_skew(m: int, norm: float, dtype: torch.dtype, g: torch.Generator, batch: int = 4) -> torch.Tensor:
    A = randn((batch, m, m), dtype, g)
    S = A - A.mH
    return S / torch.linalg.matrix_norm(S, 2, keepdim=True) * norm


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("m", range(2, 17))
def test_expm_skew_matches_exp(dtype, m):
    g = torch.Generator().manual_seed(m)
    for norm in (0.0, 1e-300, 1e-12, 1e-6, 1e-3, 0.04, 0.3, 1.0, 3.0, 10.0):
        S = random_skew(m, norm, dtype, g)
        E = expm_skew(S)
        assert E.dtype == dtype and E.shape == S.shape
        assert max_abs(E, reference_exp(S)) <= tolerance(dtype, m) * max(1.0, norm), norm
    # torch.linalg.matrix_exp, batched (its batched path is accurate at these norms too)
    S = random_skew(m, 0.7, dtype, g)
    assert max_abs(expm_skew(S), torch.linalg.matrix_exp(S)) <= tolerance(dtype, m)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("m", [2, 3, 4, 5, 8, 16])
def test_expm_skew_large_norm(dtype, m):
    """Backward-stable accuracy at large norms: error ≤ 10·16·eps·‖S‖ (the 10·n·eps rule for the
    largest size here, times the norm). torch.linalg.matrix_exp stays within 5·eps·‖S‖ on these
    matrices; an error growing like eps·‖S‖² (an eigenvalue of S^H S near zero recovered from
    eigh with absolute error eps·‖S‖², then square-rooted) fails this."""
    g = torch.Generator().manual_seed(m)
    for norm in (100.0, 1e3, 1e4):
        S = random_skew(m, norm, dtype, g)
        bound = tolerance(dtype, 16) * norm
        assert max_abs(torch.linalg.matrix_exp(S), reference_exp(S)) <= bound  # the oracle agrees with torch
        assert max_abs(expm_skew(S), reference_exp(S)) <= bound, f"‖S‖₂ = {norm:g}"


def test_expm_skew_real_2x2_is_rotation():
    theta = torch.tensor([0.0, 1e-8, 0.04, 1.0, math.pi, -2.5], dtype=torch.float64)
    S = torch.zeros(6, 2, 2, dtype=torch.float64)
    S[:, 0, 1], S[:, 1, 0] = -theta, theta
    rotation = torch.stack([theta.cos(), -theta.sin(), theta.sin(), theta.cos()], dim=-1).reshape(6, 2, 2)
    assert max_abs(expm_skew(S), rotation) <= 4 * torch.finfo(torch.float64).eps


# ---------------------------------------------------------------------------------------------
# skinny products (Note [skinny products])
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "shape, k", [((1024, 1024), 1), ((1024, 1024), 3), ((2, 1024, 1024), 2), ((1025, 1025), 1), ((8, 8), 2)]
)
def test_skinny_products_match_matmul(dtype, threads, shape, k):
    """Large products are summed over row blocks, one per thread, when the rows split evenly
    (1024 rows over 2 threads); otherwise (1024 over 3, 1025, 8) they take the plain product."""
    g = torch.Generator().manual_seed(k)
    W = randn(shape, dtype, g)
    X = randn(shape[:-1] + (k,), dtype, g)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        adjoint, plain = adjoint_times(W, X), times(W, X)
    finally:
        torch.set_num_threads(before)
    assert adjoint.shape == plain.shape == X.shape
    bound = 1e-12 * math.sqrt(shape[-1])
    assert max_abs(adjoint, W.mH @ X) <= bound
    assert max_abs(plain, W @ X) <= bound

"""The rank-k samplers: exact recovery of rank-k inputs, determinism, argument checks, non-finite input."""

from __future__ import annotations

import pytest
import torch

import projunn

SAMPLERS = {"lsi": projunn.lsi, "column": projunn.column_sampling}
DTYPES = [torch.float64, torch.complex128]
DTYPE_IDS = ["real", "complex"]


def low_rank(shape: tuple[int, ...], k: int, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    """``G = X Y^H`` with Gaussian ``X, Y`` of shape ``(..., n, k)``: rank exactly k (almost surely)."""
    *batch, n, _ = shape
    X = torch.randn((*batch, n, k), dtype=dtype, generator=g)
    Y = torch.randn((*batch, n, k), dtype=dtype, generator=g)
    return X @ Y.mH


def relative_error(a: torch.Tensor, b: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """‖a b^H − G‖_F / ‖G‖_F per matrix."""
    return torch.linalg.matrix_norm(a @ b.mH - G) / torch.linalg.matrix_norm(G)


RECOVERY_CASES = [
    pytest.param(n, k, id=f"n{n}-k{k}")
    for n, k in [(1, 1), (2, 1), (2, 2), (5, 2), (5, 5), (16, 1), (16, 3), (16, 16), (64, 4), (100, 7)]
]


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n, k", RECOVERY_CASES)
def test_exact_recovery_of_rank_k(sampler, dtype, n, k):
    g = torch.Generator().manual_seed(n * 100 + k)
    G = low_rank((n, n), k, dtype, g)
    a, b = SAMPLERS[sampler](G, k, generator=g)
    assert a.shape == (n, k) and b.shape == (n, k)
    assert a.dtype == dtype and b.dtype == dtype
    assert relative_error(a, b, G).item() <= 1e-8


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_exact_recovery_batched(sampler, dtype):
    g = torch.Generator().manual_seed(0)
    n, k = 12, 3
    G = low_rank((2, 3, n, n), k, dtype, g)
    a, b = SAMPLERS[sampler](G, k, generator=g)
    assert a.shape == (2, 3, n, k) and b.shape == (2, 3, n, k)
    error = relative_error(a, b, G)
    assert error.shape == (2, 3) and error.max().item() <= 1e-8


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_recovery_of_lower_rank_and_float32(sampler):
    g = torch.Generator().manual_seed(1)
    # rank 2 < k = 5: still exact
    G = low_rank((20, 20), 2, torch.float64, g)
    a, b = SAMPLERS[sampler](G, 5, generator=g)
    assert relative_error(a, b, G).item() <= 1e-8
    # float32 in, float32 out, exact to float32 precision
    G = low_rank((20, 20), 3, torch.complex64, g)
    a, b = SAMPLERS[sampler](G, 3, generator=g)
    assert a.dtype == b.dtype == torch.complex64
    assert relative_error(a, b, G).item() <= 1e-4


def test_samplers_give_documented_factorisations():
    """lsi: a = G v, b = v with orthonormal v; column: a = h orthonormal, b = G^H h."""
    g = torch.Generator().manual_seed(2)
    G = torch.randn(10, 10, dtype=torch.complex128, generator=g)
    eye = torch.eye(3, dtype=torch.complex128)
    a, b = projunn.lsi(G, 3, generator=g)
    assert torch.allclose(b.mH @ b, eye, atol=1e-12) and torch.allclose(a, G @ b, atol=1e-12)
    a, b = projunn.column_sampling(G, 3, generator=g)
    assert torch.allclose(a.mH @ a, eye, atol=1e-12) and torch.allclose(b, G.mH @ a, atol=1e-12)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", DTYPES + [torch.float32], ids=DTYPE_IDS + ["float32"])
def test_deterministic_given_generator(sampler, dtype):
    g = torch.Generator().manual_seed(4)
    G = torch.randn(3, 16, 16, dtype=dtype, generator=g)  # rank 16 > k: the draws matter
    a1, b1 = SAMPLERS[sampler](G, 2, generator=torch.Generator().manual_seed(123))
    a2, b2 = SAMPLERS[sampler](G, 2, generator=torch.Generator().manual_seed(123))
    a3, b3 = SAMPLERS[sampler](G, 2, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.allclose(a1 @ b1.mH, a3 @ b3.mH)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_draws_advance_the_generator(sampler):
    g = torch.Generator().manual_seed(5)
    G = torch.randn(16, 16, dtype=torch.float64, generator=g)
    gen = torch.Generator().manual_seed(0)
    a1, b1 = SAMPLERS[sampler](G, 2, generator=gen)
    a2, b2 = SAMPLERS[sampler](G, 2, generator=gen)
    assert not torch.allclose(a1 @ b1.mH, a2 @ b2.mH)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_input_not_modified(sampler):
    g = torch.Generator().manual_seed(6)
    G = torch.randn(2, 9, 9, dtype=torch.complex128, generator=g)
    G0 = G.clone()
    SAMPLERS[sampler](G, 3, generator=g)
    assert torch.equal(G, G0)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("k", [0, -1, 6, 1.5, 2.0, "2", True, None], ids=repr)
def test_invalid_rank_names_received_value(sampler, k):
    G = torch.zeros(5, 5)
    with pytest.raises(ValueError) as info:
        SAMPLERS[sampler](G, k)
    assert f"got {k!r}" in str(info.value)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_rank_limit_is_the_smaller_side(sampler):
    assert SAMPLERS[sampler](torch.randn(6, 4), 4)[0].shape == (6, 4)
    with pytest.raises(ValueError, match="got 5"):
        SAMPLERS[sampler](torch.randn(6, 4), 5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_one_dimensional_input_rejected(sampler):
    with pytest.raises(ValueError, match=r"\(5,\)"):
        SAMPLERS[sampler](torch.zeros(5), 1)


@pytest.mark.parametrize("c", [1, 9, 2.5, "3", True], ids=repr)
def test_column_sampling_rejects_invalid_c(c):
    G = torch.randn(8, 8)
    with pytest.raises(ValueError) as info:
        projunn.column_sampling(G, 2, c=c)
    assert f"got {c!r}" in str(info.value)


@pytest.mark.parametrize("c", [2, 5, 8])
def test_column_sampling_accepts_c_from_k_to_n(c):
    g = torch.Generator().manual_seed(c)
    G = low_rank((8, 8), 2, torch.float64, g)
    a, b = projunn.column_sampling(G, 2, c=c, generator=g)
    assert relative_error(a, b, G).item() <= 1e-8


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.complex64], ids=["float32", "float64", "complex64"]
)
@pytest.mark.parametrize("k", [1, 3])
def test_non_finite_input_poisons_only_its_matrix(sampler, bad, dtype, k):
    g = torch.Generator().manual_seed(7)
    G = torch.randn(4, 10, 10, dtype=dtype, generator=g)
    clean = SAMPLERS[sampler](G, k, generator=torch.Generator().manual_seed(0))
    G[2, 3, 4] = bad
    a, b = SAMPLERS[sampler](G, k, generator=torch.Generator().manual_seed(0))  # no exception
    finite = torch.isfinite(a).flatten(-2).all(-1)
    assert finite.tolist() == [True, True, False, True]
    # the other matrices get what they would have got without the bad one
    for i in (0, 1, 3):
        assert torch.isfinite(b[i]).all()
        assert torch.allclose(a[i] @ b[i].mH, clean[0][i] @ clean[1][i].mH, atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128], ids=["float32", "complex128"])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_zero_input_gives_zero_product(sampler, dtype, k):
    G = torch.zeros(2, 5, 5, dtype=dtype)
    a, b = SAMPLERS[sampler](G, k, generator=torch.Generator().manual_seed(0))
    assert a.isfinite().all() and b.isfinite().all()
    assert torch.equal(a @ b.mH, torch.zeros_like(G))


def test_column_sampling_with_few_nonzero_columns():
    """Fewer than c nonzero columns: still c distinct draws, and still exact."""
    g = torch.Generator().manual_seed(8)
    G = torch.zeros(10, 10, dtype=torch.float64)
    G[:, 3] = torch.randn(10, dtype=torch.float64, generator=g)
    a, b = projunn.column_sampling(G, 2, c=8, generator=g)
    assert relative_error(a, b, G).item() <= 1e-12


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_large_finite_input_gives_finite_exact_factors(sampler):
    """Finite float32 entries near 1e20: squares overflow float32, the matrix does not; a finite G
    must not be mistaken for a non-finite one (which the optimizer would then skip)."""
    g = torch.Generator().manual_seed(9)
    G = low_rank((8, 8), 2, torch.float32, g) * 1e20
    a, b = SAMPLERS[sampler](G, 2, generator=g)
    assert a.isfinite().all() and b.isfinite().all()
    assert relative_error(a.double(), b.double(), G.double()).item() <= 1e-4

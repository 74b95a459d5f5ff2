"""The initialisers (projunn.init): unitary matrices of every dtype, the baselines' distributions
against float64 references, determinism and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import projunn
from projunn import init
from tests.helpers.references import reference_exp, tolerance

ALL_DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]
DTYPE_IDS = ["float32", "float64", "complex64", "complex128"]
RANDOM_INITS = {
    "haar": init.haar_,
    "henaff": init.henaff_,
    "cayley": init.cayley_,
    "exprnn_cayley": init.exprnn_cayley_,
}


def block_skew(s: torch.Tensor, n: int) -> torch.Tensor:
    """Block-diagonal ``A`` with 2×2 blocks ``[[0, s_i], [−s_i, 0]]`` (a trailing 0 for odd n);
    ``s`` has shape ``(..., n // 2)``."""
    A = torch.zeros(s.shape[:-1] + (n, n), dtype=torch.float64)
    for i in range(n // 2):
        A[..., 2 * i, 2 * i + 1] = s[..., i]
        A[..., 2 * i + 1, 2 * i] = -s[..., i]
    return A


# ---------------------------------------------------------------------------------------------
# initialisers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["identity", "haar", "henaff", "cayley", "exprnn_cayley"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (5, 5), (16, 16), (3, 7, 7), (2, 3, 4, 4)], ids=str)
def test_initialisers_give_unitary_matrices(name, dtype, shape):
    W = torch.full(shape, float("nan"), dtype=dtype)
    out = init.INITIALISERS[name](W)
    assert out is W and W.dtype == dtype and W.shape == shape
    assert W.isfinite().all()
    assert projunn.unitarity_error(W).max().item() <= tolerance(dtype, shape[-1])


def test_identity_is_identity():
    W = init.identity_(torch.empty(2, 4, 4, dtype=torch.complex64))
    assert torch.equal(W, torch.eye(4, dtype=torch.complex64).expand(2, 4, 4))


@pytest.mark.parametrize("name", list(RANDOM_INITS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128], ids=["float32", "complex128"])
def test_deterministic_given_generator(name, dtype):
    fill = RANDOM_INITS[name]
    a = fill(torch.empty(3, 6, 6, dtype=dtype), generator=torch.Generator().manual_seed(0))
    b = fill(torch.empty(3, 6, 6, dtype=dtype), generator=torch.Generator().manual_seed(0))
    c = fill(torch.empty(3, 6, 6, dtype=dtype), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # each matrix of a batch has its own draw


@pytest.mark.parametrize("name", list(RANDOM_INITS))
def test_initialiser_does_not_record_autograd(name):
    W = nn.Parameter(torch.empty(4, 4))
    RANDOM_INITS[name](W, generator=torch.Generator().manual_seed(0))
    assert W.grad_fn is None and W.is_leaf


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.complex128, torch.float32], ids=["float64", "complex128", "float32"]
)
@pytest.mark.parametrize("shape", [(2, 2), (5, 5), (8, 8), (3, 6, 6), (4, 7, 7)], ids=str)
def test_henaff_is_exp_of_block_skew(dtype, shape):
    n = shape[-1]
    W = init.henaff_(torch.empty(shape, dtype=dtype), generator=torch.Generator().manual_seed(0))
    # henaff_ draws s ~ U[−π, π] as one torch.rand of shape (..., n // 2) in float64
    u = torch.rand(shape[:-2] + (n // 2,), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = u * (2 * math.pi) - math.pi
    expected = reference_exp(block_skew(s, n))
    assert (W.to(torch.complex128) - expected).abs().max().item() <= tolerance(dtype, n)


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.complex128, torch.float32], ids=["float64", "complex128", "float32"]
)
@pytest.mark.parametrize("shape", [(2, 2), (5, 5), (8, 8), (3, 6, 6), (4, 7, 7)], ids=str)
def test_cayley_is_scornn_cayley_transform(dtype, shape):
    n = shape[-1]
    W = init.cayley_(torch.empty(shape, dtype=dtype), generator=torch.Generator().manual_seed(0))
    # cayley_ draws θ ~ U[0, π/2] as one torch.rand of shape (..., n // 2) in float64
    theta = torch.rand(shape[:-2] + (n // 2,), dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * (
        math.pi / 2
    )
    s = -torch.sqrt((1 - torch.cos(theta)) / (1 + torch.cos(theta)))
    A = block_skew(s, n)
    eye = torch.eye(n, dtype=torch.float64)
    expected = torch.linalg.solve(eye + A, eye - A).mT  # scoRNN's matrix, transposed (it multiplies h W)
    assert (W.to(torch.complex128) - expected).abs().max().item() <= tolerance(dtype, n)
    # scoRNN's θ ∈ [0, π/2]: each block is a rotation with cos θ ≥ 0 and, transposed, -sin θ ≤ 0 top right
    if n >= 2:
        assert (W.real[..., 0, 0] >= 0).all() and (W.real[..., 0, 1] <= 0).all()


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.complex128, torch.float32], ids=["float64", "complex128", "float32"]
)
@pytest.mark.parametrize("shape", [(2, 2), (5, 5), (8, 8), (3, 6, 6)], ids=str)
def test_exprnn_cayley_is_the_exponential_of_scornns_blocks(dtype, shape):
    # expRNN's pMNIST start (initialization.py, cayley_init_, then its expm): exp of the skew A whose
    # blocks are scoRNN's -tan(θ/2), θ ~ U[0, π/2], the same draws as cayley_
    n = shape[-1]
    W = init.exprnn_cayley_(torch.empty(shape, dtype=dtype), generator=torch.Generator().manual_seed(0))
    theta = torch.rand(shape[:-2] + (n // 2,), dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * (
        math.pi / 2
    )
    s = -torch.sqrt((1 - torch.cos(theta)) / (1 + torch.cos(theta)))
    expected = reference_exp(block_skew(s, n)).mT  # expRNN's exp(A), transposed (it multiplies h B)
    assert (W.to(torch.complex128) - expected).abs().max().item() <= tolerance(dtype, n)
    assert (s >= -1).all()  # rotations by at most 1 radian, not by θ ∈ [0, π/2]


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_haar_trace_moments(dtype, n):
    """For Haar W on O(n) or U(n), every n ≥ 1: E tr W = 0, E |tr W|² = 1, and E tr W² = 1 (real)
    or 0 (complex). Over N = 4000 draws the sample means have standard deviations ≲ 0.03; the
    bounds are > 3 of them. A QR without the sign fix fails them (E tr Q ≈ −0.8 at n = 4)."""
    N = 4000
    W = init.haar_(torch.empty(N, n, n, dtype=dtype), generator=torch.Generator().manual_seed(n))
    trace = W.diagonal(dim1=-2, dim2=-1).sum(-1)
    trace_sq = (W @ W).diagonal(dim1=-2, dim2=-1).sum(-1)
    assert trace.mean().abs().item() < 0.1
    assert abs(trace.abs().pow(2).mean().item() - 1) < 0.15
    expected_trace_sq = 0.0 if dtype.is_complex else 1.0
    assert abs(trace_sq.mean() - expected_trace_sq).item() < 0.15
    # entries: E |W_ij|² = 1/n, and complex entries have uniform phase (E W_ij² = 0)
    assert abs(W.abs().pow(2).mean().item() * n - 1) < 0.05
    if dtype.is_complex:
        assert W.pow(2).mean().abs().item() * n < 0.05


@pytest.mark.parametrize(
    "name, shape",
    [(name, shape) for name in ("henaff", "cayley", "exprnn_cayley") for shape in ((3, 4), (4,), (2, 3, 5))]
    + [(name, (4,)) for name in ("identity", "haar")],  # (these two fill rectangular tensors: test_stiefel.py)
    ids=str,
)
def test_initialisers_reject_non_square(name, shape):
    with pytest.raises(ValueError) as info:
        init.INITIALISERS[name](torch.empty(shape))
    assert str(tuple(shape)) in str(info.value)


@pytest.mark.parametrize("name", ["identity", "haar", "henaff", "cayley", "exprnn_cayley"])
def test_initialisers_reject_integer_dtype(name):
    with pytest.raises(ValueError, match="int64"):
        init.INITIALISERS[name](torch.empty(3, 3, dtype=torch.int64))

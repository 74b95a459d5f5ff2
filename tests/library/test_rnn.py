"""Initialisers (projunn.init) and the unitary RNN layers (projunn.rnn)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
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


# ---------------------------------------------------------------------------------------------
# ModReLU
# ---------------------------------------------------------------------------------------------
def modrelu_with_bias(bias: list[float], dtype: torch.dtype = torch.float64) -> projunn.ModReLU:
    m = projunn.ModReLU(len(bias)).to(dtype)
    with torch.no_grad():
        m.bias.copy_(torch.tensor(bias, dtype=dtype))
    return m


def test_modrelu_real_formula():
    m = modrelu_with_bias([0.5, -0.5, 0.0, -2.0])
    z = torch.tensor([[1.0, 1.0, -3.0, 1.5], [-0.2, -0.7, 0.0, -2.5]], dtype=torch.float64)
    # sign(z) · relu(|z| + b), entry by entry
    expected = torch.tensor([[1.5, 0.5, -3.0, 0.0], [-0.7, -0.2, 0.0, -0.5]], dtype=torch.float64)
    assert torch.allclose(m(z), expected, rtol=0, atol=1e-15)


def test_modrelu_complex_formula():
    m = modrelu_with_bias([0.5, -1.0, 0.0])
    z = torch.tensor([[3 + 4j, 3 + 4j, -1j], [0.6 - 0.8j, 0.3j, 1e-3 + 0j]], dtype=torch.complex128)
    # relu(|z| + b) · z / |z|: |3+4i| = 5 → 5.5·(0.6+0.8i) and 4·(0.6+0.8i); |0.3i| + (−1) < 0 → 0
    expected = torch.tensor(
        [[5.5 * (0.6 + 0.8j), 4 * (0.6 + 0.8j), -1j], [1.5 * (0.6 - 0.8j), 0, 1e-3]], dtype=torch.complex128
    )
    assert torch.allclose(m(z), expected, rtol=0, atol=1e-15)


def test_modrelu_complex_on_real_axis_matches_real_modrelu():
    m = modrelu_with_bias([0.3, -0.3, 0.1])
    z = torch.tensor([[1.0, -2.0, 0.25], [-0.05, 0.4, -1.0]], dtype=torch.float64)
    assert torch.allclose(m(z.to(torch.complex128)).real, m(z), atol=1e-15)
    assert m(z.to(torch.complex128)).imag.abs().max().item() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128], ids=DTYPE_IDS)
@pytest.mark.parametrize("bias", [-0.5, 0.0, 0.01, 0.5])
def test_modrelu_at_zero_forward_and_backward_finite(dtype, bias):
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    m = modrelu_with_bias([bias, bias], real)
    z = torch.zeros(3, 2, dtype=dtype, requires_grad=True)
    out = m(z)
    assert torch.equal(out.detach(), torch.zeros_like(out))
    upstream = torch.ones_like(out)
    # the first layer at a zero input and zero state: z = 0 twice in a row (two RNN steps)
    out2 = m(out * 2)
    out2.backward(upstream)
    assert torch.isfinite(z.grad).all(), z.grad
    assert torch.isfinite(m.bias.grad).all(), m.bias.grad


# ---------------------------------------------------------------------------------------------
# UnitaryRNNCell / UnitaryRNN
# ---------------------------------------------------------------------------------------------
RNN_CONFIGS = [
    pytest.param({"nonlinearity": "relu"}, id="real-relu"),
    pytest.param({"nonlinearity": "modrelu"}, id="real-modrelu"),
    pytest.param({"nonlinearity": "modrelu", "complex": True}, id="complex-modrelu"),
    pytest.param({"nonlinearity": "modrelu", "complex": True, "dtype": torch.float64}, id="complex128-modrelu"),
]


@pytest.mark.parametrize("config", RNN_CONFIGS)
def test_rnn_output_shape_and_dtype(config):
    torch.manual_seed(0)
    rnn = projunn.UnitaryRNN(3, 8, **config)
    out, h = rnn(torch.randn(5, 7, 3))
    assert out.shape == (5, 7, 8) and h.shape == (5, 8)
    assert torch.equal(out[:, -1], h)
    expected = rnn.weight_hh.dtype
    assert out.dtype == expected and rnn.weight_ih.dtype == expected
    assert expected.is_complex == config.get("complex", False)
    if config.get("dtype") == torch.float64:
        assert expected == torch.complex128


@pytest.mark.parametrize("config", RNN_CONFIGS)
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=None", "h0"])
def test_rnn_equals_loop_of_cells(config, with_h0):
    torch.manual_seed(0)
    rnn = projunn.UnitaryRNN(3, 8, **config)
    cell = projunn.UnitaryRNNCell(3, 8, **config)
    cell.load_state_dict(rnn.state_dict())
    x = torch.randn(4, 6, 3)
    h0 = torch.randn(4, 8, dtype=rnn.weight_hh.dtype) if with_h0 else None
    out, h_last = rnn(x, h0)
    h = h0
    for t in range(6):
        h = cell(x[:, t], h)
        assert torch.allclose(out[:, t], h, rtol=1e-5, atol=1e-6)  # float32 rounding, accumulated
    assert torch.allclose(h_last, h, rtol=1e-5, atol=1e-6)


def test_cell_step_formula():
    """h' = σ(W h + V x + c), written out by hand for the relu cell."""
    torch.manual_seed(0)
    cell = projunn.UnitaryRNNCell(3, 5, nonlinearity="relu", init="haar", dtype=torch.float64)
    with torch.no_grad():
        cell.bias_ih.uniform_(-1, 1)
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    expected = torch.relu(h @ cell.weight_hh.T + x @ cell.weight_ih.T + cell.bias_ih)
    assert torch.allclose(cell(x, h), expected, atol=1e-14)
    # and W acts on h as a matrix-vector product W h (not h W)
    single = torch.relu(cell.weight_hh @ h[0] + cell.weight_ih @ x[0] + cell.bias_ih)
    assert torch.allclose(cell(x, h)[0], single, atol=1e-14)


def test_relu_cell_without_bias():
    # the authors' copy and adding cells: h' = relu(W h + V x), no bias anywhere
    torch.manual_seed(0)
    cell = projunn.UnitaryRNNCell(3, 5, nonlinearity="relu", init="haar", dtype=torch.float64, bias=False)
    assert cell.bias_ih is None and [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh"]
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    assert torch.allclose(cell(x, h), torch.relu(h @ cell.weight_hh.T + x @ cell.weight_ih.T), atol=1e-14)
    modrelu = projunn.UnitaryRNNCell(3, 5, nonlinearity="modrelu", bias=False)  # modReLU keeps its threshold
    assert modrelu.bias_ih is None and modrelu.activation.bias.shape == (5,)


@pytest.mark.parametrize("init_name", ["identity", "haar", "henaff", "cayley", "exprnn_cayley"])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_rnn_weight_hh_starts_unitary(init_name, complex_):
    rnn = projunn.UnitaryRNN(2, 9, init=init_name, complex=complex_)
    assert projunn.unitarity_error(rnn.weight_hh).item() <= tolerance(rnn.weight_hh.dtype, 9)


def test_rnn_argument_errors():
    with pytest.raises(ValueError, match="relu"):
        projunn.UnitaryRNN(3, 8, nonlinearity="relu", complex=True)
    with pytest.raises(ValueError, match="'tanh'"):
        projunn.UnitaryRNN(3, 8, nonlinearity="tanh")
    with pytest.raises(ValueError, match="'orthogonal'"):
        projunn.UnitaryRNN(3, 8, init="orthogonal")
    with pytest.raises(ValueError, match="0"):
        projunn.UnitaryRNN(3, 0)
    rnn = projunn.UnitaryRNN(3, 8)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        rnn(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\(2, 5, 4\)"):
        rnn(torch.randn(2, 5, 4))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"nonlinearity": "relu", "dtype": torch.float64}, id="real-relu"),
        pytest.param({"nonlinearity": "modrelu", "dtype": torch.float64}, id="real-modrelu"),
        pytest.param({"nonlinearity": "modrelu", "complex": True, "dtype": torch.float64}, id="complex-modrelu"),
    ],
)
def test_rnn_gradients_match_finite_differences(config):
    torch.manual_seed(0)
    rnn = projunn.UnitaryRNN(2, 4, **config)
    x = torch.randn(3, 5, 2, dtype=torch.float64)

    def loss(weight_hh, weight_ih):
        out, _ = torch.func.functional_call(rnn, {"weight_hh": weight_hh, "weight_ih": weight_ih}, (x,))
        return out.abs().pow(2).sum()

    params = (rnn.weight_hh.detach().clone().requires_grad_(), rnn.weight_ih.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("config", RNN_CONFIGS)
def test_gradients_flow_to_weight_hh(config):
    torch.manual_seed(0)
    rnn = projunn.UnitaryRNN(3, 8, **config)
    out, _ = rnn(torch.randn(4, 6, 3))
    out.abs().pow(2).mean().backward()
    for name, p in rnn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert rnn.weight_hh.grad.abs().max().item() > 0


@pytest.mark.parametrize("config", RNN_CONFIGS)
def test_rnn_gradients_finite_with_leading_zero_inputs(config):
    """Zero inputs at the start of a sequence (pMNIST's black border pixels, padding) with h0 = 0
    make the pre-activation exactly 0 for several steps; the gradients must stay finite."""
    torch.manual_seed(0)
    rnn = projunn.UnitaryRNN(1, 8, **config)
    x = torch.randn(2, 10, 1)
    x[:, :3] = 0
    out, _ = rnn(x)
    out.abs().sum().backward()
    for name, p in rnn.named_parameters():
        assert torch.isfinite(p.grad).all(), f"{name}: {p.grad}"


@pytest.mark.parametrize("config", RNN_CONFIGS[:3])
@pytest.mark.parametrize("projector", ["T", "D"])
def test_projunn_keeps_rnn_unitary_while_training(config, projector):
    """A toy task (predict the running mean of the inputs from the last state) for 50 steps."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"rnn": projunn.UnitaryRNN(2, 16, **config), "head": nn.Linear(16, 1)})
    if model["rnn"].weight_hh.is_complex():
        model["head"] = nn.Linear(32, 1)
    opt = projunn.ProjUNN(
        projunn.param_groups(model, unitary_lr=1e-2), "RMSprop", lr=1e-2, projector=projector, rank=2, seed=0
    )
    g = torch.Generator().manual_seed(1)
    W0 = model["rnn"].weight_hh.detach().clone()

    def loss_fn():
        x = torch.randn(32, 10, 2, generator=g)
        _, h = model["rnn"](x)
        features = torch.view_as_real(h).flatten(-2) if h.is_complex() else h
        return F.mse_loss(model["head"](features).squeeze(-1), x.mean(dim=(1, 2)))

    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert projunn.unitarity_error(model["rnn"].weight_hh).item() <= tolerance(W0.dtype, 16)
    assert not torch.allclose(model["rnn"].weight_hh, W0)
    assert sum(losses[-10:]) < sum(losses[:10])

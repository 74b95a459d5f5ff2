"""The unitary RNN layers (projunn.rnn): ModReLU, the cell and the layer against their formulas and the
step-by-step loop, gradients, training with projUNN; the fused recurrence (Note [fused recurrence]) and
its compiled C++ loop against the step-by-step loop, on every device."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import projunn
from projunn import _kernels
from tests.helpers.devices import DEVICES
from tests.helpers.references import tolerance

DTYPE_IDS = ["float32", "float64", "complex64", "complex128"]


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


# ---------------------------------------------------------------------------------------------
# the fused recurrence (Note [fused recurrence]) against the step-by-step loop
# ---------------------------------------------------------------------------------------------
# the recurrent tasks' shapes: (input size, hidden size, T) of pMNIST, copy T = 1000, adding T = 200 and
# T = 750; the batch is small, the lengths are the tasks' own (several weight-gradient blocks each)
TASK_SHAPES = {"pmnist": (1, 170, 784), "copy": (10, 190, 1020), "adding200": (2, 170, 200), "adding750": (2, 170, 750)}


FUSED_PATHS = [(True, True), (True, False), (False, False)]  # (fused, compiled): compiled is the CPU's C++ loop


CELLS = [("relu", False, False), ("relu", False, True), ("modrelu", False, False), ("modrelu", True, False)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", TASK_SHAPES)
@pytest.mark.parametrize("nonlinearity,complex_,bias", CELLS, ids=["relu", "relu-bias", "modrelu", "modrelu-complex"])
def test_fused_recurrence_equals_the_step_by_step_loop(device, task, nonlinearity, complex_, bias):
    """Outputs, the last state and every gradient (weights, biases, h0 and the input) against the
    step-by-step autograd loop, float64: equal to rounding (the products sum in another order)."""
    inputs, hidden, T = TASK_SHAPES[task]
    torch.manual_seed(0)
    rnn = projunn.UnitaryRNN(
        inputs, hidden, nonlinearity=nonlinearity, init="haar", complex=complex_, bias=bias, dtype=torch.float64
    ).to(device)
    if nonlinearity == "modrelu":  # thresholds of both signs, so that some units are off
        with torch.no_grad():
            rnn.activation.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, T, inputs, dtype=torch.float64, device=device, requires_grad=True)
    h0 = torch.randn(2, hidden, dtype=rnn.weight_hh.dtype, device=device, requires_grad=True)
    weights = torch.randn(T, 2, 1, dtype=torch.float64, device=device)  # a loss on every step and on h_T
    results = {}
    for fused, compiled in FUSED_PATHS:  # the C++ loop, the PyTorch fused node, the step-by-step loop
        rnn.fused, rnn.compiled = fused, compiled
        rnn.zero_grad()
        h0.grad = x.grad = None
        out, h = rnn(x, h0)
        ((out.abs() * weights.transpose(0, 1)).sum() + h.abs().pow(2).sum()).backward()
        results[fused, compiled] = [out.detach(), h.detach(), h0.grad, x.grad] + [p.grad for p in rnn.parameters()]
    loop = results.pop((False, False))
    assert (loop[0] == 0).any()  # some units are off: the masks matter
    # The C++ loop's complex |h| (libstdc++'s hypot) and torch's vectorized one round an ulp apart, and
    # modReLU's derivative b/(|h| − b) magnifies that near h = 0: 1e-14 in the states, up to 3e-12 in
    # the gradients of a complex pMNIST run, still rounding in float64.
    for path, values in results.items():
        rtol = 1e-10 if complex_ and path == (True, True) else 1e-12
        for fused_value, loop_value in zip(values, loop):
            scale = loop_value.abs().max()
            assert (fused_value - loop_value).abs().max() <= rtol * max(scale.item(), 1.0), path


@pytest.mark.parametrize("frozen", [None, "weight_hh", "weight_ih"])
@pytest.mark.parametrize("nonlinearity", ["relu", "modrelu"])
def test_fused_recurrence_with_only_the_last_state_used(nonlinearity, frozen):
    """A loss of ``h_T`` alone: the outputs get no gradient (None, not zeros), and the weights' gradient is
    the step loop's; a frozen weight gets none and the others are unchanged."""
    torch.manual_seed(1)
    rnn = projunn.UnitaryRNN(3, 12, nonlinearity=nonlinearity, init="haar", dtype=torch.float64)
    if frozen:
        getattr(rnn, frozen).requires_grad_(False)
    x = torch.randn(4, 70, 3, dtype=torch.float64)
    grads = []
    for fused, compiled in FUSED_PATHS:
        rnn.fused, rnn.compiled = fused, compiled
        rnn.zero_grad()
        rnn(x)[1].sin().sum().backward()
        grads.append({name: p.grad for name, p in rnn.named_parameters()})
    loop = grads.pop()
    for fused in grads:
        assert fused.keys() == loop.keys()
        for name in loop:
            if name == frozen:
                assert fused[name] is None and loop[name] is None
            else:
                assert torch.allclose(fused[name], loop[name], rtol=1e-12, atol=1e-13), name


def test_fused_recurrence_catches_a_changed_output():
    rnn = projunn.UnitaryRNN(2, 4, nonlinearity="relu")
    out, _ = rnn(torch.randn(3, 5, 2))
    loss = out.sum()
    with torch.no_grad():
        out.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("nonlinearity", ["relu", "modrelu"])
@pytest.mark.parametrize("parametrization", [None, "matrix_exp"])
def test_fused_recurrence_trains_to_the_same_weights(nonlinearity, parametrization):
    """20 projUNN (or expRNN) steps of a float32 sequence model: the same weights to 1e-6."""
    from tasks.sequence_models import SequenceModel

    weights = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = SequenceModel(2, 3, 12, nonlinearity=nonlinearity, init="henaff", readout="last")
        model.rnn.fused = fused
        if parametrization:
            projunn.parametrize(model, parametrization)
            opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
        else:
            opt = projunn.ProjUNN(projunn.param_groups(model, unitary_lr=1e-3), "RMSprop", lr=1e-3, seed=0)
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            x, y = torch.randn(8, 30, 2, generator=g), torch.randn(8, 3, generator=g)
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        assert (a - b).abs().max() <= 1e-6


@pytest.mark.parametrize("batch,T", [(1, 1), (1, 33), (3, 1)])
@pytest.mark.parametrize("nonlinearity,complex_", [("relu", False), ("modrelu", False), ("modrelu", True)])
def test_the_fused_paths_take_one_step_and_one_sequence(batch, T, nonlinearity, complex_):
    """The edges of the loops: one step, one sequence, one step past a weight-gradient block."""
    torch.manual_seed(2)
    rnn = projunn.UnitaryRNN(3, 5, nonlinearity=nonlinearity, complex=complex_, dtype=torch.float64)
    x = torch.randn(batch, T, 3, dtype=torch.float64)
    results = []
    for fused, compiled in FUSED_PATHS:
        rnn.fused, rnn.compiled = fused, compiled
        rnn.zero_grad()
        out, h = rnn(x)
        (out.abs().sum() + h.abs().sum()).backward()
        results.append([out.detach(), h.detach()] + [p.grad for p in rnn.parameters()])
    for path in results[:2]:
        for value, reference in zip(path, results[2]):
            assert value.shape == reference.shape and torch.allclose(value, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler: the PyTorch loop runs instead")
def test_the_compiled_recurrence_builds_where_a_compiler_is():
    """Where it builds, the equality tests above compare the C++ loop too (not the PyTorch node twice)."""
    assert _kernels.recurrence() is not None or os.environ.get("PROJUNN_COMPILED_RECURRENCE") == "0"


def test_a_failed_build_warns_once_and_the_pytorch_loop_runs(monkeypatch, tmp_path):
    import torch.utils.cpp_extension

    def fail(**kwargs):
        raise RuntimeError("Error building extension 'projunn_recurrence'")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", fail)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing built there
    monkeypatch.setattr(_kernels, "_tried", False)
    monkeypatch.setattr(_kernels, "_module", None)
    rnn = projunn.UnitaryRNN(2, 6, nonlinearity="relu", dtype=torch.float64)
    x = torch.randn(3, 9, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match="compiled recurrence did not build .*Error building extension"):
        out = rnn(x)[0]
    rnn.fused = False
    assert torch.allclose(out, rnn(x)[0], rtol=1e-12, atol=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tried once per process: no second warning
        assert _kernels.recurrence() is None


def test_the_compiled_recurrence_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("PROJUNN_COMPILED_RECURRENCE", "0")
    monkeypatch.setattr(_kernels, "_tried", False)
    monkeypatch.setattr(_kernels, "_module", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _kernels.recurrence() is None


@pytest.mark.parametrize("fused", [True, False])
def test_the_last_state_is_the_last_output(fused):
    rnn = projunn.UnitaryRNN(2, 4, nonlinearity="modrelu", complex=True)
    rnn.fused = fused
    out, h = rnn(torch.randn(3, 5, 2))
    assert out.is_complex() and out.shape == (3, 5, 4) and torch.equal(out[:, -1], h)

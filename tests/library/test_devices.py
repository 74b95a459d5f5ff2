"""The library on every available device (CPU always; CUDA where torch sees a GPU, skipped and counted
elsewhere), the sync-free (capturable) step and the fused recurrence against the plain paths, and
precision: TF32 / bf16 settings, mixed-precision training.

The CUDA cases run on a machine with a GPU (``scripts/bench/device_check.sh``); on a CPU-only machine
``pytest`` reports them as skipped.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import warnings

import pytest
import torch
from torch import nn

import projunn
from projunn import _kernels, init
from projunn.conv import OrthogonalConv2d
from projunn.linalg import full_precision
from tests.helpers.references import tolerance

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def haar(shape, dtype, device, seed=0):
    return init.haar_(torch.empty(shape, dtype=dtype), generator=torch.Generator().manual_seed(seed)).to(device)


# ---------------------------------------------------------------------------------------------
# the library on each device
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("k", [1, 3])
def test_updates_match_float64_references(device, dtype, k):
    g = torch.Generator().manual_seed(1)
    W = haar((2, 9, 9), dtype, device)
    a = torch.randn(2, 9, k, dtype=dtype, generator=g).to(device)
    b = torch.randn(2, 9, k, dtype=dtype, generator=g).to(device)
    step = a @ b.mH
    omega = 0.5 * (W.mH @ step - step.mH @ W)
    assert torch.allclose(projunn.projunn_t(W, a, b), W @ torch.linalg.matrix_exp(omega), atol=1e-10)
    U, _, Vh = torch.linalg.svd(W + step)
    assert torch.allclose(projunn.projunn_d(W, a, b), U @ Vh, atol=1e-10)
    assert projunn.projunn_t(W, a, b).device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_samplers_recover_a_rank_k_step(device):
    g = torch.Generator().manual_seed(2)
    G = (
        torch.randn(3, 12, 2, dtype=torch.float64, generator=g)
        @ torch.randn(3, 2, 12, dtype=torch.float64, generator=g)
    ).to(device)
    for sampler in (projunn.lsi, projunn.column_sampling):
        a, b = sampler(G, 2, generator=torch.Generator().manual_seed(3))
        assert a.device.type == device and torch.allclose(a @ b.mH, G, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("base", ["SGD", "RMSprop", "Adam"])
@pytest.mark.parametrize("projector", ["T", "D"])
def test_projunn_learns_an_orthogonal_map_and_stays_orthogonal(device, base, projector):
    torch.manual_seed(0)
    n = 16
    target = haar((n, n), torch.float32, device, seed=1)
    W = nn.Parameter(haar((n, n), torch.float32, device, seed=2))
    lr = {"SGD": 1.0, "RMSprop": 3e-2, "Adam": 5e-2}[base]
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], base, lr=lr, projector=projector, rank=2, seed=0)
    losses = []
    for _ in range(100):
        x = torch.randn(32, n, device=device)
        loss = (x @ W.T - x @ target.T).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert projunn.unitarity_error(W).item() <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_continues_identically(device):
    def make():
        W = nn.Parameter(haar((3, 8, 8), torch.complex64, device))
        return W, projunn.ProjUNN([{"params": [W], "unitary": True}], "Adam", lr=1e-2, seed=4)

    def steps(W, opt, count, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(count):
            W.grad = torch.randn(W.shape, dtype=W.dtype, generator=g).to(device)
            opt.step()

    W1, opt1 = make()
    steps(W1, opt1, 3, 0)
    saved_W, saved = W1.detach().clone(), copy.deepcopy(opt1.state_dict())
    steps(W1, opt1, 3, 1)
    W2, opt2 = make()
    with torch.no_grad():
        W2.copy_(saved_W)
    opt2.load_state_dict(saved)
    steps(W2, opt2, 3, 1)
    assert torch.equal(W1, W2)


@pytest.mark.parametrize("device", DEVICES)
def test_orthogonal_convolution_preserves_norms(device):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(3, 8, (6, 7), init="henaff", channel_growth="repeat", device=device)
    x = torch.randn(4, 3, 6, 7, device=device)
    ratio = layer(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert (ratio - 1).abs().max() <= 1e-5
    projunn.parametrize(layer, "cayley")
    assert projunn.unitarity_error(layer.weight).max() <= 1e-5


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


# ---------------------------------------------------------------------------------------------
# the sync-free step (Note [sync-free steps])
# ---------------------------------------------------------------------------------------------
CAPTURABLE = [(p, k, c, batch) for p in "TD" for k in (1, 3) for c in (False, True) for batch in ((), (3,))]


@pytest.mark.parametrize(
    "projector,k,complex_,batch",
    CAPTURABLE,
    ids=[f"{p}-k{k}-{'complex' if c else 'real'}-{'batched' if b else 'one'}" for p, k, c, b in CAPTURABLE],
)
def test_capturable_steps_equal_the_plain_ones(projector, k, complex_, batch):
    dtype = torch.complex64 if complex_ else torch.float32

    def run(capturable):
        W = nn.Parameter(haar(batch + (16, 16), dtype, "cpu", seed=3))
        target = haar(batch + (16, 16), dtype, "cpu", seed=4)
        opt = projunn.ProjUNN(
            [{"params": [W], "unitary": True}],
            "RMSprop",
            lr=1e-2,
            projector=projector,
            rank=k,
            seed=5,
            capturable=capturable,
        )
        assert opt.capturable == capturable
        for step in range(20):
            x = torch.randn(8, 16, dtype=dtype, generator=torch.Generator().manual_seed(step))
            loss = (x @ W.mT - x @ target.mT).abs().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return W.detach()

    plain, capturable = run(False), run(True)
    assert (plain - capturable).abs().max() <= 1e-6
    assert projunn.unitarity_error(capturable).max() <= tolerance(dtype, 16)


def test_capturable_steps_skip_non_finite_updates_and_report_them_at_the_drift_check():
    W = nn.Parameter(haar((3, 8, 8), torch.float32, "cpu"))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, capturable=True, reproject_every=2, seed=0)
    before = W.detach().clone()
    grad = torch.randn(3, 8, 8)
    grad[1, 2, 3] = math.nan
    W.grad = grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # no host read, no warning yet
    assert torch.equal(W[1], before[1]) and not torch.equal(W[0], before[0])
    W.grad = torch.randn(3, 8, 8)
    with pytest.warns(projunn.NonFiniteUpdateWarning, match="1 updates of unitary matrices were not finite"):
        opt.step()  # the drift check (every 2 steps) reads the count
    assert projunn.unitarity_error(W).max() <= 1e-5


def test_capturable_errors():
    W = nn.Parameter(haar((8, 8), torch.float32, "cpu"))
    with pytest.raises(ValueError, match="capturable steps need sampler 'lsi'"):
        projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, sampler="column", capturable=True)
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, capturable=False)
    assert opt.capturable is False and opt.generator.device.type == "cpu"


@needs_cuda
def test_capturable_step_reads_nothing_on_the_host_and_is_captured_in_a_cuda_graph():
    torch.manual_seed(0)
    W = nn.Parameter(haar((4, 32, 32), torch.complex64, "cuda"))
    opt = projunn.ProjUNN(
        [{"params": [W], "unitary": True}],
        "RMSprop",
        lr=1e-3,
        projector="D",
        rank=2,
        reproject_every=None,
        capturable=True,
    )
    assert opt.capturable and opt.generator.device.type == "cuda"
    W.grad = torch.randn_like(W)
    opt.step()  # warm-up: state allocated
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        opt.step()
    before = W.detach().clone()
    graph.replay()
    torch.cuda.synchronize()
    assert not torch.equal(W, before) and projunn.unitarity_error(W).max() <= 1e-5


# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["highest", "high", "medium"])
def test_the_step_ignores_and_keeps_the_users_matmul_precision(setting):
    def run():
        W = nn.Parameter(haar((64, 64), torch.float32, "cpu"))
        opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-2, seed=0)
        for step in range(5):
            W.grad = torch.randn(64, 64, generator=torch.Generator().manual_seed(step))
            opt.step()
        return W.detach()

    reference = run()
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(setting)
    try:
        result = run()
        with full_precision():
            assert torch.backends.cuda.matmul.fp32_precision == torch.backends.mkldnn.matmul.fp32_precision == "ieee"
        assert torch.get_float32_matmul_precision() == setting  # the user's setting, untouched
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.equal(result, reference)


@needs_cuda
def test_tf32_does_not_cost_unitarity():
    torch.manual_seed(0)
    errors = {}
    previous = torch.backends.cuda.matmul.allow_tf32
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            W = nn.Parameter(haar((256, 256), torch.float32, "cuda"))
            opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-3, reproject_every=None, seed=0)
            for _ in range(200):
                W.grad = torch.randn_like(W)
                opt.step()
            errors[tf32] = projunn.unitarity_error(W).item()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    assert errors[True] <= 2 * errors[False] + 1e-6  # the projection's products run in full float32


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_keeps_unitary_matrices_in_float32(compose_cfg, tmp_path, precision):
    from tests.helpers.records import read_metrics
    from tests.helpers.runs import FAST
    from train import train

    cfg = compose_cfg(
        "task=copy", "task.T=8", "task.batch_size=4", "model.hidden_size=8", f"trainer.precision={precision}", *FAST
    )
    train(cfg)
    rows = read_metrics(tmp_path)
    assert all(math.isfinite(float(r["train/loss"])) for r in rows if r.get("train/loss"))
    assert max(float(r["unitarity/max_error"]) for r in rows if r.get("unitarity/max_error")) <= 1e-5
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert state["model.rnn.weight_hh"].dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# one short run per task on the GPU
# ---------------------------------------------------------------------------------------------
GPU_RUNS = [
    ("task=copy", "task.T=20", "task.batch_size=8", "model.hidden_size=16"),
    ("task=adding", "task.T=20", "task.batch_size=8", "model.hidden_size=16"),
    ("experiment=pmnist", "model.hidden_size=16", "task.batch_size=4", "task.eval_batch_size=5"),
    ("experiment=cifar10_projunn_t", "model.channels=[4,8,8]", "task.batch_size=8"),
]


@pytest.mark.integration
@needs_cuda
@pytest.mark.parametrize("overrides", GPU_RUNS, ids=[r[0] for r in GPU_RUNS])
def test_gpu_run_per_task(compose_cfg, tmp_path, monkeypatch, overrides):
    import numpy as np

    import tasks.cifar10 as cifar
    from tests.helpers.data import fake_cifar, write_idx
    from tests.helpers.records import read_metrics
    from tests.helpers.runs import FAST
    from train import train

    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 16), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_cfg(
        *overrides, "trainer=gpu", f"data_root={tmp_path / 'data'}", "unitarity_every=1", *FAST, run_dir=run_dir
    )
    assert math.isfinite(train(cfg))
    errors = [float(r["unitarity/max_error"]) for r in read_metrics(run_dir) if r.get("unitarity/max_error")]
    assert errors and max(errors) <= 1e-5

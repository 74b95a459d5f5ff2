"""Compiled steps: ``torch.compile`` of a function calling ``ProjUNN.step`` gives the eager step
(Note [compiled steps] in ``projunn.optim``), the base optimizer's update buffers keep ``state_dict``
in the format checkpoints already hold; the sync-free (capturable) step (Note [sync-free steps]) equals
the plain one, reads nothing on the host and is replayed by a CUDA graph; ``import projunn`` does not
import the compiler. (``train.py compile=true``: tests/training/test_framework.py.)"""

from __future__ import annotations

import importlib.util
import math
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

import projunn
from projunn.linalg import eager_under_compile
from tests.helpers import FIXTURES, ROOT
from tests.helpers.devices import haar, needs_cuda
from tests.helpers.references import tolerance

BASES = {"Adam": {}, "AdamW": {}, "SGD": {"momentum": 0.9}, "RMSprop": {}}
# Every projector on square, tall, wide and batched matrices, one group each, a complex unitary matrix and a
# plain parameter.
SHAPES = {"square": (8, 8), "tall": (10, 4), "wide": (3, 7), "batched": (3, 6, 6)}


def build(base: str, capturable: bool) -> tuple[list[torch.nn.Parameter], projunn.ProjUNN]:
    g = torch.Generator().manual_seed(0)
    params, groups = [], []
    for shape in SHAPES.values():
        for projector in "TD":
            W = torch.nn.Parameter(projunn.init.haar_(torch.empty(shape), generator=g))
            params.append(W)
            groups.append({"params": [W], "unitary": True, "projector": projector, "rank": 2})
    U = torch.nn.Parameter(projunn.init.haar_(torch.empty(5, 5, dtype=torch.complex64), generator=g))
    params.append(U)
    groups.append({"params": [U], "unitary": True, "rank": 1})
    plain = torch.nn.Parameter(torch.randn(5, generator=g))
    params.append(plain)
    groups.append({"params": [plain]})
    return params, projunn.ProjUNN(groups, base, lr=1e-2, seed=0, capturable=capturable, **BASES[base])


def set_gradients(params: list[torch.nn.Parameter], step: int) -> None:
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("capturable", [False, True], ids=["eager-sync", "capturable"])
@pytest.mark.parametrize("base", BASES)
def test_compiled_step_equals_the_eager_step(base, capturable):
    """The issue's snippet (a compiled function calling ``opt.step()`` zeroed every unitary matrix when
    the step swapped storages) for each base, projector, shape and ``capturable``: after 3 steps the
    compiled optimizer's matrices equal the eager one's to float32 rounding and stay unitary."""
    torch._dynamo.reset()  # each test compiles afresh (dynamo stops compiling a function after 8 recompiles)
    torch._dynamo.utils.counters.clear()
    eager_params, eager = build(base, capturable)
    params, opt = build(base, capturable)
    start = [p.detach().clone() for p in params]

    @torch.compile
    def step():
        opt.step()

    for t in range(3):
        set_gradients(eager_params, t)
        eager.step()
        set_gradients(params, t)
        step()
    for p, q, p0 in zip(params, eager_params, start):
        assert (p - p0).abs().max() > 1e-3  # it moved
        assert (p - q).abs().max() <= 1e-6
        if p.ndim >= 2:
            assert projunn.unitarity_error(p).max() <= 1e-5
    assert opt.steps == eager.steps == 3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile


def test_a_state_saved_before_the_update_buffers_resumes_bit_identically():
    """``tests/fixtures/projunn_state_8c7b988.pt``, made by ``tests/fixtures/make_projunn_state.py`` with the code
    at commit 8c7b988 (which swapped the parameters' storage for the base step): an Adam-based ProjUNN's
    ``state_dict`` after 3 steps, and its weights 2 steps later. Loaded into today's optimizer, the same
    2 steps give those weights to the bit: checkpoints written before the update buffers keep working; and
    5 steps from the start give them too."""
    made_by = _load_module(FIXTURES / "make_projunn_state.py")
    saved = torch.load(FIXTURES / "projunn_state_8c7b988.pt", weights_only=False)
    params, opt = made_by.build()
    with torch.no_grad():
        for p, value in zip(params, saved["params"]):
            p.copy_(value)
    opt.load_state_dict(saved["optimizer"])
    assert opt.param_groups[2]["lr"] == 0.02 and opt.param_groups[2]["params"][0] is params[2]
    for t in range(3, 5):
        made_by.set_gradients(params, t)
        opt.step()
    for p, expected in zip(params, saved["after"]):
        assert torch.equal(p.detach(), expected)
    # From the start, today's steps are the old steps, to the bit.
    fresh, fresh_opt = made_by.build()
    for t in range(5):
        made_by.set_gradients(fresh, t)
        fresh_opt.step()
    for p, expected in zip(fresh, saved["after"]):
        assert torch.equal(p.detach(), expected)
    # And what it saves is the format it loaded: the same groups and the same state.
    again = opt.state_dict()
    assert [len(g["params"]) for g in again["param_groups"]] == [1, 1, 1]
    assert again["param_groups"][1]["unitary"] and again["param_groups"][1]["rank"] == 2
    assert set(again["state"]) == {0, 1, 2} and set(again["state"][1]) == {"step", "exp_avg", "exp_avg_sq"}


def test_unitary_groups_show_the_parameters_and_the_base_the_update_buffers():
    """``opt.param_groups`` (what schedulers, Lightning and users read) hold the parameters; the base
    optimizer's unitary groups hold zero update buffers with the same entries, its state keyed to them."""
    W = torch.nn.Parameter(projunn.init.haar_(torch.empty(5, 5)))
    v = torch.nn.Parameter(torch.zeros(3))
    opt = projunn.ProjUNN([{"params": [v]}, {"params": [W], "unitary": True}], "RMSprop", lr=0.1)
    assert opt.param_groups[1]["params"] == [W] and opt.param_groups[0] is opt.base.param_groups[0]
    (leaf,) = opt.base.param_groups[1]["params"]
    assert leaf is not W and leaf.shape == W.shape and not leaf.any()
    assert {k: v for k, v in opt.param_groups[1].items() if k != "params"} == {
        k: v for k, v in opt.base.param_groups[1].items() if k != "params"
    }
    W.grad, v.grad = torch.randn(5, 5), torch.randn(3)
    opt.param_groups[1]["lr"] = 0.0  # a scheduler's change reaches the base's copy of the group
    before = W.detach().clone()
    opt.step()
    assert torch.equal(W.detach(), before) and opt.base.param_groups[1]["lr"] == 0.0
    assert not leaf.any() and leaf.grad is None and leaf in opt.state
    assert opt.state[W] is opt.state[leaf] and set(opt.state[W]) == {"step", "square_avg"}  # W's own state
    assert list(opt.state) == [v, leaf] and list(opt.state_dict()["state"]) == [0, 1]
    again = pickle.loads(pickle.dumps(opt))  # (torch.save of a whole optimizer)
    assert torch.equal(again.state[again.param_groups[1]["params"][0]]["square_avg"], opt.state[W]["square_avg"])


def test_a_update_buffer_follows_its_parameter_to_another_dtype():
    """A model converted after its optimizer was made (``model.double()``) keeps stepping: the update buffer
    is remade in the new dtype and the base's state moves to it."""
    W = torch.nn.Parameter(projunn.init.haar_(torch.empty(6, 6)))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, momentum=0.9)
    W.grad = torch.randn(6, 6)
    opt.step()
    W.data = W.data.double()
    W.grad = torch.randn(6, 6, dtype=torch.float64)
    opt.step()
    (leaf,) = opt.base.param_groups[0]["params"]
    assert leaf.dtype == torch.float64 and leaf in opt.state and len(opt.state) == 1
    assert projunn.unitarity_error(W) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replays_the_capturable_step():
    """The capturable step (Note [sync-free steps]) captured in a CUDA graph and replayed equals eager
    steps taken with the same gradients. At k = n the step is the projection of the whole update,
    whatever the sketch, so the comparison does not depend on how replays advance the generator."""
    n = 16

    def make():
        W = torch.nn.Parameter(projunn.init.haar_(torch.empty(n, n), generator=torch.Generator().manual_seed(0)).cuda())
        return W, projunn.ProjUNN([{"params": [W], "unitary": True}], "Adam", lr=1e-2, seed=0, rank=n)

    W_eager, eager = make()
    W, opt = make()
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(n, n, generator=g).cuda() for _ in range(4)]
    W.grad = grads[0].clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # a warm-up step outside the graph (the state is created), as torch asks
        opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    W_eager.grad = grads[0].clone()
    eager.step()
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(opt.generator)
    snapshot = W.detach().clone()
    with torch.cuda.graph(graph):  # capture records the step without running it
        opt.step()
    assert torch.equal(W.detach(), snapshot)
    for t in range(1, 4):
        W.grad.copy_(grads[t])
        graph.replay()
        W_eager.grad = grads[t].clone()
        eager.step()
    torch.cuda.synchronize()
    assert (W - W_eager).abs().max() <= 1e-5
    assert projunn.unitarity_error(W) <= 1e-5


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
# import projunn without the compiler; functions kept eager under a compiled caller
# ---------------------------------------------------------------------------------------------
def test_import_projunn_does_not_import_the_compiler():
    code = "import sys, projunn; print('torch._dynamo' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_eager_under_compile_runs_eagerly_when_traced():
    """Traced, a function sees ``is_compiling()`` true (the control, undecorated); decorated, it runs
    eagerly inside the compiled caller and sees it false, as with ``torch.compiler.disable``."""
    seen: dict[str, list[bool]] = {"plain": [], "eager": []}

    def plain(x):
        seen["plain"].append(torch.compiler.is_compiling())
        return x + 1

    @eager_under_compile("a test")
    def eager(x):
        seen["eager"].append(torch.compiler.is_compiling())
        return x + 1

    torch._dynamo.reset()
    x = torch.ones(3)
    for f in (plain, eager):
        assert torch.equal(torch.compile(lambda x, f=f: 2 * f(x), backend="eager")(x), 2 * (x + 1))
    assert seen == {"plain": [True], "eager": [False]}
    assert eager.__name__ == "eager" and eager(x).tolist() == [2.0] * 3  # uncompiled: the function itself

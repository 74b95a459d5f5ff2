"""The ProjUNN optimizer: it learns, keeps unitary groups unitary, leaves other parameters to the
base optimizer, survives NaN/Inf gradients, validates its arguments, and behaves like a
``torch.optim`` optimizer (closures, state_dict, LR schedulers, parameter groups); what it records when
asked (the captured fraction of each step, the steps it took)."""

from __future__ import annotations

import io
import math
import re
import warnings

import pytest
import torch
from torch import nn

import projunn
from projunn.linalg import estimate_unitarity_error
from projunn.optim import captured_fraction
from tests.helpers.references import tolerance


def haar(shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    return projunn.init.haar_(torch.empty(shape, dtype=dtype), generator=g)


def unitary_param(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Parameter:
    return nn.Parameter(haar(shape, dtype, torch.Generator().manual_seed(seed)))


def max_unitarity_error(W: torch.Tensor) -> float:
    return projunn.unitarity_error(W).max().item()


# ---------------------------------------------------------------------------------------------
# acceptance: learn an orthogonal target
# ---------------------------------------------------------------------------------------------
BASES = {  # name -> (optimizer, peak lr, extra kwargs)
    "SGD": ("SGD", 0.05, {}),
    "SGD-momentum": ("SGD", 0.01, {"momentum": 0.9}),
    "RMSprop": ("RMSprop", 0.02, {}),
    "Adam": ("Adam", 0.05, {}),
    "AdamW": ("AdamW", 0.05, {}),  # AdamW's default weight_decay=0.01 must not touch the unitary group
}
# Schedule: 100 steps of linear warm-up from lr/10, then cosine decay to 0 (a constant-lr Adam or
# RMSprop plateaus at the noise floor of its normalised steps). The warm-up matters for RMSprop:
# its square average starts at 0, so its first steps are ~10·lr per entry, and projUNN-D's
# closest-orthogonal step polar(W + ΔW) jumps to the other component of O(n) (det W flips)
# when such a step makes det(I + W^T ΔW) < 0, after which Q* is unreachable (loss stalls ~15×).
WARMUP = 100
MAX_STEPS = 2000


def fit_orthogonal_target(base: str, projector: str, rank: int, n: int = 32, batch: int = 64, seed: int = 0):
    """Learn ``Q*`` from pairs ``(x, Q* x)`` by the loss ``E‖W x − Q* x‖²`` (fresh x each step,
    stopping early once the loss is 1000× lower). Returns the loss reduction factor on a fixed
    evaluation batch, the final unitarity error and the number of steps taken."""
    optimizer, lr, kwargs = BASES[base]
    g = torch.Generator().manual_seed(seed)
    target = haar((n, n), torch.float64, g)
    start = haar((n, n), torch.float64, g)
    if torch.linalg.det(target) * torch.linalg.det(start) < 0:
        start[:, 0].neg_()  # same connected component of O(n), else Q* is unreachable
    target = target.float()
    W = nn.Parameter(start.float())
    opt = projunn.ProjUNN(
        [{"params": [W], "unitary": True}], optimizer, projector=projector, rank=rank, lr=lr, seed=seed, **kwargs
    )
    schedule = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=WARMUP),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, MAX_STEPS - WARMUP),
        ],
        milestones=[WARMUP],
    )
    x_eval = torch.randn(256, n, generator=g)

    def loss_on(x: torch.Tensor) -> torch.Tensor:
        return (x @ W.T - x @ target.T).pow(2).sum(-1).mean()

    with torch.no_grad():
        initial = loss_on(x_eval).item()
    for step in range(1, MAX_STEPS + 1):
        opt.zero_grad()
        loss_on(torch.randn(batch, n, generator=g)).backward()
        opt.step()
        schedule.step()
        if step % 50 == 0:
            with torch.no_grad():
                if loss_on(x_eval).item() < initial / 1000:
                    break
    with torch.no_grad():
        final = loss_on(x_eval).item()
    return initial / final, projunn.unitarity_error(W).item(), step


@pytest.mark.integration
@pytest.mark.parametrize("rank", [1, 4], ids=["k1", "k4"])
@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("base", list(BASES))
def test_learns_orthogonal_target(base, projector, rank):
    reduction, error, steps = fit_orthogonal_target(base, projector, rank)
    assert error <= 1e-4
    assert reduction >= 100, f"loss reduced only {reduction:.3g}x in {steps} steps"


@pytest.mark.integration
@pytest.mark.parametrize("projector", ["T", "D"])
def test_complex_unitary_parameter_trains_with_rmsprop(projector):
    n, steps = 16, 400
    g = torch.Generator().manual_seed(0)
    target = haar((n, n), torch.complex64, g)
    W = nn.Parameter(haar((n, n), torch.complex64, g))  # U(n) is connected: Q* is always reachable
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=0.03, projector=projector, seed=0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x_eval = torch.randn(256, n, dtype=torch.complex64, generator=g)

    def loss_on(x: torch.Tensor) -> torch.Tensor:
        return (x @ W.T - x @ target.T).abs().pow(2).sum(-1).mean()

    with torch.no_grad():
        initial = loss_on(x_eval).item()
    for _ in range(steps):
        opt.zero_grad()
        loss_on(torch.randn(64, n, dtype=torch.complex64, generator=g)).backward()
        opt.step()
        schedule.step()
        assert W.dtype == torch.complex64
    with torch.no_grad():
        final = loss_on(x_eval).item()
    assert max_unitarity_error(W) <= tolerance(torch.complex64, n)
    assert initial / final >= 100


# ---------------------------------------------------------------------------------------------
# parameters outside the unitary groups get exactly the base optimizer's update
# ---------------------------------------------------------------------------------------------
PLAIN = {  # name -> (class, kwargs): the acceptance set, then variants with more state
    "SGD": (torch.optim.SGD, {"lr": 0.1}),
    "SGD-momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "RMSprop": (torch.optim.RMSprop, {"lr": 1e-2}),
    "Adam": (torch.optim.Adam, {"lr": 1e-2}),
    "AdamW": (torch.optim.AdamW, {"lr": 1e-2}),
    "SGD-nesterov-weight-decay": (
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    ),
    "RMSprop-centered-momentum": (torch.optim.RMSprop, {"lr": 1e-2, "momentum": 0.5, "centered": True}),
    "Adam-amsgrad": (torch.optim.Adam, {"lr": 1e-2, "amsgrad": True}),
}


@pytest.mark.parametrize("base", list(PLAIN))
def test_other_parameters_follow_base_optimizer_exactly(base):
    cls, kwargs = PLAIN[base]
    g = torch.Generator().manual_seed(0)
    plain = [nn.Parameter(torch.randn(5, 3, generator=g)), nn.Parameter(torch.randn(7, generator=g))]
    reference = [nn.Parameter(p.detach().clone()) for p in plain]
    W = unitary_param((6, 6))
    W0 = W.detach().clone()
    opt = projunn.ProjUNN([{"params": plain}, {"params": [W], "unitary": True, "lr": 1e-2}], cls, seed=0, **kwargs)
    ref_opt = cls(reference, **kwargs)
    for _ in range(5):
        for p, q in zip(plain, reference):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        W.grad = torch.randn(W.shape, generator=g)
        opt.step()
        ref_opt.step()
        for p, q in zip(plain, reference):
            assert torch.equal(p, q)
    assert not torch.allclose(W, W0)  # the unitary matrix did move ...
    assert max_unitarity_error(W) <= tolerance(W.dtype, 6)  # ... and stayed unitary


@pytest.mark.parametrize("base", ["SGD", "Adam", "RMSprop"])
def test_plain_parameter_list_is_the_base_optimizer(base):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    twin = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    twin.load_state_dict(model.state_dict())
    opt = projunn.ProjUNN(model.parameters(), base, lr=1e-2)
    ref_opt = getattr(torch.optim, base)(twin.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(16, 4, generator=g)
        for m, o in ((model, opt), (twin, ref_opt)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------------
# non-finite gradients
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["lsi", "column"])
@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("base", ["SGD", "RMSprop", "Adam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["real", "complex"])
def test_non_finite_gradient_leaves_matrix_unchanged(sampler, projector, bad, base, dtype):
    W = unitary_param((8, 8), dtype)
    other = nn.Parameter(torch.ones(3))
    opt = projunn.ProjUNN(
        [{"params": [other]}, {"params": [W], "unitary": True}],
        base,
        lr=1e-2,
        projector=projector,
        sampler=sampler,
        rank=2,
    )
    W0 = W.detach().clone()
    W.grad = torch.randn(W.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    W.grad[2, 5] = bad
    other.grad = torch.ones(3)
    with pytest.warns(projunn.NonFiniteUpdateWarning):
        opt.step()
    assert torch.equal(W, W0)
    assert not torch.equal(other, torch.ones(3))  # the rest of the step still happened


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("sampler", ["lsi", "column"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_gradient_in_one_matrix_of_a_batch(projector, sampler, bad):
    W = unitary_param((4, 6, 6))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, projector=projector, sampler=sampler)
    W0 = W.detach().clone()
    W.grad = torch.randn(W.shape, generator=torch.Generator().manual_seed(2))
    W.grad[1, 0, 3] = bad
    with pytest.warns(projunn.NonFiniteUpdateWarning, match="1 of 4"):
        opt.step()
    assert W.isfinite().all()
    assert torch.equal(W[1], W0[1])
    for i in (0, 2, 3):
        assert not torch.equal(W[i], W0[i])
    assert max_unitarity_error(W) <= tolerance(W.dtype, 6)
    # and the next finite step moves every matrix again (SGD keeps no state to poison)
    W.grad = torch.randn(W.shape, generator=torch.Generator().manual_seed(3))
    W1 = W.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error", projunn.NonFiniteUpdateWarning)
        opt.step()
    for i in range(4):
        assert not torch.equal(W[i], W1[i])


def test_stateful_base_stays_frozen_after_a_non_finite_gradient():
    # Documented: RMSprop's running average has absorbed the NaN, so later updates are NaN
    # too; the matrix stays finite and unitary, unchanged, and each step warns again.
    W = unitary_param((8, 8))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-2)
    W0 = W.detach().clone()
    W.grad = torch.full((8, 8), float("nan"))
    with pytest.warns(projunn.NonFiniteUpdateWarning):
        opt.step()
    W.grad = torch.randn(8, 8, generator=torch.Generator().manual_seed(4))
    with pytest.warns(projunn.NonFiniteUpdateWarning):
        opt.step()
    assert torch.equal(W, W0)


def test_finite_gradient_gives_no_warning():
    W = unitary_param((8, 8))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-2)
    W.grad = torch.randn(8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


# ---------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------
def make(params=None, optimizer="SGD", **kwargs):
    if params is None:
        params = [{"params": [unitary_param((8, 8))], "unitary": True}]
    return projunn.ProjUNN(params, optimizer, **{"lr": 0.1, **kwargs})


@pytest.mark.parametrize("rank", [0, -2, 9, 1.5, "1", True], ids=repr)
def test_invalid_rank_rejected(rank):
    with pytest.raises(ValueError) as info:
        make(rank=rank)
    assert f"got {rank!r}" in str(info.value)
    with pytest.raises(ValueError) as info:  # the same as a per-group option
        make([{"params": [unitary_param((8, 8))], "unitary": True, "rank": rank}])
    assert f"got {rank!r}" in str(info.value)


def test_rank_checked_against_each_unitary_matrix():
    ok = [{"params": [unitary_param((16, 16))], "unitary": True}]
    make(ok, rank=16)
    with pytest.raises(ValueError, match=r"n=8, got 12"):
        make([{"params": [unitary_param((16, 16)), unitary_param((8, 8))], "unitary": True}], rank=12)


@pytest.mark.parametrize("shape", [(4, 3), (4,), (2, 3, 4)], ids=str)
def test_vector_or_non_unitary_parameter_rejected(shape):  # (rectangular ones: test_stiefel.py)
    with pytest.raises(ValueError) as info:
        make([{"params": [nn.Parameter(torch.zeros(shape))], "unitary": True}])
    assert str(tuple(shape)) in str(info.value)


def test_non_square_parameter_outside_unitary_group_is_fine():
    make([{"params": [nn.Parameter(torch.zeros(4, 3))]}, {"params": [unitary_param((8, 8))], "unitary": True}])


@pytest.mark.parametrize(
    "option, value, valid", [("projector", "X", ("'T'", "'D'")), ("sampler", "svd", ("'lsi'", "'column'"))]
)
def test_unknown_projector_or_sampler_lists_valid_names(option, value, valid):
    for build in (
        lambda: make(**{option: value}),
        lambda: make([{"params": [unitary_param((8, 8))], "unitary": True, option: value}]),
    ):
        with pytest.raises(ValueError) as info:
            build()
        message = str(info.value)
        assert repr(value) in message and all(name in message for name in valid)


@pytest.mark.parametrize("name", ["Adamm", "Optimizer", "lr_scheduler", "sgd"])
def test_unknown_base_optimizer_rejected(name):
    with pytest.raises(ValueError, match=repr(name)):
        make(optimizer=name)


@pytest.mark.parametrize("optimizer", ["LBFGS", torch.optim.LBFGS, "ASGD"], ids=["LBFGS", "LBFGS-class", "ASGD"])
def test_optimizers_that_read_the_parameter_rejected(optimizer):
    with pytest.raises(ValueError, match="LBFGS|ASGD"):
        make(optimizer=optimizer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128], ids=["float32", "complex128"])
def test_non_unitary_start_rejected(dtype):
    W = unitary_param((8, 8), dtype)
    with torch.no_grad():
        W.mul_(1.001)
    with pytest.raises(ValueError, match=r"not unitary.*\(8, 8\)|\(8, 8\).*not unitary"):
        make([{"params": [W], "unitary": True}])
    with torch.no_grad():
        W.copy_(projunn.polar(W.detach().to(torch.complex128 if dtype.is_complex else torch.float64)).to(dtype))
    make([{"params": [W], "unitary": True}])  # the polar factor is accepted


def test_one_non_unitary_matrix_in_a_batch_rejected():
    W = unitary_param((3, 8, 8))
    with torch.no_grad():
        W[2, 0, 0] += 1e-2
    with pytest.raises(ValueError, match="not unitary"):
        make([{"params": [W], "unitary": True}])


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_weight_decay_on_unitary_group_rejected(optimizer):
    with pytest.raises(ValueError, match="0.001"):
        make([{"params": [unitary_param((8, 8))], "unitary": True, "weight_decay": 1e-3}], optimizer)


# ---------------------------------------------------------------------------------------------
# torch.optim behaviour: closure, state_dict, LR schedulers, parameter groups
# ---------------------------------------------------------------------------------------------
def test_closure_evaluated_once_with_grad_and_loss_returned():
    g = torch.Generator().manual_seed(0)
    W = unitary_param((8, 8), seed=1)
    target = haar((8, 8), torch.float32, g)
    assert not torch.allclose(W, target)
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-2)
    x = torch.randn(32, 8, generator=g)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = (x @ W.T - x @ target.T).pow(2).sum()
        loss.backward()
        return loss

    losses = []
    for step in range(1, 31):
        with torch.no_grad():  # as Lightning may call it: grad must be enabled inside regardless
            loss = opt.step(closure=closure)
        assert calls == [True] * step
        assert isinstance(loss, torch.Tensor) and loss.requires_grad
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert max_unitarity_error(W) <= tolerance(W.dtype, 8)


class Toy(nn.Module):
    """A unitary batch, declared for param_groups, and an ordinary linear layer."""

    unitary_parameter_names = ("weight",)

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(haar((3, 16, 16), torch.float32, g))
        self.head = nn.Linear(16, 4)


def toy_optimizer(model: Toy, seed: int) -> projunn.ProjUNN:
    return projunn.ProjUNN(
        projunn.param_groups(model, unitary_lr=1e-2), "RMSprop", lr=1e-3, rank=2, reproject_every=15, seed=seed
    )


def feed(model: Toy, opt: projunn.ProjUNN, g: torch.Generator, steps: int) -> None:
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_state_dict_round_trip_is_bit_identical():
    model = Toy(seed=0)
    opt = toy_optimizer(model, seed=1)
    feed(model, opt, torch.Generator().manual_seed(2), 10)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    resumed = Toy(seed=3)  # different weights and a different sampler seed, both overwritten
    resumed.load_state_dict(saved["model"])
    resumed_opt = toy_optimizer(resumed, seed=4)
    resumed_opt.load_state_dict(saved["optimizer"])

    # control: same weights, fresh optimizer state; must diverge, or this test could not fail
    control = Toy(seed=3)
    control.load_state_dict(saved["model"])
    control_opt = toy_optimizer(control, seed=4)

    for m, o in ((model, opt), (resumed, resumed_opt), (control, control_opt)):
        feed(m, o, torch.Generator().manual_seed(5), 10)  # steps 11..20, a drift check at 15
    assert torch.equal(model.weight, resumed.weight)
    assert torch.equal(model.head.weight, resumed.head.weight)
    assert opt.steps == resumed_opt.steps == 20
    assert not torch.equal(model.weight, control.weight)


def test_state_dict_restores_sampler_generator():
    """The sketch draws alone (SGD keeps no state) must continue where they left off."""
    W = unitary_param((16, 16))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, seed=0)
    g = torch.Generator().manual_seed(0)
    W.grad = torch.randn(16, 16, generator=g)
    opt.step()
    state = opt.state_dict()
    twin = nn.Parameter(W.detach().clone())
    twin_opt = projunn.ProjUNN([{"params": [twin], "unitary": True}], "SGD", lr=0.1, seed=99)
    twin_opt.load_state_dict(state)
    W.grad = torch.randn(16, 16, generator=g)  # rank 16 > k: the sketch matters
    twin.grad = W.grad.clone()
    opt.step()
    twin_opt.step()
    assert torch.equal(W, twin)


def top_k(G: torch.Tensor, k: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic sampler for the tests: the exact top-k singular pairs, ``a = U_k S_k``, ``b = V_k``."""
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    return U[..., :k] * S[..., None, :k].to(G.dtype), Vh[..., :k, :].mH


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("shape", [(12, 12), (12, 5)], ids=str)
def test_a_callable_sampler_is_used_for_the_step(projector, shape):
    """A sampler given as a function is the one the step uses: with the exact top-k pairs of a rank-k
    SGD update, the step is the projector applied to that whole update (float64 reference), on a
    square matrix and on a tall one (orthonormal columns)."""
    g = torch.Generator().manual_seed(3)
    W = unitary_param(shape, torch.float64, seed=1)
    start = W.detach().clone()
    L = torch.randn(shape[0], 2, dtype=torch.float64, generator=g)
    R = torch.randn(2, shape[1], dtype=torch.float64, generator=g)
    grad = L @ R
    calls = []

    def recording_top_k(G, k, generator=None):
        calls.append((tuple(G.shape), k))
        return top_k(G, k, generator)

    opt = projunn.ProjUNN(
        [{"params": [W], "unitary": True}], "SGD", lr=0.1, rank=2, projector=projector, sampler=recording_top_k
    )
    W.grad = grad
    opt.step()
    update = projunn.projunn_t if projector == "T" else projunn.projunn_d
    assert calls == [(shape, 2)]
    assert (W.detach() - update(start, -0.1 * L, R.mH)).abs().max() <= 1e-12


def qr_retraction(W, a, b):
    """A projector of one's own: the Q factor of ``W + a b^H`` with R's diagonal made positive (the QR
    retraction), for square and tall matrices, batched."""
    Q, R = torch.linalg.qr(W + a @ b.mH)
    return Q * torch.sgn(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)


@pytest.mark.parametrize("shape", [(12, 12), (3, 12, 5)], ids=str)
def test_a_callable_projector_trains_and_keeps_the_matrix_unitary(shape):
    """``projector=`` a function ``(W, a, b) -> W⁺``: it makes the step (projunn_d given as a function
    equals projector="D" to the bit), and one of one's own (a QR retraction) learns an orthogonal target
    and keeps every matrix unitary; it is saved in state_dict as the group's entry."""
    g = torch.Generator().manual_seed(0)
    target = haar(shape, torch.float64, g)
    W_named, W_fn, W_qr = (unitary_param(shape, torch.float64, seed=1) for _ in range(3))
    opts = [
        projunn.ProjUNN([{"params": [W], "unitary": True}], "Adam", lr=0.02, rank=2, seed=0, projector=projector)
        for W, projector in ((W_named, "D"), (W_fn, projunn.projunn_d), (W_qr, qr_retraction))
    ]
    x = torch.randn(shape[:-2] + (shape[-1], 16), dtype=torch.float64, generator=g)
    losses = []
    for _ in range(200):
        for W, opt in zip((W_named, W_fn, W_qr), opts):
            opt.zero_grad()
            loss = (W @ x - target @ x).pow(2).mean()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    assert torch.equal(W_fn.detach(), W_named.detach())
    assert losses[-1] < losses[0] / 4  # (the QR retraction's loss)
    assert max_unitarity_error(W_qr) <= 1e-12
    assert opts[2].state_dict()["param_groups"][0]["projector"] is qr_retraction


def test_a_callable_projector_is_checked_and_its_non_finite_results_are_skipped():
    W = unitary_param((6, 6))
    with pytest.raises(ValueError, match="Unknown projector 'QR'"):
        projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, projector="QR")
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, projector=lambda W, a, b: W[:3])
    W.grad = torch.randn(6, 6)
    with pytest.raises(ValueError, match=r"must return the new matrix, shape \(6, 6\), got \(3, 6\)"):
        opt.step()
    before = W.detach().clone()
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, projector=lambda W, a, b: W * math.nan)
    with pytest.warns(projunn.NonFiniteUpdateWarning, match="1 of 1 matrices"):
        opt.step()
    assert torch.equal(W.detach(), before)


def test_a_callable_sampler_per_group_and_in_state_dict():
    """A group may name its own sampler function; it survives a state_dict round trip, and a
    capturable optimizer refuses any sampler but lsi."""
    W, V = unitary_param((8, 8), seed=0), unitary_param((6, 6), seed=1)
    opt = projunn.ProjUNN(
        [{"params": [W], "unitary": True, "sampler": top_k}, {"params": [V], "unitary": True}], "SGD", lr=0.1
    )
    assert [group["sampler"] for group in opt.param_groups] == [top_k, "lsi"]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    twin = projunn.ProjUNN(
        [{"params": [W], "unitary": True, "sampler": "column"}, {"params": [V], "unitary": True}], "SGD", lr=0.1
    )
    twin.load_state_dict(torch.load(buffer, weights_only=False))
    assert twin.param_groups[0]["sampler"] is top_k
    with pytest.raises(ValueError, match="sampler 'lsi'"):
        projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, sampler=top_k, capturable=True)
    projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, sampler=projunn.samplers.lsi, capturable=True)


def test_loading_plain_optimizer_state_dict_rejected():
    W = unitary_param((8, 8))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-2)
    plain = torch.optim.RMSprop([W], lr=1e-2)
    W.grad = torch.randn(8, 8)
    plain.step()
    with pytest.raises(ValueError, match="projunn"):
        opt.load_state_dict(plain.state_dict())


def test_step_lr_changes_and_uses_unitary_lr():
    n = 6
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(haar((n, n), torch.float64, g))
    other = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    # k = n makes the sketch exact, so the step is projUNN-D of the full SGD update: polar(W - lr g)
    opt = projunn.ProjUNN(
        [{"params": [other]}, {"params": [W], "unitary": True, "lr": 0.1}], "SGD", lr=1.0, projector="D", rank=n
    )
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for step, lr in enumerate((0.1, 0.05, 0.025)):
        assert opt.param_groups[1]["lr"] == pytest.approx(lr)
        assert opt.param_groups[0]["lr"] == pytest.approx(10 * lr)
        grad = torch.randn(n, n, dtype=torch.float64, generator=g)
        W.grad, other.grad = grad, torch.ones(3, dtype=torch.float64)
        expected = projunn.polar(W.detach() - lr * grad)
        not_expected = projunn.polar(W.detach() - 0.1 * grad)
        opt.step()
        schedule.step()
        assert (W - expected).abs().max().item() <= 1e-10
        if step > 0:
            assert (W - not_expected).abs().max().item() > 1e-3


def test_add_param_group_validates_unitary_groups():
    opt = make()
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(4, 3))], "unitary": True})
    W = unitary_param((5, 5), seed=1)
    opt.add_param_group({"params": [W], "unitary": True, "rank": 2})
    assert opt.param_groups[-1]["projector"] == "T" and opt.param_groups[-1]["rank"] == 2
    W0 = W.detach().clone()
    W.grad = torch.randn(5, 5)
    opt.step()
    assert not torch.allclose(W, W0) and max_unitarity_error(W) <= tolerance(W.dtype, 5)


def test_step_hooks_are_supported():
    """torch.optim's public hook API (used by profilers, EMA/SWA helpers, distributed wrappers)."""
    W = unitary_param((6, 6))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda optimizer, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda optimizer, args, kwargs: calls.append("post"))
    W.grad = torch.randn(6, 6)
    opt.step()
    assert calls == ["pre", "post"]


def test_global_step_hooks_fire_once_per_step_with_projunn():
    # The base optimizer runs inside ProjUNN.step: a global hook (profilers, loggers) must see
    # one step of the optimizer the user holds, not a second one of the base.
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    W = unitary_param((6, 6))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1)
    seen = []
    handles = [
        register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: seen.append(("pre", optimizer))),
        register_optimizer_step_post_hook(lambda optimizer, args, kwargs: seen.append(("post", optimizer))),
    ]
    try:
        W.grad = torch.randn(6, 6)
        opt.step()
    finally:
        for handle in handles:
            handle.remove()
    assert seen == [("pre", opt), ("post", opt)]


def test_param_groups_for_unitary_rnn():
    model = nn.ModuleDict({"rnn": projunn.UnitaryRNN(3, 10), "head": nn.Linear(10, 2)})
    frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
    model.register_parameter("frozen", frozen)
    groups = projunn.param_groups(model, unitary_lr=1e-4, rank=2)
    assert len(groups) == 2
    plain, unitary = groups
    assert unitary["unitary"] is True and unitary["lr"] == 1e-4 and unitary["rank"] == 2
    assert [id(p) for p in unitary["params"]] == [id(model["rnn"].weight_hh)]
    expected_plain = {id(p) for name, p in model.named_parameters() if name != "rnn.weight_hh" and p.requires_grad}
    assert {id(p) for p in plain["params"]} == expected_plain and "lr" not in plain
    assert id(frozen) not in {id(p) for g in groups for p in g["params"]}

    opt = projunn.ProjUNN(groups, "RMSprop", lr=1e-3)
    assert opt.param_groups[1]["lr"] == 1e-4 and opt.param_groups[0]["lr"] == 1e-3


def test_param_groups_without_unitary_lr_uses_optimizer_lr():
    model = projunn.UnitaryRNN(2, 4)
    groups = projunn.param_groups(model)
    assert "lr" not in groups[1]
    assert projunn.ProjUNN(groups, "SGD", lr=0.3).param_groups[1]["lr"] == 0.3


# ---------------------------------------------------------------------------------------------
# drift control
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.complex64], ids=["float32", "float64", "complex64"]
)
def test_reproject_every_step_returns_to_machine_precision(dtype):
    n = 32
    W = unitary_param((2, n, n), dtype)
    drifting = unitary_param((2, n, n), dtype)
    opts = [
        projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=1e-3, reproject_every=1, reproject_tol=0),
        projunn.ProjUNN([{"params": [drifting], "unitary": True}], "SGD", lr=1e-3, reproject_every=None),
    ]
    noise = 1e-3 * torch.randn(W.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        W.add_(noise)
        drifting.add_(noise)
    for p in (W, drifting):
        p.grad = torch.randn(W.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for opt in opts:
        opt.step()
    assert max_unitarity_error(W) <= tolerance(dtype, n)
    assert max_unitarity_error(drifting) >= 1e-3  # the perturbation stays without drift control


def test_default_drift_control_acts_every_100_steps():
    n = 64
    W = unitary_param((n, n))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=1e-3)
    with torch.no_grad():
        W.add_(1e-4 * torch.randn(n, n, generator=torch.Generator().manual_seed(0)))
    perturbed = max_unitarity_error(W)
    assert perturbed > 1e-4  # far above the default tolerance 20·sqrt(n)·eps ≈ 1.9e-5
    for _ in range(99):
        W.grad = torch.zeros(n, n)  # a zero step leaves W exactly as it is
        opt.step()
    assert max_unitarity_error(W) == perturbed
    W.grad = torch.zeros(n, n)
    opt.step()  # step 100: checked and re-projected
    assert max_unitarity_error(W) <= 20 * math.sqrt(n) * torch.finfo(torch.float32).eps


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.complex128], ids=["float32", "float64", "complex128"]
)
@pytest.mark.parametrize("size", [1e-6, 1e-3, 1e-1])
def test_estimate_unitarity_error_within_factor_3(dtype, size):
    g = torch.Generator().manual_seed(0)
    n = 48
    W = haar((6, n, n), dtype, g) + size * torch.randn(6, n, n, dtype=dtype, generator=g)
    exact = projunn.unitarity_error(W)
    estimate = estimate_unitarity_error(W, torch.Generator().manual_seed(1), probes=64)
    assert estimate.shape == exact.shape == (6,)
    ratio = estimate / exact
    assert ((ratio > 1 / 3) & (ratio < 3)).all(), ratio


@pytest.mark.slow
def test_drift_over_100k_steps_with_default_settings():
    """100,000 projUNN-T steps (float32, n=256, k=1, RMSprop, fresh Gaussian gradients of unit
    Frobenius norm, as a training gradient) with default drift control stay within 1e-4."""
    n, steps = 256, 100_000
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(haar((n, n), torch.float32, g))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-3, projector="T", rank=1, seed=0)
    worst = 0.0
    for step in range(1, steps + 1):
        W.grad = torch.randn(n, n, generator=g).div_(n)
        opt.step()
        if step % 10_000 == 0:
            worst = max(worst, projunn.unitarity_error(W).item())
    assert worst <= 1e-4
    assert projunn.unitarity_error(W).item() <= 1e-4


# ---------------------------------------------------------------------------------------------
# every optimizer torch ships: the projection of exactly its own update, or refused
# ---------------------------------------------------------------------------------------------
TORCH_OPTIMIZERS = sorted(
    name
    for name in dir(torch.optim)
    if isinstance(getattr(torch.optim, name), type)
    and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
    and name != "Optimizer"
)
REFUSED = {"LBFGS": "re-evaluates the closure", "ASGD": "averages the parameter", "SparseAdam": "sparse gradients"}


@pytest.mark.parametrize("name", TORCH_OPTIMIZERS)
def test_every_torch_optimizer_is_projected_exactly_or_refused(name):
    """At k = n the sketch is exact, so projUNN-D must move W to the polar factor of W + ΔW, with ΔW
    the very update the optimizer makes on an unconstrained copy of W (its state, and any use of
    the weight's value, included), three steps in a row."""
    n = 6
    W0 = projunn.init.haar_(torch.empty(n, n, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    if name in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name]):
            projunn.ProjUNN([{"params": [nn.Parameter(W0.clone())], "unitary": True}], name, lr=1e-2)
        return
    W = nn.Parameter(W0.clone())
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], name, lr=1e-2, projector="D", rank=n, seed=0)
    free = nn.Parameter(W0.clone())
    reference = getattr(torch.optim, name)(
        [free], lr=1e-2, **({"weight_decay": 0.0} if name in ("AdamW", "Adafactor", "Muon") else {})
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        grad = torch.randn(n, n, dtype=torch.float64, generator=g)
        with torch.no_grad():
            free.copy_(W)  # the unconstrained copy starts where W is, with the optimizer's state of W
        before = W.detach().clone()
        W.grad, free.grad = grad.clone(), grad.clone()
        opt.step()
        reference.step()
        expected = projunn.polar(before + (free.detach() - before))
        assert torch.allclose(W.detach(), expected, atol=1e-10), name


class NotSquare(nn.Module):
    unitary_parameter_names = ("weight",)

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize("shape", [(64, 32), (2, 5, 4), (7,)])
def test_vector_or_non_unitary_parameter_is_refused(shape):
    # (a rectangular matrix is fine when its columns or rows are orthonormal: test_stiefel.py)
    model = NotSquare(*shape)
    groups = projunn.param_groups(model)
    assert [len(g["params"]) for g in groups] == [1, 1] and groups[1]["unitary"] is True
    received = f"got shape {shape}" if len(shape) < 2 else f"(shape {shape}) is not unitary"
    with pytest.raises(ValueError, match=re.escape(received)):
        projunn.ProjUNN(groups, "SGD", lr=0.1)
    with pytest.raises(ValueError, match=re.escape(received)):
        projunn.ProjUNN([{"params": [model.weight], "unitary": True}], "Adam", lr=0.1, projector="D")


@pytest.mark.parametrize("projector", ["T", "D"])
@pytest.mark.parametrize("shape", [(6, 6), (3, 5, 5), (7, 4), (3, 7)], ids=["square", "batched", "tall", "wide"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_track_steps_records_the_proposal_the_kept_part_and_the_step_taken(projector, shape, dtype):
    """``step_norms[W]``: ``‖ΔW‖_F`` of SGD's proposal (``lr · ‖G‖``), ``‖a bᴴ‖_F`` (at most that), and
    ``‖W⁺ − W‖_F`` measured on the matrices themselves; the largest over a batch; none when off."""
    g = torch.Generator().manual_seed(3)
    W = nn.Parameter(projunn.init.haar_(torch.empty(shape, dtype=dtype), generator=g))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True, "rank": 1}], "SGD", lr=0.1, projector=projector, seed=0)
    W.grad = torch.randn(shape, dtype=dtype, generator=g)
    opt.step()
    assert opt.step_norms == {}
    opt.track_steps = True
    W.grad = torch.randn(shape, dtype=dtype, generator=g)
    before = W.detach().clone()
    opt.step()
    proposal, kept, taken = opt.step_norms[W].tolist()
    assert proposal == pytest.approx(torch.linalg.matrix_norm(0.1 * W.grad).max().item(), rel=1e-12)
    assert taken == pytest.approx(torch.linalg.matrix_norm(W.detach() - before).max().item(), rel=1e-9)
    assert 0 < kept <= proposal * (1 + 1e-12)


# ---------------------------------------------------------------------------------------------
# the captured fraction of a step: what the rank-k update keeps of the proposal
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["lsi", "column"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_captured_fraction_against_a_reference(sampler, dtype):
    """‖a bᴴ‖_F / ‖G‖_F as a float64 reference computes it; 1 for a rank-k update at rank k,
    below 1 for a full-rank one, 0 for a zero update."""
    g = torch.Generator().manual_seed(0)
    n, k = 12, 3
    low = torch.randn(n, k, dtype=dtype, generator=g) @ torch.randn(k, n, dtype=dtype, generator=g)
    full = torch.randn(2, n, n, dtype=dtype, generator=g)
    for G, exact in ((low, True), (full, False)):
        a, b = projunn.samplers.SAMPLERS[sampler](G, k, generator=g)
        reference = torch.linalg.matrix_norm(a @ b.mH) / torch.linalg.matrix_norm(G)
        fraction = captured_fraction(G, a, b)
        torch.testing.assert_close(fraction, reference, rtol=1e-10, atol=1e-12)
        assert (fraction <= 1 + 1e-12).all()
        if exact:
            torch.testing.assert_close(fraction, torch.ones((), dtype=torch.float64), rtol=1e-10, atol=0)
        else:
            assert (fraction < 0.99).all()
    zero = torch.zeros(n, n, dtype=dtype)
    assert captured_fraction(zero, *projunn.samplers.lsi(zero, k, generator=g)).item() == 0


@pytest.mark.parametrize("projector", ["T", "D"])
def test_projunn_records_the_captured_fraction_when_asked(projector):
    """A rank-k gradient with SGD is a rank-k update: the rank-k step keeps all of it."""
    n, k = 10, 2
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(projunn.init.haar_(torch.empty(n, n, dtype=torch.float64)))
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "SGD", lr=0.1, projector=projector, rank=k, seed=0)
    W.grad = torch.randn(n, k, dtype=torch.float64, generator=g) @ torch.randn(k, n, dtype=torch.float64, generator=g)
    opt.step()
    assert opt.captured == {}  # off by default
    opt.track_captured = True
    opt.step()
    torch.testing.assert_close(opt.captured[W], torch.ones((), dtype=torch.float64), rtol=1e-10, atol=0)

"""The diagnostics (training/diagnostics.py): gradients through time against closed forms, the probes
leaving the forward unchanged, and what a run writes. (The captured fraction of a projUNN step, which
the diagnostics log: tests/library/test_optim.py.)"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

import projunn
from tasks.sequence_models import SequenceModel
from tasks.vision_models import DeepCNN
from tests.helpers.runs import FAST
from train import train
from training.callbacks import unitary_matrices
from training.diagnostics import gradient_profile, spectrum, update_norms
from training.record import DIAGNOSTICS, METRICS, read_jsonl


def last_step_loss(logits, targets):
    return nn.functional.cross_entropy(logits, targets), {}


def linear_rnn(W: torch.Tensor, T: int = 40) -> tuple[SequenceModel, torch.Tensor, torch.Tensor]:
    """A SequenceModel whose recurrence is linear, ``h_t = h_{t−1} Wᵀ + u_t``, read at the last step."""
    n = W.shape[0]
    model = SequenceModel(3, 5, n, cell="unitary", readout="last", init="haar").double()
    model.rnn.activation = nn.Identity()
    with torch.no_grad():
        model.rnn.weight_hh.copy_(W)
    x = torch.randn(4, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, x, torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("rho", [1.0, 0.9])
def test_gradient_through_time_of_a_linear_rnn_is_rho_to_the_distance(rho):
    """With W = ρQ (Q orthogonal) and the loss on h_T only, ∂L/∂h_t = ∂L/∂h_T · W^{T−t}, whose
    norm is ρ^{T−t} ‖∂L/∂h_T‖: flat for an orthogonal W, geometric decay for a contracting one."""
    n, T = 16, 40
    Q = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    model, x, y = linear_rnn(rho * Q, T)
    profile = gradient_profile(model, x, y, last_step_loss)
    assert profile.shape == (T,) and profile.dtype == torch.float64
    expected = profile[-1] * rho ** torch.arange(T - 1, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(profile, expected, rtol=1e-10, atol=0)


def test_gradient_through_time_is_flat_in_float32_for_an_orthogonal_rnn():
    n, T = 32, 200
    model, x, y = linear_rnn(projunn.init.haar_(torch.empty(n, n, dtype=torch.float64)), T)
    model = model.float()
    profile = gradient_profile(model, x.float(), y, last_step_loss)
    assert (profile / profile[-1] - 1).abs().max() < 1e-4


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cell="unitary"),
        dict(cell="unitary", nonlinearity="modrelu", complex=True),
        dict(cell="lstm"),
        dict(cell="rnn"),
    ],
)
def test_zero_probes_leave_the_forward_unchanged(kwargs):
    """``forward(x, probes=0)`` runs the cell's own equations step by step: the same logits as
    the cell's forward, for every cell the framework trains."""
    torch.manual_seed(0)
    model = SequenceModel(3, 5, 12, **kwargs)
    x = torch.randn(2, 9, 3)
    shape, dtype = model.probe_shape(x)
    torch.testing.assert_close(model(x, probes=torch.zeros(shape, dtype=dtype)), model(x))


def test_probes_of_the_deep_cnn_are_its_layers():
    torch.manual_seed(0)
    model = DeepCNN(depth=5, channels=4, orthogonal=True, image_size=6)
    x = torch.randn(3, 1, 6, 6)
    shape, dtype = model.probe_shape(x)
    assert shape == (5, 3, 4, 6, 6)
    torch.testing.assert_close(model(x, probes=torch.zeros(shape, dtype=dtype)), model(x))
    profile = gradient_profile(model, x, torch.tensor([0, 1, 2]), last_step_loss)
    assert profile.shape == (5,) and (profile > 0).all()
    # the last layer's gradient is the classifier's, by hand
    features = model.features(x).detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model.classifier(features.flatten(1)), torch.tensor([0, 1, 2]))
    (grad,) = torch.autograd.grad(loss, features)
    torch.testing.assert_close(profile[-1], grad.double().norm(), rtol=1e-5, atol=0)


def test_a_model_without_probes_has_no_profile():
    assert (
        gradient_profile(nn.Linear(3, 2), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), last_step_loss) is None
    )


def test_spectrum_of_a_rotation():
    theta = 0.3
    W = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    eigenvalues, singular = spectrum(W)
    torch.testing.assert_close(eigenvalues.angle().abs(), torch.full((2,), theta, dtype=torch.float64))
    torch.testing.assert_close(singular, torch.ones(2, dtype=torch.float64))
    eigenvalues, singular = spectrum(torch.stack([W, 2 * W]))  # a batch: singular values only
    assert eigenvalues is None and singular.shape == (2, 2)


def read_rows(run_dir):
    with open(run_dir / METRICS, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.integration
@pytest.mark.parametrize(
    "overrides, kind",
    [
        (["task=copy", "task.T=20"], "grad_time"),
        (["task=copy", "task.T=20", "model=rnn", "optim=adam"], "grad_time"),
        (["experiment=pmnist", "model.hidden_size=8", "task.batch_size=4", "task.eval_batch_size=3"], "grad_time"),
        (
            [
                "task=mnist",
                "model.depth=4",
                "model.channels=4",
                "model.orthogonal=true",
                "optim=projunn_d",
                "task.batch_size=4",
            ],
            "grad_depth",
        ),
    ],
)
def test_a_run_logs_the_diagnostics_at_their_interval(compose_cfg, tmp_path, mnist, overrides, kind):
    """Every 2 steps of 5: one row each in metrics.csv (not repeated at the steps between) and one
    record each in diagnostics.jsonl, with the same steps."""
    root, _ = mnist
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_cfg(
        *overrides, f"data_root={root}", *FAST, "trainer.max_steps=5", "diagnostics_every=2", run_dir=run_dir
    )
    train(cfg)
    tmp_path = run_dir
    rows = read_rows(tmp_path)
    logged = [int(r["step"]) for r in rows if r.get(f"{kind}/ratio_first_last")]
    assert logged == [0, 2, 4]
    assert len({r["step"] for r in rows}) == len(rows)  # one row per step
    records = [json.loads(line) for line in (tmp_path / DIAGNOSTICS).read_text().splitlines()]
    assert [r["step"] for r in records] == logged
    assert all(
        len(r[kind])
        == (cfg.model.depth if kind == "grad_depth" else cfg.task.T + 2 * cfg.task.K if "T" in cfg.task else 784)
        for r in records
    )
    columns = set(rows[0])
    assert "spectrum/max_sv_dev" in columns and "time/diagnostics_s" in columns
    if cfg.optim.get("projector"):
        captured = [c for c in columns if c.startswith("captured/")]
        assert len(captured) == len(unitary_matrices(instantiate(cfg.model, **instantiate(cfg.task).model_kwargs)))
        assert all(0 < float(r[c]) <= 1 + 1e-5 for c in captured for r in rows if r[c])  # (float32 products)
    if cfg.model.get("cell") == "unitary":
        assert max(float(r["spectrum/max_abs_eig_dev"]) for r in rows if r["spectrum/max_abs_eig_dev"]) < 1e-5


@pytest.mark.integration
def test_diagnostics_off(compose_cfg, tmp_path):
    train(compose_cfg(*FAST, "task=copy", "task.T=20", "diagnostics_every=0"))
    assert not (tmp_path / DIAGNOSTICS).exists()
    assert not any(c.startswith(("grad_time", "captured", "spectrum")) for c in read_rows(tmp_path)[0])


def test_diagnostics_every_is_checked(compose_cfg):
    with pytest.raises(ValueError, match="diagnostics_every"):
        train(compose_cfg(*FAST, "diagnostics_every=-1"))


@pytest.mark.integration
def test_a_resumed_run_keeps_one_record_per_step(compose_cfg, tmp_path):
    """A record written after the checkpoint (by a run killed before its next one) is dropped when
    the run resumes, and made again."""
    overrides = (*FAST, "task=copy", "task.T=20", "diagnostics_every=1")
    train(compose_cfg(*overrides, "trainer.max_steps=3"))
    path = tmp_path / DIAGNOSTICS
    with path.open("a") as f:
        f.write(json.dumps({"step": 3, "stale": True}) + "\n")
    train(compose_cfg(*overrides, "trainer.max_steps=5"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert not any("stale" in r for r in records)


@pytest.mark.integration
@pytest.mark.parametrize("jolted", [True, False], ids=["jolted", "control"])
def test_a_loss_spike_leaves_the_updates_before_it_in_the_record(compose_cfg, tmp_path, jolted):
    """Every learning rate × 1000 for the update of step 25 (tests/helpers/hooks.py): the loss of step 26
    jumps, and diagnostics.jsonl holds the updates of steps 24 and 25, step 25's proposal and step
    about 1000 times step 24's; metrics.csv flags step 26. The same run without the jolt: no spike."""
    from tests.helpers.hooks import JoltAt, add

    args = ["task=copy", "task.T=10", "task.batch_size=16", "model.hidden_size=32", "trainer.max_steps=30"]
    args += ["logger=csv", "trainer.enable_progress_bar=false", "diagnostics_every=0", "+callbacks.spikes.window=10"]
    train(compose_cfg(*args, *(add("jolt", JoltAt, step=25) if jolted else []), run_dir=tmp_path))
    spikes = [r for r in read_jsonl(tmp_path / DIAGNOSTICS) if r.get("kind") == "spike"]
    flagged = [int(r["step"]) for r in read_rows(tmp_path) if r.get("spike/loss_over_median")]
    if not jolted:
        assert spikes == [] and flagged == []
        return
    (spike,) = spikes
    assert spike["step"] == 26 and flagged == [26] and spike["loss"] > 10 * spike["median"]
    before, jolt = spike["updates"][-2:]
    assert (before["step"], jolt["step"]) == (24, 25)
    name = "recurrent.weight_hh" if "recurrent.weight_hh" in jolt else next(k for k in jolt if "weight_hh" in k)
    assert jolt[name]["proposal"] > 100 * before[name]["proposal"]
    assert 0 < jolt[name]["kept"] <= jolt[name]["proposal"] * (1 + 1e-5) and jolt[name]["step"] > 0
    assert before[name]["min_sqrt_v"] > 0 and jolt["lr"][0] == pytest.approx(1000 * before["lr"][0])


@pytest.mark.parametrize(
    "base, moment, share", [("RMSprop", "square_avg", 1 - 0.99), ("Adam", "exp_avg_sq", 1 - 0.999)]
)
def test_update_norms_takes_a_step_once_and_reads_the_smallest_denominator(base, moment, share):
    """``update_norms``: a tracked matrix's three norms as ``ProjUNN.track_steps`` left them, taken (a second
    read has none); the smallest ``sqrt(v)`` of every parameter with a second moment, against the state and
    against the first step's closed form ``sqrt((1 − β) · min g²)`` for a plain parameter; in the order asked."""
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(projunn.init.haar_(torch.empty(5, 5, dtype=torch.float64), generator=g))
    b = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    groups = [{"params": [W], "unitary": True, "rank": 1}, {"params": [b]}]
    opt = projunn.ProjUNN(groups, base, lr=1e-2, projector="T", seed=0)
    opt.track_steps = True
    W.grad = torch.randn(5, 5, dtype=torch.float64, generator=g)
    b.grad = torch.randn(5, dtype=torch.float64, generator=g)
    opt.step()
    tracked = opt.step_norms[W].tolist()
    norms = update_norms(opt, [b, W])
    assert list(norms) == [b, W]
    assert [norms[W][key] for key in ("proposal", "kept", "step")] == tracked
    assert norms[W]["min_sqrt_v"] == pytest.approx(opt.state[W][moment].amin().sqrt().item(), rel=1e-12)
    assert norms[b] == {"min_sqrt_v": pytest.approx(math.sqrt(share * b.grad.square().amin().item()), rel=1e-12)}
    again = update_norms(opt, [W])
    assert list(again[W]) == ["min_sqrt_v"]  # the step was read once
    plain = projunn.ProjUNN([{"params": [b]}], "SGD", lr=1e-2)
    plain.step()
    assert update_norms(plain, [b]) == {}

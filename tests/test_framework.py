"""Every sensible task × model × optimizer composes and trains a few CPU steps; the outputs
(metrics.csv columns, last.ckpt, the returned metric) are what the README promises."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FAST, ROOT, read_metrics
from hydra.utils import get_class
from omegaconf import OmegaConf

import projunn
from tasks.data import GeneratedTask
from train import train


def generated_tasks() -> list[str]:
    """The tasks of conf/task whose data is generated (copy, adding, and any new one of the kind)."""
    names = []
    for path in sorted((ROOT / "conf" / "task").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")  # (smnist takes pmnist's)
        if target and issubclass(get_class(target), GeneratedTask):
            names.append(path.stem)
    return names


UNITARY_OPTIMS = ["projunn_t", "projunn_d", "exprnn", "cayley", "rmsprop", "adam"]
TASKS = generated_tasks()
COMBINATIONS = [(task, "urnn", optim) for task in TASKS for optim in UNITARY_OPTIMS] + [
    (task, model, optim) for task in TASKS for model in ("lstm", "rnn") for optim in ("rmsprop", "adam")
]
SMALL = {task: ["task.T=6", "task.batch_size=4", "task.eval_batches=1"] for task in TASKS}


@pytest.mark.integration
@pytest.mark.parametrize("task,model,optim", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_combination_trains(compose_cfg, tmp_path, task, model, optim):
    cfg = compose_cfg(f"task={task}", f"model={model}", f"optim={optim}", "model.hidden_size=8", *SMALL[task], *FAST)
    metric = train(cfg)
    assert metric is not None and math.isfinite(metric)
    rows = read_metrics(tmp_path)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert (tmp_path / "last.ckpt").is_file()
    if model == "urnn":
        errors = [float(r["unitarity/max_error"]) for r in rows if r.get("unitarity/max_error")]
        assert len(errors) == 3
        if optim not in ("rmsprop", "adam"):  # the constrained methods keep W unitary
            assert max(errors) < 1e-5


@pytest.mark.integration
def test_copy_metrics_csv_has_every_column(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "task=copy", "optim=projunn_t", "k=1", "task.T=10", "task.batch_size=8", "model.hidden_size=16", *FAST
    )
    train(cfg)
    columns = set(read_metrics(tmp_path)[0])
    expected = {
        "train/loss",
        "train/acc",
        "train/baseline",
        "val/loss",
        "val/acc",
        "test/loss",
        "test/acc",
        "unitarity/max_error",
        "unitarity/rnn.weight_hh",
        "time/forward_backward_s",
        "time/update_s",
        "time/step_s",
    }
    assert expected <= columns
    baseline = float(read_metrics(tmp_path)[0]["train/baseline"])
    assert baseline == pytest.approx(10 * math.log(8) / (10 + 20))


@pytest.mark.integration
@pytest.mark.parametrize("interval,validations", [(3, 1), (2, 2), (200, 1)])
def test_the_last_step_is_validated_once(compose_cfg, tmp_path, interval, validations):
    # A run whose last step falls between scheduled validations still ends with val/* (the
    # sweep metric, the comparison table); one whose last step was validated is not validated twice.
    cfg = compose_cfg(
        "task=adding",
        "task.T=6",
        "task.batch_size=4",
        "model.hidden_size=8",
        *FAST,
        f"trainer.val_check_interval={interval}",
    )
    metric = train(cfg)
    val_rows = [r for r in read_metrics(tmp_path) if r.get("val/loss")]
    assert len(val_rows) == validations
    assert metric == pytest.approx(float(val_rows[-1]["val/loss"]))


@pytest.mark.integration
def test_step_times_add_up(compose_cfg, tmp_path):
    cfg = compose_cfg("task=adding", "task.T=6", "task.batch_size=4", "model.hidden_size=8", *FAST)
    train(cfg)
    for row in read_metrics(tmp_path):
        if row.get("time/step_s"):
            fb, up, total = (float(row[f"time/{k}"]) for k in ("forward_backward_s", "update_s", "step_s"))
            assert fb > 0 and up > 0 and fb + up == pytest.approx(total, rel=1e-6)


@pytest.mark.integration
def test_complex_modrelu_urnn_stays_unitary(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "task=copy",
        "optim=projunn_d",
        "k=2",
        "model.complex=true",
        "model.nonlinearity=modrelu",
        "model.init=haar",
        "model.hidden_size=8",
        *SMALL["copy"],
        *FAST,
    )
    train(cfg)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    W = state["model.rnn.weight_hh"]
    assert W.is_complex() and projunn.unitarity_error(W) < 1e-5


@pytest.mark.integration
def test_resume_continues_the_run(compose_cfg, tmp_path):
    """A run stopped at step 4 and resumed from last.ckpt ends where an uninterrupted run ends."""
    args = [
        "task=copy",
        "task.T=5",
        "task.batch_size=4",
        "model.hidden_size=8",
        "test=false",
        "logger=csv",
        "trainer.val_check_interval=100",
        "trainer.enable_progress_bar=false",
        "checkpoint_every=4",
    ]
    straight = tmp_path / "straight"
    straight.mkdir()
    train(compose_cfg(*args, "trainer.max_steps=8", run_dir=straight))
    cfg = compose_cfg(*args, "trainer.max_steps=4")
    train(cfg)
    cfg = compose_cfg(*args, "trainer.max_steps=8")  # same run directory: resumes from last.ckpt
    train(cfg)
    a = torch.load(straight / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    losses = lambda d: [r["train/loss"] for r in read_metrics(d) if r.get("train/loss")]
    assert losses(straight) == losses(tmp_path)


DECAYS = [("copy_T1000", 0.9, 1, 4000), ("adding_T200", 0.94, 1, 2000), ("pmnist", 0.2, 60, 468)]


@pytest.mark.integration
@pytest.mark.parametrize("preset,gamma,epochs,steps_per_epoch", DECAYS, ids=[d[0] for d in DECAYS])
def test_paper_presets_decay_every_learning_rate_on_schedule(compose_cfg, preset, gamma, epochs, steps_per_epoch):
    # copy/adding: × gamma per epoch (the authors' MultiplicativeLR stepped per epoch); pMNIST: × 0.2
    # after 60 epochs (their StepLR(60 · len(train_loader), 0.2) stepped per batch; 468 full batches of 128).
    from hydra.utils import instantiate

    cfg = compose_cfg(f"experiment={preset}", "model.hidden_size=8")
    model = instantiate(cfg.model, input_size=3, output_size=2, readout="last")
    optimizer = instantiate(cfg.optim)(model)
    scheduler = instantiate(cfg.scheduler)(optimizer, steps_per_epoch=steps_per_epoch, total_steps=10**6)
    start = [group["lr"] for group in optimizer.param_groups]
    for step in range(1, epochs * steps_per_epoch + 1):
        optimizer.step()  # no gradients: nothing moves, the schedule still counts
        scheduler.step()
        if step == epochs * steps_per_epoch - 1:
            assert [group["lr"] for group in optimizer.param_groups] == start
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([lr * gamma for lr in start])
    assert any(group.get("unitary") for group in optimizer.param_groups)  # the unitary group decays too


def test_authors_rmsprop_squares_complex_gradients_without_conjugate():
    # facebookresearch/projUNN, projunn/optimizers.py@3213f2e:146-166:
    # v ← α v + (1 − α) g·g, θ ← θ − lr g / (sqrt(v) + eps)
    from training.optim import AuthorsRMSprop

    g = torch.Generator().manual_seed(0)
    real = torch.randn(5, 4, dtype=torch.float64, generator=g)
    complex_ = torch.randn(5, 4, dtype=torch.complex128, generator=g)
    ours = [real.clone().requires_grad_(), complex_.clone().requires_grad_()]
    torch_real = real.clone().requires_grad_()
    opt = AuthorsRMSprop(ours, lr=1e-2)
    reference = torch.optim.RMSprop([torch_real], lr=1e-2)  # alpha 0.99, eps 1e-8: the same on reals
    v = torch.zeros(5, 4, dtype=torch.complex128)
    expected = complex_.clone()
    for _ in range(5):
        grads = (
            torch.randn(5, 4, dtype=torch.float64, generator=g),
            torch.randn(5, 4, dtype=torch.complex128, generator=g),
        )
        ours[0].grad, ours[1].grad, torch_real.grad = grads[0], grads[1], grads[0].clone()
        opt.step()
        reference.step()
        a, b = grads[1].real, grads[1].imag
        v = 0.99 * v + 0.01 * torch.complex(a * a - b * b, 2 * a * b)  # the complex square, written out
        root = v.abs().sqrt() * torch.exp(0.5j * v.angle())  # principal square root
        expected = expected - 1e-2 * grads[1] / (root + 1e-8)
    assert torch.allclose(ours[0], torch_real, rtol=0, atol=1e-14)
    assert torch.allclose(ours[1], expected, rtol=0, atol=1e-12)
    one = torch.zeros(1, dtype=torch.complex128, requires_grad=True)
    one.grad = torch.tensor([2j], dtype=torch.complex128)  # a gradient of constant phase: the step is real
    AuthorsRMSprop([one], lr=1.0, eps=0).step()
    assert one.detach().imag.abs().item() < 1e-15 and one.detach().real.abs().item() == pytest.approx(10.0)


def test_tensorflow_rmsprop_starts_its_mean_square_at_one():
    # scoRNN's optimizer, TensorFlow 1's RMSPropOptimizer: ms ← ρ ms + (1 − ρ) g², ms₀ = 1, θ ← θ − lr g / sqrt(ms + ε)
    from training.optim import TensorFlowRMSprop

    g = torch.Generator().manual_seed(0)
    theta = torch.randn(6, dtype=torch.float64, generator=g)
    p = theta.clone().requires_grad_()
    opt = TensorFlowRMSprop([p], lr=1e-3)
    ms = torch.ones(6, dtype=torch.float64)
    for _ in range(4):
        grad = torch.randn(6, dtype=torch.float64, generator=g)
        p.grad = grad
        opt.step()
        ms = 0.9 * ms + 0.1 * grad**2
        theta = theta - 1e-3 * grad / torch.sqrt(ms + 1e-10)
    assert torch.allclose(p.detach(), theta, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="real parameters only"):
        TensorFlowRMSprop([torch.zeros(2, dtype=torch.complex64, requires_grad=True)])

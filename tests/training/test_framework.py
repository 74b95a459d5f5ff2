"""Every sensible task × model × optimizer composes and trains a few CPU steps; the outputs
(metrics.csv columns, last.ckpt, the returned metric) are what the README promises; ``compile=true``
trains as the eager run; freed memory kept mapped for the next step."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

import projunn
from tasks.data import GeneratedTask
from tests.helpers import ROOT
from tests.helpers.records import read_metrics
from tests.helpers.runs import FAST
from train import train
from training.record import SUMMARY


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


TINY_COPY = ["task=copy", "optim=projunn_t", "task.T=5", "task.batch_size=4", "task.eval_batches=1"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "end",
    [["trainer.max_steps=3"], ["trainer.max_steps=-1", "trainer.max_epochs=1", "task.steps_per_epoch=3"]],
    ids=["max_steps", "max_epochs"],
)
def test_a_run_shorter_than_unitarity_every_is_measured_at_its_last_step(compose_cfg, tmp_path, end):
    cfg = compose_cfg(*TINY_COPY, "model.hidden_size=8", "unitarity_every=50", *FAST, *end)
    train(cfg)
    rows = read_metrics(tmp_path)
    measured = [r for r in rows if r.get("unitarity/max_error")]
    last_train_step = max(int(r["step"]) for r in rows if r.get("train/loss"))
    assert [int(r["step"]) for r in measured] == [last_train_step]
    assert measured[0]["unitarity/rnn.weight_hh"] and float(measured[0]["unitarity/max_error"]) < 1e-5


RSS_AFTER_FREE = """
import torch
from training.memory import keep_freed_memory

def resident_after_a_freed_tensor():
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1])
    big = torch.ones(50_000_000)  # 200 MB, written
    del big
    with open("/proc/self/statm") as f:
        return (int(f.read().split()[1]) - before) * 4096 / 1e6

print(resident_after_a_freed_tensor(), keep_freed_memory(), resident_after_a_freed_tensor())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_keeps_a_freed_tensor_mapped_for_the_next_one():
    command = [sys.executable, "-c", RSS_AFTER_FREE]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    default, kept, resident = result.stdout.split()
    assert float(default) < 10  # glibc's default: unmapped when freed
    assert kept == "True" and float(resident) > 190  # the 200 MB stay mapped, for the next step's tensors


# ---------------------------------------------------------------------------------------------
# compile=true: the run compiled, as the eager one
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_compile_true_trains_as_the_eager_run(compose_cfg, tmp_path):
    """``train.py ... compile=true`` (Lightning's route: ``from_compiled(torch.compile(module))``) on a
    small copy task: the first 20 training losses are the eager run's to 1e-4, and the run's record
    (summary.json's command) says it was compiled."""
    from train import train  # (imports Lightning: only the integration tests need it)

    overrides = ["task=copy", "task.T=10", "task.batch_size=8", "model.hidden_size=16", "debug=tiny"]
    overrides += ["trainer.max_steps=20", "trainer.val_check_interval=20", "trainer.limit_val_batches=0", "test=false"]
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        run_dir = tmp_path / f"compile_{compiled}"
        run_dir.mkdir()
        cfg = compose_cfg(*overrides, f"compile={str(compiled).lower()}", run_dir=run_dir)
        train(cfg)
        rows = read_metrics(run_dir)
        losses[compiled] = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert (graphs >= 1) == compiled
        assert ("compile=true" in json.loads((run_dir / SUMMARY).read_text())["command"]) == compiled
    assert len(losses[True]) == len(losses[False]) == 20
    for eager, compiled in zip(losses[False], losses[True]):
        assert compiled == pytest.approx(eager, rel=1e-4)

"""Bad input fails before training with one clear message and a non-zero exit.

The messages are checked in-process (fast); two subprocess runs check what a user sees: one
``error: ...`` line on stderr and exit status 1, or Hydra's list of choices.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from train import train
from training.reporting import user_error

BAD_INPUTS = [
    # types and ranges, checked as soon as the config is composed (training/schema.py)
    (["k=0"], "k: expected an integer >= 1, got 0"),
    (["task.T=0"], "task.T: expected an integer >= 1, got 0"),
    (["task=adding", "task.T=-3"], "task.T: expected an integer >= 1, got -3"),
    (["task.batch_size=0"], "task.batch_size: expected an integer >= 1, got 0"),
    (["model.hidden_size=0"], "model.hidden_size: expected an integer >= 1, got 0"),
    (["optim.lr=-0.1"], "optim.lr: expected a number >= 0, got -0.1"),
    (["optim.projector=X"], "optim.projector: expected one of 'T', 'D', got 'X'"),
    (["optim.sampler=svd"], "optim.sampler: expected one of 'lsi', 'column', got 'svd'"),
    # what only the code can check
    (["k=191"], "rank k must be in 1..n=190, got 191"),
    (["optim.base=RMSProp"], "Unknown base optimizer 'RMSProp'"),
    (["model=lstm", "optim=projunn_t"], "projUNN-T needs a model with unitary matrices"),
    (["model=rnn", "optim=exprnn"], "the matrix_exp parametrization needs a model with unitary matrices"),
    (["model.complex=true"], "nonlinearity 'relu' is not defined for complex hidden states"),
    (
        ["task=cifar10", "model=urnn"],
        "model=urnn does not fit task=cifar10; models that do: deep_cnn, orthogonal_mlp, orthogonal_resnet9, resnet9",
    ),
    (["task=copy", "model=resnet9"], "model=resnet9 does not fit task=copy; models that do: lstm, rnn, urnn"),
    (
        ["task=mnist", "model=lstm"],
        "model=lstm does not fit task=mnist; models that do: deep_cnn, orthogonal_mlp, orthogonal_resnet9, resnet9",
    ),
    (["optim=cayley", "optim.negative_ones=191"], "negative_ones must be an integer in 0..n=190, got 191"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=["-".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_message(compose_cfg, tmp_path, overrides, message):
    cfg = compose_cfg("logger=csv", "trainer.max_steps=1", *overrides)
    with pytest.raises(Exception) as info:
        train(cfg)
    cause = user_error(info.value)
    assert cause is not None, f"not reported as a user error: {info.value!r}"
    assert message in str(cause)
    assert "\n" not in str(cause)
    assert not (tmp_path / "metrics.csv").exists()  # failed before training


DEFAULT_MODELS = {
    "copy": "urnn",
    "adding": "urnn",
    "pmnist": "urnn",
    "smnist": "urnn",
    "mnist": "deep_cnn",
    "cifar10": "orthogonal_resnet9",
}


@pytest.mark.parametrize("task,model", DEFAULT_MODELS.items())
def test_every_task_picks_a_model_when_none_is_given(compose_cfg, task, model):
    from hydra.core.hydra_config import HydraConfig

    compose_cfg(f"task={task}")
    assert HydraConfig.get().runtime.choices["model"] == model
    assert compose_cfg(f"task={task}", "model=lstm").model.cell == "lstm"  # model= still wins
    assert compose_cfg("experiment=pmnist", f"task={task}").model.cell == "unitary"  # and a preset's choice


def run_train(*overrides: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [sys.executable, "train.py", "logger=csv", f"hydra.run.dir={tmp_path}", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_command_line_reports_one_line_and_exits_nonzero(tmp_path):
    result = run_train("k=191", tmp_path=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: rank k must be in 1..n=190, got 191"), result.stderr[-2000:]
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert "Traceback" not in result.stderr
    assert "ValueError" in (tmp_path / "error.log").read_text()


def test_unknown_group_option_lists_choices(tmp_path):
    result = run_train("optim=sgd", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'optim/sgd'" in result.stderr
    assert "Available options" in result.stderr and "projunn_t" in result.stderr

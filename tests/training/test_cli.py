"""Bad input fails before training with one clear message and a non-zero exit.

One table holds every bad value: those the schema checks as soon as the config is composed
(training/schema.py: types and ranges, a ``ConfigError`` with exactly the message, nothing written)
and those only the code can check (k > n, a base optimizer's name, a model that does not fit the
task, ...). They are checked in-process (fast); subprocess runs check what a user sees: one
``error: ...`` line on stderr and exit status 1, or Hydra's list of choices. (MNIST missing and
no network: tests/tasks/test_mnist.py.)
"""

from __future__ import annotations

import pytest

from tests.helpers import ROOT
from tests.helpers.runs import FAST, QUIET, assert_one_error_line, run_sweep, run_train
from train import train
from training.record import METRICS
from training.reporting import user_error
from training.schema import ConfigError, check_config, check_model_fits_task

# (overrides, message): the schema's error, exactly; ``None`` marks a valid neighbour of the next row.
CHECKED_AT_COMPOSE = [
    (["k=0"], "k: expected an integer >= 1, got 0"),
    (["k=-1"], "k: expected an integer >= 1, got -1"),
    (["k=1.5"], "k: expected an integer >= 1, got 1.5"),
    (["seed=abc"], "seed: expected an integer, got 'abc'"),
    (["resume=maybe"], "resume: expected true or false, got 'maybe'"),
    (["checkpoint_every=0"], "checkpoint_every: expected an integer >= 1, got 0"),
    (["unitarity_every=-2"], "unitarity_every: expected an integer >= 1, got -2"),
    (["task.T=0"], "task.T: expected an integer >= 1, got 0"),
    (["task.T=-1"], "task.T: expected an integer >= 1, got -1"),
    (["task=adding", "task.T=-3"], "task.T: expected an integer >= 1, got -3"),
    (["task=adding", "task.T=0"], "task.T: expected an integer >= 1, got 0"),
    (["task.batch_size=0"], "task.batch_size: expected an integer >= 1, got 0"),
    (["task.batch_size=-8"], "task.batch_size: expected an integer >= 1, got -8"),
    (["task.batch_size=1.5"], "task.batch_size: expected an integer >= 1, got 1.5"),
    (["task.steps_per_epoch=many"], "task.steps_per_epoch: expected an integer >= 1, got 'many'"),
    (["task=pmnist"], None),
    (["task=pmnist", "task.val_fraction=1"], "task.val_fraction: expected a number >= 0 and < 1, got 1"),
    (["model.hidden_size=0"], "model.hidden_size: expected an integer >= 1, got 0"),
    (["model=lstm", "model.hidden_size=-2"], "model.hidden_size: expected an integer >= 1, got -2"),
    (
        ["model.init=orthogonal"],
        "model.init: expected one of 'identity', 'haar', 'henaff', 'cayley', 'exprnn_cayley', got 'orthogonal'",
    ),
    (["model.nonlinearity=tanh"], "model.nonlinearity: expected one of 'relu', 'modrelu', got 'tanh'"),
    (["model.complex=yes"], "model.complex: expected true or false, got 'yes'"),
    (["model.readout_gain=0"], "model.readout_gain: expected a number > 0, got 0"),
    (
        ["experiment=cifar10_projunn_t", "model.channels=[64,0,256]"],
        "model.channels: expected an integer >= 1 or a list of integers >= 1, got [64, 0, 256]",
    ),
    (["optim.lr=-0.1"], "optim.lr: expected a number >= 0, got -0.1"),
    (["optim.lr=-1"], "optim.lr: expected a number >= 0, got -1"),
    (["optim.lr=abc"], "optim.lr: expected a number >= 0, got 'abc'"),
    (["optim=adam", "optim.lr=-1e-3"], "optim.lr: expected a number >= 0, got -0.001"),
    (["optim.unitary_lr_scale=fast"], "optim.unitary_lr_scale: expected a number >= 0, got 'fast'"),
    (["optim.unitary_lr_scale=-1"], "optim.unitary_lr_scale: expected a number >= 0, got -1"),
    (["optim.projector=X"], "optim.projector: expected one of 'T', 'D', got 'X'"),
    (["optim.sampler=svd"], "optim.sampler: expected one of 'lsi', 'column', got 'svd'"),
    (["optim.rank=4"], "optim.rank is k's (rank: ${k}); got optim.rank=4 with k=1: set k=4"),
    (["init_noise=-1e-7"], "init_noise: expected a number >= 0, got -1e-07"),
    (["scheduler=step"], None),
    (["trainer.max_steps=-5"], "trainer.max_steps: expected an integer >= -1, got -5"),
    (
        ["trainer.precision=8-mixed"],
        "trainer.precision: expected one of '32-true', '32', '64-true', '64', 'bf16-mixed', '16-mixed', "
        "'bf16-true', '16-true', got '8-mixed'",
    ),
    (
        ["trainer.val_check_interval=0"],
        "trainer.val_check_interval: expected an integer >= 1 or a number > 0 and <= 1, got 0",
    ),
    (["logger.wandb.mode=bogus"], "logger.wandb.mode: expected one of 'online', 'offline', 'disabled', got 'bogus'"),
]
# (overrides, message): a user error (Hydra may wrap it) whose message holds this one.
CHECKED_BY_THE_CODE = [
    (["k=191"], "rank k must be in 1..n=190, got 191"),
    (["model.hidden_size=16", "k=17"], "rank k must be in 1..n=16, got 17"),
    (["optim=projunn_d", "model.hidden_size=8", "k=9"], "rank k must be in 1..n=8, got 9"),
    (["optim.base=RMSProp"], "Unknown base optimizer 'RMSProp'"),
    (["model=lstm", "optim=projunn_t"], "projUNN-T needs a model with unitary matrices"),
    (["model=lstm", "optim=projunn_d"], "projUNN-D needs a model with unitary matrices"),
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
BAD_INPUTS = [(*row, True) for row in CHECKED_AT_COMPOSE] + [(*row, False) for row in CHECKED_BY_THE_CODE]


@pytest.mark.parametrize("overrides,message,at_compose", BAD_INPUTS, ids=["-".join(o) for o, _, _ in BAD_INPUTS])
def test_bad_input_fails_before_training_with_one_line(compose_cfg, tmp_path, overrides, message, at_compose):
    cfg = compose_cfg(*QUIET, "trainer.max_steps=1", *overrides)
    if message is None:
        check_config(cfg)  # the valid neighbours pass
        return
    with pytest.raises(Exception) as info:
        train(cfg)
    cause = user_error(info.value)
    assert cause is not None, f"not reported as a user error: {info.value!r}"
    assert message in str(cause) and "\n" not in str(cause)
    assert not (tmp_path / METRICS).exists()  # failed before training
    if at_compose:
        assert isinstance(info.value, ConfigError) and str(info.value) == message
        assert not any(tmp_path.iterdir())  # nothing built, nothing written


@pytest.mark.integration
def test_every_preset_and_group_option_passes_the_check(compose_cfg):
    options = [f"experiment={p.stem}" for p in (ROOT / "conf" / "experiment").glob("*.yaml")]
    for group in ("task", "model", "optim", "scheduler", "trainer", "logger"):
        options += [f"{group}={p.stem}" for p in (ROOT / "conf" / group).glob("*.yaml")]
    for option in options:
        check_config(compose_cfg(option, *(["task=cifar10"] if "resnet9" in option or "deep_cnn" in option else [])))


def test_fast_settings_still_pass(compose_cfg):
    check_config(compose_cfg(*FAST))


TASKS = sorted(path.stem for path in (ROOT / "conf" / "task").glob("*.yaml"))  # every task, a new one too


@pytest.mark.parametrize("task", TASKS)
def test_every_task_picks_a_model_that_fits_it_when_none_is_given(compose_cfg, task):
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    cfg = compose_cfg(f"task={task}")
    assert HydraConfig.get().runtime.choices["model"] and cfg.model
    check_model_fits_task(cfg.model, instantiate(cfg.task).model_kwargs)  # raises where it does not fit
    assert compose_cfg(f"task={task}", "model=lstm").model.cell == "lstm"  # model= still wins
    assert compose_cfg("experiment=pmnist", f"task={task}").model.cell == "unitary"  # and a preset's choice


# ---------------------------------------------------------------------------------------------
# on the command line: what a user sees
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_command_line_reports_one_line_and_exits_nonzero(tmp_path):
    result = run_train("k=191", run_dir=tmp_path)
    line = assert_one_error_line(result)
    assert line.startswith("error: rank k must be in 1..n=190, got 191")
    assert [x for x in result.stderr.splitlines() if x.strip()][-1] == line  # the last thing printed
    assert "ValueError" in (tmp_path / "error.log").read_text()


@pytest.mark.integration
@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.hidden_size=-4"], "model.hidden_size: expected an integer >= 1, got -4"),
        (["task.T=-1"], "task.T: expected an integer >= 1, got -1"),
        # a recurrent matrix is square: there is no way to ask for (64, 32)
        (["model.hidden_size=[64,32]"], "model.hidden_size: expected an integer >= 1, got [64, 32]"),
        (["optim.lr=abc"], "optim.lr: expected a number >= 0, got 'abc'"),
    ],
    ids=["hidden_size=-4", "T=-1", "hidden_size=[64,32]", "lr=abc"],
)
def test_bad_value_on_the_command_line(tmp_path, overrides, message):
    result = run_train(*overrides, run_dir=tmp_path)
    line = assert_one_error_line(result, message)
    assert line.startswith(f"error: {message}")
    assert not (tmp_path / METRICS).exists()


@pytest.mark.integration
def test_unknown_group_option_lists_choices(tmp_path):
    result = run_train("optim=sgd", run_dir=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'optim/sgd'" in result.stderr
    assert "Available options" in result.stderr and "projunn_t" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "group,bad,some_choices", [("task", "sorting", ["adding", "copy"]), ("model", "gru", ["lstm", "urnn"])]
)
def test_unknown_task_or_model_lists_the_choices(tmp_path, group, bad, some_choices):
    result = run_train(f"{group}={bad}", run_dir=tmp_path / "run")
    assert result.returncode != 0
    assert f"Could not find '{group}/{bad}'" in result.stderr
    listing = result.stderr.split(f"Available options in '{group}':", 1)
    assert len(listing) == 2, result.stderr
    listed = []
    for line in listing[1].strip("\n").splitlines():
        if not line.startswith("\t"):
            break
        listed.append(line.strip())
    assert listed == sorted(path.stem for path in (ROOT / "conf" / group).glob("*.yaml"))
    assert set(some_choices) <= set(listed)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
@pytest.mark.parametrize("parent", ["run", "sweep"])
def test_unwritable_output_directory(tmp_path, parent):
    # We may run as root, for whom no permission bit blocks a write: a regular file where a
    # parent directory should be does.
    (tmp_path / "afile").write_text("not a directory")
    target = tmp_path / "afile" / parent
    if parent == "run":
        result = run_train(run_dir=target)
    else:
        result = run_sweep(*QUIET, "k=1,2", sweep_dir=target)
    assert_one_error_line(result, f"cannot write the output directory {target}", "Not a directory")

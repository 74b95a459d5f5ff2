"""Reliability of the experiment framework: a run killed with SIGKILL resumes to exactly the
result of a run that never stopped; DDP processes hold bit-identical unitary weights; a NaN/Inf
loss stops the run and keeps its last good checkpoint; a preempted SLURM job is requeued and
resumes. (Bad input, which fails with one line and a non-zero exit, is tests/test_cli.py's.)

Runs are real ``python train.py`` processes where the process is the point (a kill, several
ranks, an exit status); the rest runs in-process, a crash then being an exception raised from a
callback. Every test that trains is marked ``integration``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import projunn
import train
from tests.helpers import ROOT
from tests.helpers.hooks import CrashAt, RecordWeights, SimulatedCrash, add
from tests.helpers.records import load_checkpoint, logged_steps, read_metrics, train_rows
from tests.helpers.runs import (
    ENV,
    FAST,
    KILL_AFTER_STEP,
    KILL_RUN,
    MAX_STEPS,
    QUIET,
    TIMEOUT_S,
    assert_one_error_line,
    assert_same_run,
    command,
    run_train,
    start_twin,
)
from training.callbacks import UnitarityMonitor, unitary_matrices
from training.lightning_module import NonFiniteLossError
from training.record import SUMMARY
from training.reporting import user_error
from training.run_dir import checkpoint_to_resume


# ---------------------------------------------------------------------------------------------
# 1. crash and resume: SIGKILL mid-training, restart, same result as a run that never stopped
# ---------------------------------------------------------------------------------------------
def start_and_kill(run_dir: Path, log: Path) -> bool:
    """Start a training run and SIGKILL its process group once it has logged step ``KILL_AFTER_STEP``.
    False if the run ended by itself first."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command(*KILL_RUN, run_dir=run_dir),
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if max(logged_steps(run_dir), default=-1) >= KILL_AFTER_STEP:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                assert proc.returncode == -signal.SIGKILL
                return True
            time.sleep(0.005)
        assert proc.poll() is not None, f"the run did not reach step {KILL_AFTER_STEP} in {TIMEOUT_S} s"
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.integration
def test_sigkill_mid_training_then_resume_equals_uninterrupted_run(tmp_path, record_property):
    straight_dir = tmp_path / "straight"
    straight = start_twin(straight_dir)  # the twin runs meanwhile
    try:
        for attempt in range(4):  # a loaded machine may let the run finish before the kill lands
            killed_dir = tmp_path / f"killed{attempt}"
            killed = start_and_kill(killed_dir, tmp_path / f"killed{attempt}.log")
            if not killed or not (killed_dir / "last.ckpt").is_file():
                continue
            resumed_from = load_checkpoint(killed_dir / "last.ckpt")["global_step"]
            logged_before = logged_steps(killed_dir)
            # A real interruption: the checkpoint is mid-run and rows after it were logged (to be redone).
            if 0 < resumed_from < MAX_STEPS and max(logged_before) >= resumed_from:
                record_property("killed_after_step", max(logged_before))
                record_property("resumed_from_step", resumed_from)
                break
        else:
            pytest.fail("could not kill the run between a checkpoint and the end in 4 attempts")
        # The killed sitting left its record as far as its checkpoint (written after each one), never ahead of it.
        summary = json.loads((killed_dir / SUMMARY).read_text())
        assert summary["status"] == "unfinished" and 0 < summary["steps"]["done"] <= resumed_from
        assert summary["sittings"][-1]["to_step"] == summary["steps"]["done"]
        assert straight.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        if straight.poll() is None:
            straight.kill()
            straight.wait()

    resumed = run_train(*KILL_RUN, run_dir=killed_dir)  # the same command: resume=true and last.ckpt is there
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {killed_dir / 'last.ckpt'}" in resumed.stdout + resumed.stderr
    assert_same_run(straight_dir, killed_dir, record_property)


# ---------------------------------------------------------------------------------------------
# 1b. a crash during the validation that follows a checkpoint (the default settings,
#     checkpoint_every=100 and val_check_interval=200, make every validation follow one)
# ---------------------------------------------------------------------------------------------
CRASHES = [("validation", 10), ("validation", 20), ("test", 20)]


@pytest.mark.integration
@pytest.mark.parametrize("phase,crash_at", CRASHES, ids=["mid-run-validation", "final-validation", "test"])
def test_crash_during_evaluation_after_a_checkpoint_then_resume_redoes_it(compose_cfg, tmp_path, phase, crash_at):
    """As a SIGKILL there would (checked by hand with real kills), an exception in the validation
    due after step ``crash_at``, or in the test after fitting, leaves the run directory as it is;
    the same command then continues to the uninterrupted run's rows and returned metric."""
    args = [
        "task.T=5",
        "task.batch_size=4",
        "task.eval_batches=1",
        "model.hidden_size=8",
        *QUIET,
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "checkpoint_every=5",
    ]
    straight = tmp_path / "straight"
    straight.mkdir()
    metric_straight = train.train(compose_cfg(*args, run_dir=straight))

    crash = add("crash", CrashAt, hook=f"{phase}_start", step=crash_at if phase == "validation" else "null")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with pytest.raises(SimulatedCrash):
        train.train(compose_cfg(*args, *crash, run_dir=crashed))
    assert 0 < load_checkpoint(crashed / "last.ckpt")["global_step"] <= crash_at
    metric_resumed = train.train(compose_cfg(*args, run_dir=crashed))  # the same command: resumes from last.ckpt

    assert metric_straight is not None and metric_resumed == metric_straight  # what a sweeper receives
    # The interrupted evaluation was redone, once. (The test row's step is left out: a fit resumed at
    # max_steps has nothing to run, and Lightning then labels the test row one step lower.)
    vals = lambda d: [(r["step"], r["val/loss"]) for r in read_metrics(d) if r.get("val/loss")]
    tests = lambda d: [r["test/loss"] for r in read_metrics(d) if r.get("test/loss")]
    assert vals(crashed) == vals(straight) and tests(crashed) == tests(straight)
    losses = lambda d: {s: r["train/loss"] for s, r in train_rows(read_metrics(d)).items()}
    assert losses(crashed) == losses(straight)


@pytest.mark.integration
def test_crash_before_the_first_checkpoint_then_restart_logs_each_step_once(compose_cfg, tmp_path):
    """Killed before its first checkpoint, a run restarts from scratch in the same directory: the
    rows of the lost attempt are dropped, as rows after a checkpoint are on a resume."""
    args = [
        "task.T=5",
        "task.batch_size=4",
        "task.eval_batches=1",
        "model.hidden_size=8",
        *QUIET,
        "test=false",
        "trainer.max_steps=8",
        "trainer.val_check_interval=100",
        "checkpoint_every=5",
    ]
    straight = tmp_path / "straight"
    straight.mkdir()
    train.train(compose_cfg(*args, run_dir=straight))

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with pytest.raises(SimulatedCrash):
        train.train(compose_cfg(*args, *add("crash", CrashAt, hook="train_batch_end", step=3), run_dir=crashed))
    assert not (crashed / "last.ckpt").exists() and logged_steps(crashed)[:1] == [0]
    train.train(compose_cfg(*args, run_dir=crashed))  # nothing to resume from: starts over
    losses = lambda d: {s: r["train/loss"] for s, r in train_rows(read_metrics(d)).items()}
    assert losses(crashed) == losses(straight)


# ---------------------------------------------------------------------------------------------
# 2. several processes: DDP on the CPU, identical unitary weights on every rank
# ---------------------------------------------------------------------------------------------
# Every rank saves its unitary matrices after each step and a digest of its batch (tests/hooks.py's
# RecordWeights, added by a config override), which checks the ranks' weights without relying on
# UnitarityMonitor's broadcast.
DDP_STEPS = 20


@pytest.mark.integration
@pytest.mark.parametrize("optim", ["projunn_t", "projunn_d"])
def test_ddp_cpu_ranks_hold_bit_identical_unitary_weights(tmp_path, optim):
    run_dir = tmp_path / "run"
    result = run_train(
        "trainer=ddp_cpu",
        "task=copy",
        "task.T=10",
        "task.batch_size=16",
        "task.eval_batches=2",
        "model.hidden_size=32",
        f"optim={optim}",
        "k=2",
        f"trainer.max_steps={DDP_STEPS}",
        "trainer.val_check_interval=10",
        "test=false",
        *add("record", RecordWeights),
        run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # What the run logs: the divergence between ranks at every step, exactly 0, and W unitary.
    rows = train_rows(read_metrics(run_dir))
    assert sorted(rows) == list(range(DDP_STEPS))
    assert all(rows[s].get("unitarity/rank_divergence") for s in rows), "rank_divergence not logged at every step"
    assert [float(rows[s]["unitarity/rank_divergence"]) for s in sorted(rows)] == [0.0] * DDP_STEPS
    assert max(float(r["unitarity/max_error"]) for r in rows.values()) <= 1e-5

    # Independently: what each process held, step by step.
    rank0, rank1 = (torch.load(run_dir / f"rank{r}.pt") for r in (0, 1))
    assert len(rank0["steps"]) == len(rank1["steps"]) == DDP_STEPS
    assert {k: torch.equal(v, rank1["initial"][k]) for k, v in rank0["initial"].items()} == {"rnn.weight_hh": True}
    for s0, s1 in zip(rank0["steps"], rank1["steps"]):
        assert s0["global_step"] == s1["global_step"]
        assert s0["batch"] != s1["batch"], "both ranks trained on the same batch: the data is not sharded"
        for name, W in s0["weights"].items():
            assert (W - s1["weights"][name]).abs().max().item() == 0.0, (s0["global_step"], name)
            assert projunn.unitarity_error(W).item() <= 1e-5
    final = rank0["steps"][-1]["weights"]["rnn.weight_hh"]
    assert not torch.equal(final, rank0["initial"]["rnn.weight_hh"])  # it trained
    assert torch.equal(final, load_checkpoint(run_dir / "last.ckpt")["state_dict"]["model.rnn.weight_hh"])


class FakeStrategy:
    """The two collectives UnitarityMonitor uses, as rank 1 of two processes would see them."""

    def __init__(self, rank0_weights: dict[str, torch.Tensor]) -> None:
        self.rank0_weights = rank0_weights
        self.root_device = torch.device("cpu")

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        assert src == 0
        (match,) = [W for W in self.rank0_weights.values() if W.shape == tensor.shape]
        return match.clone()

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        assert reduce_op == "max"
        return tensor


class FakeLogger:
    def __init__(self) -> None:
        self.logged = {}

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.update(metrics)


class FakeTrainer:
    def __init__(self, strategy: FakeStrategy) -> None:
        self.strategy, self.world_size, self.global_step = strategy, 2, 0
        self.loggers = [FakeLogger()]
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=0))


class FakeModule:
    def __init__(self, model: nn.Module) -> None:
        self.model = model


@pytest.mark.parametrize("offset", [0.0, 2.0**-20, -0.5])
def test_rank_divergence_is_the_largest_difference_from_rank0(offset):
    """The callback would see ranks that disagree: it logs |W_rank − W_rank0|max, exactly."""
    model = projunn.UnitaryRNN(3, 8, "relu", "haar")
    rank0 = {k: W.detach().clone() for k, W in unitary_matrices(model).items()}
    rank0["weight_hh"][2, 5] += offset
    trainer = FakeTrainer(FakeStrategy(rank0))
    UnitarityMonitor().on_train_batch_end(trainer, FakeModule(model), None, None, 0)
    expected = abs((model.weight_hh[2, 5] - rank0["weight_hh"][2, 5]).item())
    assert trainer.loggers[0].logged["unitarity/rank_divergence"] == expected
    assert (expected > 0) == (offset != 0)


# ---------------------------------------------------------------------------------------------
# 3. preemption on SLURM: the submitit launcher requeues, the requeued job resumes
# ---------------------------------------------------------------------------------------------
def test_slurm_launcher_requeues_and_a_requeued_job_resumes(compose_cfg, tmp_path):
    from hydra.utils import get_class

    cfg = compose_cfg("hydra/launcher=slurm", *FAST)
    launcher = cfg.hydra.launcher
    cls = get_class(launcher._target_)
    assert cls.__name__ == "SlurmLauncher" and cls.__module__.startswith("hydra_plugins.hydra_submitit_launcher")
    assert callable(getattr(cls, "checkpoint", None))  # submitit calls it on preemption/timeout to resubmit
    assert launcher.max_num_timeout > 0 and launcher.additional_parameters.requeue is True
    assert cfg.resume is True and cfg.ckpt_path is None
    # The requeued job runs in the same run directory and finds last.ckpt there.
    assert checkpoint_to_resume(tmp_path, cfg.resume, cfg.ckpt_path) is None
    torch.save({"global_step": 3}, tmp_path / "last.ckpt")
    assert checkpoint_to_resume(tmp_path, cfg.resume, cfg.ckpt_path) == str(tmp_path / "last.ckpt")
    assert checkpoint_to_resume(tmp_path, False, cfg.ckpt_path) is None


# ---------------------------------------------------------------------------------------------
# 4. NaN/Inf loss: stop with the step, keep the last good checkpoint, exit 1; W never NaN
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # SGD at lr=10 on an LSTM's readout diverges geometrically: the loss is inf at step 10
    # (deterministic: CPU, seed 0), after the checkpoints at steps 4 and 8.
    result = run_train(
        "task=adding",
        "task.T=6",
        "task.batch_size=8",
        "model=lstm",
        "model.hidden_size=16",
        "optim=rmsprop",
        "optim.base=SGD",
        "optim.lr=10",
        "checkpoint_every=4",
        "trainer.max_steps=40",
        run_dir=tmp_path,
    )
    line = assert_one_error_line(result, "training loss is ", " at step ")
    match = re.search(r"training loss is (nan|inf|-inf) at step (\d+)", line)
    assert match, line
    step = int(match.group(2))
    assert 4 <= step < 40
    checkpoint = load_checkpoint(tmp_path / "last.ckpt")
    assert 0 < checkpoint["global_step"] <= step and checkpoint["global_step"] % 4 == 0
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    losses = train_rows(read_metrics(tmp_path))
    assert sorted(losses) == list(range(step)) and all(math.isfinite(float(r["train/loss"])) for r in losses.values())
    assert "NonFiniteLossError" in (tmp_path / "error.log").read_text()


@pytest.mark.integration
def test_huge_learning_rate_never_makes_the_unitary_matrix_non_finite(compose_cfg, tmp_path):
    """projUNN-T at lr=10 (the unitary matrix too): the readout blows up and the run stops, but W
    is finite and unitary after every step and in the checkpoint."""
    cfg = compose_cfg(
        "task=adding",
        "task.T=6",
        "task.batch_size=8",
        "model.hidden_size=16",
        "optim=projunn_t",
        "optim.base=SGD",
        "optim.lr=10",
        *FAST,
        "checkpoint_every=1",
        "trainer.max_steps=40",
        *add("record", RecordWeights),
    )
    with pytest.raises(Exception) as info:
        train.train(cfg)
    assert isinstance(user_error(info.value), NonFiniteLossError)
    seen = [step["weights"]["rnn.weight_hh"] for step in torch.load(tmp_path / "rank0.pt")["steps"]]
    assert len(seen) >= 2
    checkpoint = load_checkpoint(tmp_path / "last.ckpt")
    for W in [*seen, checkpoint["state_dict"]["model.rnn.weight_hh"]]:
        assert torch.isfinite(W).all() and projunn.unitarity_error(W).item() <= 1e-5

"""Reliability of the experiment framework: DDP processes hold bit-identical unitary weights; a NaN/Inf
loss stops the run and keeps its last good checkpoint. (A run stopped by a kill, a crash or a preemption
and resumed: test_resume.py; bad input, which fails with one line and a non-zero exit: test_cli.py.)

Runs are real ``python train.py`` processes where the process is the point (several ranks, an exit
status); the rest runs in-process. Every test that trains is marked ``integration``.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import projunn
import train
from tests.helpers.hooks import RecordWeights, add
from tests.helpers.records import load_checkpoint, read_metrics, train_rows
from tests.helpers.runs import (
    FAST,
    assert_one_error_line,
    run_train,
)
from training.callbacks import UnitarityMonitor, unitary_matrices
from training.lightning_module import NonFiniteLossError
from training.reporting import user_error

# ---------------------------------------------------------------------------------------------
# several processes: DDP on the CPU, identical unitary weights on every rank
# ---------------------------------------------------------------------------------------------
# Every rank saves its unitary matrices after each step and a digest of its batch (tests/helpers/hooks.py's
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
# NaN/Inf loss: stop with the step, keep the last good checkpoint, exit 1; W never NaN
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

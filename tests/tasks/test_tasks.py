"""The generated tasks: data layout, baselines, determinism, and mid-epoch restart of the data order;
the sequence models' initialisations and readouts; the task interface (tasks/data.py)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as L
import torch

from tasks.adding import Adding
from tasks.copy_memory import BLANK, MARKER, CopyMemory
from tasks.data import ShuffledBatches, StreamOrder, Task, missing_members


def first_batches(task, n):
    loader = task.train_dataloader()
    return [batch for _, batch in zip(range(n), loader)]


def test_copy_batch_layout():
    task = CopyMemory(T=7, K=3, batch_size=5)
    ((x, y),) = first_batches(task, 1)
    assert x.shape == (5, 7 + 6, 10) and y.shape == (5, 7 + 6)
    tokens = x.argmax(-1)
    assert torch.equal(x.sum(-1), torch.ones(5, 13))  # one-hot
    symbols = tokens[:, :3]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    # T = 7 blanks, then the marker at the first recall step, then K - 1 blanks (copy_task.py, expRNN)
    assert (tokens[:, 3 : 3 + 7] == BLANK).all() and (tokens[:, 3 + 7] == MARKER).all()
    assert (tokens[:, -2:] == BLANK).all()
    assert (y[:, :-3] == BLANK).all() and torch.equal(y[:, -3:], symbols)
    assert (tokens == MARKER).nonzero()[:, 1].eq(13 - 3).all()  # the marker's step is the first with a symbol target


def test_copy_memoryless_baseline_is_the_loss_of_blank_then_uniform():
    task = CopyMemory(T=30, K=10, batch_size=64)
    assert task.baseline == pytest.approx(10 * math.log(8) / (30 + 20))
    x, y = task.make_batch(torch.Generator().manual_seed(0))
    logits = torch.full((64, 50, 9), -1e9)
    logits[:, :-10, BLANK] = 0  # certain blank while waiting
    logits[:, -10:, 1:] = 0  # uniform over the 8 symbols when recalling
    loss, metrics = task.objective(logits, y)
    assert loss.item() == pytest.approx(task.baseline, rel=1e-6)


def test_adding_targets_and_baseline():
    task = Adding(T=10, batch_size=2000)
    x, y = task.make_batch(torch.Generator().manual_seed(0))
    values, markers = x[..., 0], x[..., 1]
    assert torch.equal(markers.sum(1), torch.full((2000,), 2.0))
    assert (markers[:, :4].sum(1) == 1).all() and (markers[:, 4:].sum(1) == 1).all()  # ⌊(T − 1)/2⌋ = 4
    assert markers[:, 3].any() and markers[:, 4].any()  # both sides of the split are reached
    assert torch.allclose(y[:, 0], (values * markers).sum(1))
    # Predicting the mean (1) costs Var(U1 + U2) = 1/6: the baseline.
    loss, _ = task.objective(torch.ones_like(y), y)
    assert loss.item() == pytest.approx(Adding.baseline, abs=0.02)


def test_generated_data_is_deterministic_and_never_repeats():
    a = first_batches(CopyMemory(T=5, batch_size=4, seed=1), 3)
    b = first_batches(CopyMemory(T=5, batch_size=4, seed=1), 3)
    c = first_batches(CopyMemory(T=5, batch_size=4, seed=2), 3)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert not torch.equal(a[0][0], a[1][0])


def test_validation_and_test_sets_are_fixed_and_distinct():
    task = CopyMemory(T=5, batch_size=4, eval_batches=2)
    val1, val2 = list(task.val_dataloader()), list(task.val_dataloader())
    test = list(task.test_dataloader())
    assert len(val1) == 2 and all(torch.equal(p[0], q[0]) for p, q in zip(val1, val2))
    assert not torch.equal(val1[0][0], test[0][0])


@pytest.mark.parametrize("order", [StreamOrder(6, seed=0), ShuffledBatches(25, 4, seed=0)], ids=["stream", "shuffled"])
def test_order_restarts_mid_epoch(order):
    order.set_epoch(2)
    full = list(order)
    assert len(full) == len(order) == 6
    order.skip = 4
    assert [torch.as_tensor(i).tolist() for i in order] == [torch.as_tensor(i).tolist() for i in full[4:]]
    assert len(list(order)) == 6  # the skip applies once
    order.set_epoch(3)
    assert [torch.as_tensor(i).tolist() for i in order] != [torch.as_tensor(i).tolist() for i in full]


def test_shuffled_batches_cover_the_dataset_once_per_epoch():
    order = ShuffledBatches(26, 5, seed=3)
    batches = torch.cat(list(order))
    assert len(batches) == 25 and len(set(batches.tolist())) == 25
    with pytest.raises(ValueError, match="batch size 30 is larger than the dataset"):
        ShuffledBatches(26, 30, seed=0)


def test_loader_state_records_trained_batches_not_read_ahead():
    task = CopyMemory(T=5, batch_size=4)
    loader = task.train_dataloader()
    iterator = iter(loader)
    next(iterator), next(iterator)  # read ahead: no trainer, so nothing is trained
    assert loader.state_dict() == {"epoch": 0, "position": 0}
    loader.load_state_dict({"epoch": 1, "position": 3})
    resumed = next(iter(loader))
    order = StreamOrder(task.steps_per_epoch, task.seed)
    order.set_epoch(1)
    assert torch.equal(resumed[0], task.train_dataloader().dataset[list(order)[3]][0])


@pytest.mark.parametrize("cell,complex_", [("unitary", False), ("unitary", True), ("lstm", False), ("rnn", False)])
def test_xavier_input_map_and_readouts(cell, complex_):
    # The authors' copy/adding scripts: Glorot-uniform input map; readout Kaiming-normal (copy)
    # or Glorot-uniform with gain 1/2 (adding). Checked against the formulas, per cell.
    from tasks.sequence_models import SequenceModel

    torch.manual_seed(0)
    kwargs = {"cell": cell, "complex": complex_, "nonlinearity": "modrelu"} if cell == "unitary" else {"cell": cell}
    model = SequenceModel(40, 30, 200, input_init="xavier", readout_init="xavier", readout_gain=0.5, **kwargs)
    w = model.rnn.weight_ih if cell == "unitary" else model.rnn.weight_ih_l0
    bound = math.sqrt(6 / (40 + w.shape[0]))
    parts = torch.view_as_real(w) if w.is_complex() else w
    assert parts.abs().max() <= bound / (math.sqrt(2) if w.is_complex() else 1)
    assert w.abs().pow(2).mean().item() == pytest.approx(bound**2 / 3, rel=0.05)  # E|w|² of the real Glorot
    r = model.readout.weight
    r_bound = 0.5 * math.sqrt(6 / (r.shape[1] + 30))
    assert r.abs().max() <= r_bound and r.pow(2).mean().item() == pytest.approx(r_bound**2 / 3, rel=0.1)
    assert torch.equal(model.readout.bias, torch.zeros(30))

    model = SequenceModel(40, 30, 200, readout_init="kaiming", **kwargs)
    r = model.readout.weight
    assert r.pow(2).mean().item() == pytest.approx(2 / r.shape[1], rel=0.1) and torch.equal(
        model.readout.bias, torch.zeros(30)
    )


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_scornn_initialisations(complex_):
    # scoRNN's cell: input weights U(-0.01, 0.01), modReLU threshold 0; its TensorFlow readout Glorot with zero bias
    from tasks.sequence_models import SequenceModel

    torch.manual_seed(0)
    model = SequenceModel(1, 10, 170, nonlinearity="modrelu", complex=complex_, input_init="uniform", bias_init="zero")
    w = model.rnn.weight_ih
    parts = torch.view_as_real(w) if w.is_complex() else w
    assert parts.abs().max() <= 0.01 and parts.abs().max() > 0.009 and parts.mean().abs() < 0.002
    assert torch.equal(model.rnn.activation.bias, torch.zeros(170))
    default = SequenceModel(1, 10, 170, nonlinearity="modrelu")
    assert default.rnn.activation.bias.abs().max() <= 0.01 and default.rnn.activation.bias.abs().max() > 0.005
    assert default.rnn.weight_ih.std().item() == pytest.approx(math.sqrt(2), rel=0.15)  # Kaiming-normal, fan_in 1


def test_unknown_input_or_readout_init_is_named():
    from tasks.sequence_models import SequenceModel

    with pytest.raises(ValueError, match="'glorot'"):
        SequenceModel(2, 1, 8, input_init="glorot")
    with pytest.raises(ValueError, match="'he'"):
        SequenceModel(2, 1, 8, readout_init="he")
    with pytest.raises(ValueError, match="Unknown bias_init 'one'"):
        SequenceModel(2, 1, 8, bias_init="one")


def test_the_readout_of_every_step_equals_a_linear_layer():
    # The unitary RNN's time-major states are read out with their gradient taken in blocks of steps
    # (tasks.sequence_models._ReadoutOfEveryStep): logits and every gradient equal nn.Linear's on the
    # same states, in float64, over a length that leaves a partial last block.
    from tasks.sequence_models import SequenceModel

    torch.manual_seed(0)
    model = SequenceModel(10, 9, 12, cell="unitary", readout="all", init="haar").double()
    x, y = torch.randn(3, 70, 10, dtype=torch.float64), torch.randint(0, 9, (3 * 70,))
    logits = model(x)
    nodes, seen = [logits.grad_fn], set()
    while nodes:  # the blocked node is in the graph (else this test compares nn.Linear with itself)
        node = nodes.pop()
        if node is not None and node not in seen:
            seen.add(node)
            nodes += [next_node for next_node, _ in node.next_functions]
    assert any("ReadoutOfEveryStep" in type(node).__name__ for node in seen)
    reference = model.readout(model.rnn(x)[0].contiguous())
    assert torch.allclose(logits, reference, rtol=0, atol=1e-13)
    parameters = list(model.parameters())
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y), parameters)
    expected = torch.autograd.grad(torch.nn.functional.cross_entropy(reference.flatten(0, 1), y), parameters)
    for (name, _), got, want in zip(model.named_parameters(), grads, expected):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-13), name


# ---------------------------------------------------------------------------------------------
# the task interface (tasks/data.py): what the framework reads of a task, and a task that lacks a member
# ---------------------------------------------------------------------------------------------
def test_the_interface_names_every_member_the_framework_reads():
    from typing import _get_protocol_attrs  # the Protocol's members, as isinstance() checks them

    assert set(missing_members(object())) == set(_get_protocol_attrs(Task))


class NoObjective(L.LightningDataModule):
    """A task that forgot its objective."""

    baseline, eval_stages = None, ("val",)

    def __init__(self, **settings) -> None:
        super().__init__()

    @property
    def model_kwargs(self) -> dict:
        return {"input_size": 2, "output_size": 1, "readout": "last"}


def test_a_task_without_an_objective_is_refused_by_name(compose_cfg):
    from train import train

    cfg = compose_cfg("task=adding", f"task._target_={__name__}.NoObjective", "model.hidden_size=4")
    with pytest.raises(ValueError, match=r"^task: NoObjective lacks objective of the task interface"):
        train(cfg)

"""training/init_noise.py: the chaos control's move of the initial weights (``init_noise``): every parameter
moved by the size asked, declared unitary matrices kept unitary, and nothing else of the run touched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import projunn
from training.init_noise import perturb_initial_weights


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, bias=True, dtype=torch.float64)
    projunn.orthogonal_(conv)  # a wide (3 × 36) matrix, declared through a view of the kernel
    return {
        "rnn": nn.Sequential(projunn.UnitaryRNN(2, 16, dtype=torch.float64), nn.Linear(16, 3, dtype=torch.float64)),
        "complex rnn": projunn.UnitaryRNN(2, 8, complex=True, dtype=torch.float64),
        "orthogonal conv": projunn.OrthogonalConv2d(3, 5, 6, bias=True, dtype=torch.float64),
        "declared kernel": conv,
        "expRNN": projunn.parametrize(projunn.UnitaryRNN(2, 8, dtype=torch.float64), "matrix_exp"),
    }


@pytest.mark.parametrize("name", list(models()))
def test_every_weight_moves_by_the_size_asked_and_unitary_ones_stay_unitary(name):
    model = models()[name]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = torch.random.get_rng_state()
    largest = perturb_initial_weights(model, 1e-6, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's own draws are untouched
    for n, p in model.named_parameters():
        change = (p.detach() - before[n]).abs().max().item()
        assert 0.5e-6 <= change <= 1.5e-6, (n, change)
    assert 0.5e-6 <= largest <= 1.5e-6
    for n, error in projunn.unitarity_errors(model).items():
        assert float(error) < 1e-12, (n, float(error))


def test_the_same_seed_moves_the_same_way_and_another_does_not():
    a, b, c = (models()["rnn"] for _ in range(3))
    for model, seed in ((a, 1), (b, 1), (c, 2)):
        perturb_initial_weights(model, 1e-6, seed)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight_hh, c[0].weight_hh)

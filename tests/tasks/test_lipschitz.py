"""The 1-Lipschitz MNIST network (issue 21): the orthogonal MLP is 1-Lipschitz, the certified accuracy
is what its definition says, and the preset trains with projUNN and with torch's orthogonal
parametrization on generated MNIST. (MaxMin: test_vision.py; the report's row of certified accuracies:
tests/scripts/test_report.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import projunn
from tasks.lipschitz import certified_accuracy, lipschitz_margin_classification, logit_margin
from tasks.vision_models import OrthogonalMLP
from tests.helpers.records import read_metrics
from tests.helpers.runs import FAST
from train import train


@pytest.mark.parametrize("hidden_size", [1024 // 64, 6], ids=["wide-first-layer", "tall-readout"])
def test_orthogonal_mlp_is_1_lipschitz(hidden_size):
    """Every weight has orthonormal columns or rows; ‖f(x) − f(y)‖ ≤ ‖x − y‖ on random pairs, with
    equality up to the readout (the hidden layers are isometries when the first layer is tall)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the weights made orthogonal in double precision
    try:
        model = OrthogonalMLP(image_size=4, hidden_size=hidden_size, hidden_layers=2)
    finally:
        torch.set_default_dtype(default)
    shapes = [tuple(W.shape) for _, W in projunn.named_unitary_parameters(model)]
    assert shapes == [(hidden_size, 16), (hidden_size, hidden_size), (10, hidden_size)]
    for _, W in projunn.named_unitary_parameters(model):
        assert projunn.unitarity_error(W) < 1e-12
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.normal_()  # biases do not change the Lipschitz constant
        x, y = torch.rand(2, 1000, 1, 4, 4, dtype=torch.float64)
        assert ((model(x) - model(y)).norm(dim=-1) <= (x - y).flatten(1).norm(dim=-1) * (1 + 1e-12)).all()
        features = model.activation(model.layers[0](x.flatten(1)) - model.layers[0].bias)
        if hidden_size >= 16:  # a tall first layer and MaxMin: an isometry
            assert torch.allclose(features.norm(dim=-1), x.flatten(1).norm(dim=-1))


def test_orthogonal_mlp_invalid_arguments():
    with pytest.raises(ValueError, match="hidden_size must be even, got 7"):
        OrthogonalMLP(hidden_size=7)
    with pytest.raises(ValueError, match="hidden_layers must be an integer >= 1, got 0"):
        OrthogonalMLP(hidden_layers=0)


def test_certified_accuracy_by_hand():
    logits = torch.tensor(
        [
            [3.0, 1.0, 0.0],  # class 0, margin 2.0: certified up to 2 / √2 = 1.414
            [0.0, 1.0, 0.5],  # class 1, margin 0.5: up to 0.354
            [2.0, 0.0, 2.5],  # label 0, wrong (margin −0.5)
            [0.0, 0.0, 1.0],  # class 2, margin 1.0: up to 0.707
        ]
    )
    targets = torch.tensor([0, 1, 0, 2])
    assert logit_margin(logits, targets).tolist() == [2.0, 0.5, -0.5, 1.0]
    expected = {0.0: 3 / 4, 0.3: 3 / 4, 0.5: 2 / 4, 1.0: 1 / 4, 1.4: 1 / 4, 1.42: 0.0, 1.58: 0.0}
    for radius, value in expected.items():
        assert certified_accuracy(logits, targets, radius).item() == pytest.approx(value), radius
    loss, metrics = lipschitz_margin_classification(logits, targets, (0.5, 1.58), margin=0.5, temperature=0.25)
    shifted = logits + math.sqrt(2) * 0.5 * (1 - F.one_hot(targets, 3))
    assert loss.item() == pytest.approx(F.cross_entropy(shifted / 0.25, targets).item())
    assert {k: v.item() for k, v in metrics.items()} == {"acc": 0.75, "cert_acc_0.5": 0.5, "cert_acc_1.58": 0.0}
    with pytest.raises(ValueError, match="Invalid radius: -1"):
        certified_accuracy(logits, targets, -1)


@pytest.mark.integration
@pytest.mark.parametrize("optim", ["projunn_t", "projunn_d", "torch_orthogonal"])
def test_lipschitz_preset_trains_and_logs_certified_accuracy(compose_cfg, tmp_path, mnist, optim):
    root, _ = mnist
    cfg = compose_cfg(
        "experiment=mnist_lipschitz",
        f"optim={optim}",
        "model.hidden_size=16",
        f"data_root={root}",
        "task.batch_size=4",
        "task.eval_batch_size=3",
        "unitarity_every=1",
        *FAST,
    )
    assert cfg.task.standardize is False and list(cfg.task.certified_radii) == [0.5, 1.0, 1.58]
    metric = train(cfg)
    assert metric is not None and math.isfinite(metric)
    rows = read_metrics(tmp_path)
    columns = set().union(*rows)
    layers = [f"unitarity/layers.{i}.weight" for i in range(4)]  # (16, 784) wide, 16 × 16 twice, (10, 16) wide
    expected = {f"{stage}/cert_acc_{r}" for stage in ("val", "test") for r in (0.5, 1.0, 1.58)}
    assert expected | set(layers) <= columns
    errors = [float(r[name]) for r in rows for name in layers if r.get(name)]
    assert errors and max(errors) < 1e-5
    for row in rows:
        if row.get("test/cert_acc_0.5"):
            accuracies = [float(row[f"test/{m}"]) for m in ("acc", "cert_acc_0.5", "cert_acc_1.0", "cert_acc_1.58")]
            assert accuracies == sorted(accuracies, reverse=True)  # certified at a larger radius: fewer


def test_orthogonal_mlp_fits_image_tasks_only(compose_cfg):
    from training.schema import check_model_fits_task

    cfg = compose_cfg("task=copy", "model=orthogonal_mlp")
    with pytest.raises(ValueError, match=r"orthogonal_mlp does not fit task=copy; models that do: lstm, rnn, urnn"):
        check_model_fits_task(cfg.model, {"input_size": 9, "output_size": 9, "readout": "all"})
    cfg = compose_cfg("task=mnist", "model=orthogonal_mlp")
    check_model_fits_task(cfg.model, {"in_channels": 1, "num_classes": 10, "image_size": 28})

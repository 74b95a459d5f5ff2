"""Tests of the vision models (tasks/vision.py) on generated CIFAR- and MNIST-shaped data."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import projunn
from projunn.conv import OrthogonalConv2d
from tasks.vision import DeepCNN, MaxMin, ResNet9

SMALL = (8, 16, 32, 64)


def count(model: nn.Module) -> int:
    """Number of real numbers in the parameters (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def resnet9_layers(in_channels: int, channels, size: int):
    """(c_in, c_out, image side) of ResNet9's eight convolutions, in order."""
    c0, c1, c2, c3 = channels
    return [
        (in_channels, c0, size),
        (c0, c1, size),
        (c1, c1, size // 2),
        (c1, c1, size // 2),
        (c1, c2, size // 2),
        (c2, c3, size // 4),
        (c3, c3, size // 8),
        (c3, c3, size // 8),
    ]


@pytest.mark.parametrize("orthogonal", [False, True])
def test_resnet9_forward_shapes(orthogonal):
    torch.manual_seed(0)
    model = ResNet9(num_classes=10, orthogonal=orthogonal, channels=SMALL)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, OrthogonalConv2d))]
    assert len(convs) == 8
    assert all(isinstance(m, OrthogonalConv2d) == orthogonal for m in convs)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (not orthogonal)
    if orthogonal:  # each convolution at the image size of its stage
        expected = [(c_in, c_out, (s, s)) for c_in, c_out, s in resnet9_layers(3, SMALL, 32)]
        assert [(m.in_channels, m.out_channels, m.image_size) for m in convs] == expected


def test_resnet9_other_image_size():
    model = ResNet9(orthogonal=True, image_size=16, channels=SMALL, num_classes=7)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


@pytest.mark.parametrize("orthogonal", [False, True])
def test_deepcnn_forward_shapes(orthogonal):
    torch.manual_seed(0)
    model = DeepCNN(depth=3, channels=8, orthogonal=orthogonal)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert len(model.layers) == 3
    assert model.activation_name == ("maxmin" if orthogonal else "relu")


def test_orthogonal_deepcnn_is_an_isometry_at_init():
    """Orthogonal convolutions (zero bias) and MaxMin: activations and their gradients keep their norm."""
    torch.manual_seed(0)
    model = DeepCNN(depth=20, channels=4, orthogonal=True, image_size=8, in_channels=1)
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    features = model.features(x)
    ratio = features.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert (ratio - 1).abs().max() <= 1e-5
    g = torch.randn_like(features)
    (grad,) = torch.autograd.grad(features, x, g)
    # back through the 1 → 4 channel isometry, the gradient keeps at most its norm
    assert grad.norm() <= g.norm() * (1 + 1e-5)
    plain = DeepCNN(depth=20, channels=4, orthogonal=False, image_size=8)
    with torch.no_grad():  # a contrast: default init and ReLU do not keep the norm
        assert abs(plain.features(x).norm() / x.norm() - 1) > 0.1


@pytest.mark.parametrize("projector", ["T", "D"])
def test_orthogonal_resnet9_trains_with_projunn(projector):
    torch.manual_seed(0)
    model = ResNet9(orthogonal=True, channels=(4, 8, 8, 16))
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    unitary = projunn.unitary_parameters(model)
    assert len(unitary) == 16  # weight and weight_real of 8 convolutions
    start = [p.detach().clone() for p in unitary]
    opt = projunn.ProjUNN(
        projunn.param_groups(model, unitary_lr=1e-3), "RMSprop", lr=1e-3, projector=projector, rank=1
    )
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert all((p - q).abs().max() > 0 for p, q in zip(unitary, start))
    for p in unitary:
        assert projunn.unitarity_error(p).max() <= 1e-4


def test_parameter_counts():
    standard = ResNet9(orthogonal=False)  # Myrtle's ResNet9: 6.57M parameters
    expected = sum(9 * c_in * c_out + 2 * c_out for c_in, c_out, _ in resnet9_layers(3, (64, 128, 256, 512), 32))
    assert count(standard) == expected + 512 * 10 == 6_573_120
    orthogonal = ResNet9(orthogonal=True, channels=SMALL, init="identity")
    # an orthogonal layer stores as many reals as an unconstrained full-width kernel,
    # H·W·C² with C = max(c_in, c_out) (Note [Hermitian symmetry of a real convolution]), plus a bias
    expected = sum(s * s * max(c_in, c_out) ** 2 + c_out for c_in, c_out, s in resnet9_layers(3, SMALL, 32))
    assert count(orthogonal) == expected + SMALL[-1] * 10
    small_standard = ResNet9(orthogonal=False, channels=SMALL)
    assert count(orthogonal) > 10 * count(small_standard)  # full width: H·W/9 times a 3×3 kernel, and more
    deep = DeepCNN(depth=4, channels=8, orthogonal=True, init="identity")
    assert count(deep) == 4 * (28 * 28 * 64 + 8) + (8 * 28 * 28 + 1) * 10
    deep_standard = DeepCNN(depth=4, channels=8, orthogonal=False)
    assert count(deep_standard) == (9 * 8 + 8) + 3 * (9 * 64 + 8) + (8 * 28 * 28 + 1) * 10


def test_maxmin_is_a_norm_preserving_permutation():
    x = torch.randn(3, 6, 5, 5)
    y = MaxMin()(x)
    assert torch.allclose(y.norm(), x.norm())
    assert torch.equal(y.sort(dim=1).values, x.sort(dim=1).values)
    assert (y[:, :3] >= y[:, 3:]).all()
    with pytest.raises(ValueError, match=r"MaxMin needs an even number of channels, got shape \(1, 3, 2, 2\)"):
        MaxMin()(torch.randn(1, 3, 2, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=4), "image_size must be an integer >= 8, got 4"),
        (dict(channels=(8, 16, 32)), r"channels must hold 4 widths .* got \(8, 16, 32\)"),
        (dict(channels=(8, 16, 0, 64)), "each width in channels must be an integer >= 1, got 0"),
        (dict(activation="gelu"), "Unknown activation 'gelu'; expected one of 'relu', 'maxmin'"),
    ],
)
def test_resnet9_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet9(**kwargs)


def test_deepcnn_invalid_arguments():
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        DeepCNN(depth=0)
    with pytest.raises(ValueError, match="Unknown activation 'tanh'"):
        DeepCNN(depth=2, activation="tanh")

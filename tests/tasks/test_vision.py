"""Tests of the vision models (tasks/vision_models.py) on generated CIFAR- and MNIST-shaped data, and of
MaxMin, the norm-preserving activation (1-Lipschitz)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import projunn
from projunn.conv import OrthogonalConv2d
from tasks.vision_models import DeepCNN, MaxMin, ResNet9

SMALL = (8, 16, 32)


def count(model: nn.Module) -> int:
    """Number of real numbers in the parameters (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def resnet9_layers(in_channels: int, channels, size: int):
    """(c_in, c_out, image side) of the eight convolutions of the projUNN authors' ResNet9, in order
    (facebookresearch/projUNN, projunn/models.py: conv1, conv2 + pool, res1 ×2, conv3 + pool, conv4, res2 ×2)."""
    c0, c1, c2 = channels
    return [
        (in_channels, c0, size),
        (c0, c1, size),
        (c1, c1, size // 2),
        (c1, c1, size // 2),
        (c1, c2, size // 2),
        (c2, c2, size // 4),
        (c2, c2, size // 4),
        (c2, c2, size // 4),
    ]


@pytest.mark.parametrize("orthogonal", [False, True])
def test_resnet9_is_the_authors_topology(orthogonal):
    torch.manual_seed(0)
    model = ResNet9(num_classes=10, orthogonal=orthogonal, channels=SMALL)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, OrthogonalConv2d))]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(i, o) for i, o, _ in resnet9_layers(3, SMALL, 32)]
    assert all(isinstance(m, OrthogonalConv2d) == orthogonal and m.bias is None for m in convs)
    if orthogonal:  # each convolution at the image size of its stage, channels grown by repetition
        assert [m.image_size for m in convs] == [(s, s) for _, _, s in resnet9_layers(3, SMALL, 32)]
        assert all(m.channel_growth == "repeat" for m in convs)
    else:
        assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in convs)
    # every convolution followed by BatchNorm and ReLU; two 2×2 max pools; 2×2 average pool; a linear head with bias
    for block in (model.conv1, model.conv2, *model.res1, model.conv3, model.conv4, *model.res2):
        assert [type(m) for m in block[1:3]] == [nn.BatchNorm2d, nn.ReLU]
    assert [len(b) for b in (model.conv1, model.conv2, model.conv3, model.conv4)] == [3, 4, 4, 3]
    assert isinstance(model.conv2[3], nn.MaxPool2d) and isinstance(model.conv3[3], nn.MaxPool2d)
    assert model.pool.output_size == 2 and model.classifier.in_features == 4 * SMALL[-1]
    assert model.classifier.bias is not None


def test_resnet9_residual_sums_have_no_activation_after_them():
    model = ResNet9(channels=SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.conv2(model.conv1(x))
        h = h + model.res1(h)
        h = model.conv4(model.conv3(h))
        h = h + model.res2(h)
        expected = model.classifier(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))
        assert torch.allclose(model(x), expected)


def test_orthogonal_resnet9_starts_at_the_identity():
    # the authors' init: every frequency matrix the identity, so the first convolution repeats the
    # 3 input channels (Note [channel growth]; scaled by 1/sqrt(copies) to stay an isometry)
    model = ResNet9(orthogonal=True, channels=SMALL)
    for conv in (m for m in model.modules() if isinstance(m, OrthogonalConv2d)):
        for W in (conv.weight, conv.weight_real):
            assert torch.equal(W, torch.eye(W.shape[-1], dtype=W.dtype).expand_as(W))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float32)
    conv = model.conv1[0]
    copies = torch.bincount(torch.arange(SMALL[0]) % 3)
    expected = x[:, torch.arange(SMALL[0]) % 3] / copies[torch.arange(SMALL[0]) % 3].float().sqrt()[:, None, None]
    assert torch.allclose(conv(x), expected, atol=1e-6)


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
    model = ResNet9(orthogonal=True, channels=(4, 8, 8), init="haar")
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    unitary = projunn.unitary_parameters(model)
    assert len(unitary) == 16  # weight and weight_real of 8 convolutions
    start = [p.detach().clone() for p in unitary]
    opt = projunn.ProjUNN(projunn.param_groups(model, unitary_lr=1e-3), "RMSprop", lr=1e-3, projector=projector, rank=1)
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
    standard = ResNet9(orthogonal=False)  # the authors' ResNet9 with 3×3 convolutions: 2.45M parameters
    layers = resnet9_layers(3, (64, 128, 256), 32)
    expected = sum(9 * c_in * c_out + 2 * c_out for c_in, c_out, _ in layers)  # convolution + BatchNorm
    assert count(standard) == expected + 1024 * 10 + 10 == 2_447_946
    orthogonal = ResNet9(orthogonal=True, channels=SMALL)
    # an orthogonal layer stores as many reals as an unconstrained full-width kernel,
    # H·W·C² with C = max(c_in, c_out) (Note [Hermitian symmetry of a real convolution])
    expected = sum(s * s * max(c_in, c_out) ** 2 + 2 * c_out for c_in, c_out, s in resnet9_layers(3, SMALL, 32))
    assert count(orthogonal) == expected + 4 * SMALL[-1] * 10 + 10
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
        (dict(image_size=2), "image_size must be an integer >= 4, got 2"),
        (dict(channels=(8, 16, 32, 64)), r"channels must hold 3 widths .* got \(8, 16, 32, 64\)"),
        (dict(channels=(8, 0, 64)), "each width in channels must be an integer >= 1, got 0"),
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


def test_maxmin_is_norm_preserving_and_1_lipschitz():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 500, 64, dtype=torch.float64, generator=g)
    f = MaxMin(dim=-1)
    assert torch.allclose(f(x).norm(dim=-1), x.norm(dim=-1), rtol=1e-14)
    assert ((f(x) - f(y)).norm(dim=-1) <= (x - y).norm(dim=-1) * (1 + 1e-14)).all()
    close = x + 1e-3 * torch.randn(x.shape, dtype=x.dtype, generator=g)  # pairs that swap order in some groups
    assert ((f(x) - f(close)).norm(dim=-1) <= (x - close).norm(dim=-1) * (1 + 1e-14)).all()

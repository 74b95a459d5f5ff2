"""Models for the vision tasks: ResNet9 (CIFAR10), a deep plain CNN (MNIST depth study) and an
orthogonal MLP (a 1-Lipschitz network, MNIST with certified robustness).

Plain ``torch.nn`` modules; the Lightning wrappers live elsewhere. Each model comes in two
variants: ``orthogonal=True`` builds every convolution as a full-width orthogonal
convolution (``projunn.conv.OrthogonalConv2d``, whose Fourier-domain matrices
``projunn.param_groups`` puts in the unitary group), ``orthogonal=False`` uses ordinary
3×3 ``nn.Conv2d`` layers.

Norm behaviour of the orthogonal variants. An orthogonal convolution preserves the norm of
its input (an isometry when channels grow); what can shrink or amplify signals is the rest:

* ``"maxmin"`` (GroupSort with groups of 2, Anil et al. 2019) sorts the channel pairs
  ``(x_c, x_{c + C/2})`` at every pixel: a permutation, so it preserves the norm of the
  activations and of their gradients. With it (and zero biases) a stack of orthogonal
  convolutions is an exact isometry.
* ``"relu"`` is 1-Lipschitz but drops the negative part, about half the energy of a
  zero-mean signal per layer.
* 2×2 max pooling is 1-Lipschitz (it keeps one value of each window); a residual block
  ``x + f(x)`` with 1-Lipschitz ``f`` is 2-Lipschitz.
* BatchNorm rescales by batch statistics and breaks all of the above. The projUNN authors'
  ResNet9 puts it after every convolution, orthogonal or not (``batch_norm=True``, the default);
  ``batch_norm=False`` leaves it out and gives the convolutions a bias.

The same holds for ``OrthogonalMLP``: linear maps with orthonormal columns (isometries) or rows
(‖W x‖ ≤ ‖x‖), MaxMin between them, biases anywhere: 1-Lipschitz in the L2 norm, so its logit
margins certify its predictions (``tasks.lipschitz``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

import projunn
from projunn.checks import one_of, positive_int
from projunn.conv import OrthogonalConv2d

__all__ = ["MaxMin", "ResNet9", "DeepCNN", "OrthogonalMLP", "orthogonal_linear", "ACTIVATIONS"]


class MaxMin(nn.Module):
    """GroupSort with groups of 2 over the channels: ``[max(a, b), min(a, b)]`` with
    ``a, b`` the first and second halves of dimension ``dim``.

    A permutation of the entries at each position: norm preserving, and its Jacobian is a
    permutation matrix, so gradients keep their norm too. Needs an even number of channels.
    """

    def __init__(self, dim: int = -3) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[self.dim] % 2:
            raise ValueError(f"MaxMin needs an even number of channels, got shape {tuple(x.shape)} (dim {self.dim})")
        a, b = x.chunk(2, dim=self.dim)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=self.dim)


ACTIVATIONS = {"relu": nn.ReLU, "maxmin": MaxMin}


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[one_of("activation", name, ACTIVATIONS)]()


_AT_LEAST_ONE = "an integer >= 1"  # how these models' errors word a positive integer


def _conv(
    in_channels: int, out_channels: int, size: int, orthogonal: bool, bias: bool, init: str, growth: str = "zeros"
) -> nn.Module:
    if orthogonal:
        return OrthogonalConv2d(in_channels, out_channels, size, bias=bias, init=init, channel_growth=growth)
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


class ResNet9(nn.Module):
    """The projUNN authors' ResNet9 (``projunn/models.py`` of facebookresearch/projUNN), the paper's
    CIFAR10 network.

    ``conv(c0)`` → ``conv(c1)`` + pool → ``x + res(x)`` with ``res`` two ``conv(c1)`` →
    ``conv(c2)`` + pool → ``conv(c2)`` → ``x + res(x)`` with two ``conv(c2)`` → adaptive average
    pool to 2×2 → linear (with bias) on the ``4·c2`` features. Each "conv" is convolution →
    BatchNorm → activation; "pool" is a 2×2 max pool; nothing follows a residual sum. With
    ``channels=(c0, c1, c2)`` the image is ``s`` pixels wide in the first two convolutions, then
    ``s//2``, then ``s//4``.

    Args:
        num_classes: number of logits.
        orthogonal: full-width orthogonal convolutions (``OrthogonalConv2d`` at the image size of
            its stage, channels grown by repetition as the authors' layer does, Note [channel
            growth]) instead of 3×3 ``nn.Conv2d`` (padding 1).
        image_size: side ``s`` of the (square) input images, at least 4.
        in_channels: channels of the input images.
        channels: widths ``(c0, c1, c2)``.
        activation: ``"relu"`` (the authors') or ``"maxmin"`` (norm preserving; needs even widths).
        batch_norm: BatchNorm after each convolution (the authors'); without it the convolutions
            carry a bias and the orthogonal network is 1-Lipschitz up to the residual sums and
            ReLU (see the module docstring).
        init: initialiser of the orthogonal convolutions' unitary matrices (the authors':
            ``"identity"``).

    Input ``(B, in_channels, s, s)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        orthogonal: bool = False,
        image_size: int = 32,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256),
        activation: str = "relu",
        batch_norm: bool = True,
        init: str = "identity",
    ) -> None:
        super().__init__()
        positive_int("num_classes", num_classes, expected=_AT_LEAST_ONE)
        positive_int("image_size", image_size, 4)
        positive_int("in_channels", in_channels, expected=_AT_LEAST_ONE)
        if len(channels) != 3:
            raise ValueError(f"channels must hold 3 widths (c0, c1, c2), got {tuple(channels)!r}")
        for c in channels:
            positive_int("each width in channels", c, expected=_AT_LEAST_ONE)
        _activation(activation)  # validate the name early
        self.orthogonal, self.batch_norm = bool(orthogonal), bool(batch_norm)
        c0, c1, c2 = channels
        s = image_size

        def block(c_in: int, c_out: int, size: int, pool: bool = False) -> nn.Sequential:
            conv = _conv(c_in, c_out, size, self.orthogonal, bias=not self.batch_norm, init=init, growth="repeat")
            layers = [conv, nn.BatchNorm2d(c_out)] if self.batch_norm else [conv]
            layers.append(_activation(activation))
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.conv1 = block(in_channels, c0, s)
        self.conv2 = block(c0, c1, s, pool=True)
        self.res1 = nn.Sequential(block(c1, c1, s // 2), block(c1, c1, s // 2))
        self.conv3 = block(c1, c2, s // 2, pool=True)
        self.conv4 = block(c2, c2, s // 4)
        self.res2 = nn.Sequential(block(c2, c2, s // 4), block(c2, c2, s // 4))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(4 * c2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.conv1(x))
        x = x + self.res1(x)
        x = self.conv4(self.conv3(x))
        x = x + self.res2(x)
        return self.classifier(self.pool(x).flatten(1))


class DeepCNN(nn.Module):
    """A plain stack of ``depth`` convolutions, each followed by a nonlinearity, then a linear
    classifier on the flattened feature map: the projUNN paper's depth study on MNIST.

    Args:
        depth: number of convolution layers.
        channels: width of every layer (the first maps ``in_channels`` to it).
        orthogonal: full-width orthogonal convolutions (``OrthogonalConv2d``, bias zero at
            initialisation) instead of ``nn.Conv2d(3×3, padding=1)`` with PyTorch's default
            initialisation (both with a bias).
        image_size: side of the square input images.
        in_channels: channels of the input images.
        num_classes: number of logits.
        activation: ``"relu"`` or ``"maxmin"``; ``None`` picks ``"maxmin"`` for the orthogonal
            network (then ``features`` is an exact isometry at initialisation, so activations
            and gradients keep their norm through any depth) and ``"relu"`` otherwise.
        init: initialiser of the orthogonal convolutions.

    Input ``(B, in_channels, s, s)``, output ``(B, num_classes)``. ``layers`` holds the
    convolutions, first to last.
    """

    def __init__(
        self,
        depth: int = 100,
        channels: int = 32,
        orthogonal: bool = False,
        image_size: int = 28,
        in_channels: int = 1,
        num_classes: int = 10,
        activation: str | None = None,
        init: str = "haar",
    ) -> None:
        super().__init__()
        for name, value in (
            ("depth", depth),
            ("channels", channels),
            ("image_size", image_size),
            ("in_channels", in_channels),
            ("num_classes", num_classes),
        ):
            positive_int(name, value, expected=_AT_LEAST_ONE)
        self.orthogonal = bool(orthogonal)
        self.activation_name = activation or ("maxmin" if self.orthogonal else "relu")
        self.activation = _activation(self.activation_name)
        self.layers = nn.ModuleList(
            _conv(in_channels if i == 0 else channels, channels, image_size, self.orthogonal, bias=True, init=init)
            for i in range(depth)
        )
        self.classifier = nn.Linear(channels * image_size * image_size, num_classes)

    probe_axis = "depth"  # what the probes of ``forward`` index (``training.diagnostics``)

    def features(self, x: Tensor, probes: Tensor | None = None) -> Tensor:
        """The activations of the last layer, ``(B, channels, s, s)``; with ``probes``
        (``(depth, B, channels, s, s)``, zeros) each layer's activations plus its probe, so that
        the gradient with respect to ``probes[l]`` is ``∂L/∂a_l``."""
        for index, conv in enumerate(self.layers):
            x = self.activation(conv(x))
            if probes is not None:
                x = x + probes[index]
        return x

    def forward(self, x: Tensor, probes: Tensor | None = None) -> Tensor:
        return self.classifier(self.features(x, probes).flatten(1))

    def probe_shape(self, x: Tensor) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of the probes ``forward`` takes for the input ``x``: one per layer."""
        return (len(self.layers), x.shape[0], self.layers[0].out_channels) + tuple(x.shape[-2:]), x.dtype


def orthogonal_linear(in_features: int, out_features: int, bias: bool = True, init: str = "haar") -> nn.Linear:
    """An ``nn.Linear`` whose ``(out_features, in_features)`` weight is declared orthogonal: orthonormal
    columns when it is tall (``out ≥ in``: an isometry), orthonormal rows when wide (``‖W x‖ ≤ ‖x‖``),
    started by the ``projunn.init`` initialiser ``init``; the bias starts at zero.

    ``projunn.param_groups`` puts the weight in the unitary group (projUNN keeps it on the
    Stiefel manifold) and ``projunn.parametrize`` re-expresses it (the O(n³) baselines)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    projunn.orthogonal_(layer, "weight", init=init)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class OrthogonalMLP(nn.Module):
    """A 1-Lipschitz MLP (Anil, Lucas & Grosse, ICML 2019): ``hidden_layers`` orthogonal linear maps of
    width ``hidden_size``, each followed by MaxMin, then an orthogonal linear readout; every weight
    declared orthogonal (``orthogonal_linear``).

    With MNIST's 784 inputs, ``hidden_size=1024`` and ``hidden_layers=3``: a ``(1024, 784)`` weight
    with orthonormal columns, two ``1024 × 1024`` orthogonal ones and a ``(10, 1024)`` readout with
    orthonormal rows. Every map is 1-Lipschitz in the L2 norm, and so is the network (exactly
    norm-preserving up to the readout, with zero biases), which is what certifies a prediction
    whose logit margin exceeds ``√2·ε`` at radius ``ε`` (``tasks.lipschitz``) — in the space of
    the inputs it is given (the task's pixels, in [0, 1] unless standardised).

    Args:
        in_channels, image_size: the input images ``(B, in_channels, s, s)``, flattened.
        num_classes: number of logits.
        hidden_size: width of the hidden layers (even: MaxMin pairs its halves).
        hidden_layers: number of hidden layers (orthogonal maps followed by MaxMin).
        activation: ``"maxmin"`` (GroupSort of 2, norm preserving) or ``"relu"`` (1-Lipschitz, not
            norm preserving).
        init: the ``projunn.init`` initialiser of every weight.
        bias: give each linear map a bias (it does not change the Lipschitz constant).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        hidden_size: int = 1024,
        hidden_layers: int = 3,
        activation: str = "maxmin",
        init: str = "haar",
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("image_size", image_size),
            ("num_classes", num_classes),
            ("hidden_size", hidden_size),
            ("hidden_layers", hidden_layers),
        ):
            positive_int(name, value, expected=_AT_LEAST_ONE)
        if activation == "maxmin" and hidden_size % 2:
            raise ValueError(f"MaxMin pairs the hidden units: hidden_size must be even, got {hidden_size}")
        widths = [in_channels * image_size * image_size] + [hidden_size] * hidden_layers + [num_classes]
        self.layers = nn.ModuleList(
            orthogonal_linear(w_in, w_out, bias=bias, init=init) for w_in, w_out in zip(widths, widths[1:])
        )
        self.activation = MaxMin(dim=-1) if activation == "maxmin" else _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)

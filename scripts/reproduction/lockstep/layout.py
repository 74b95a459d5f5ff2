"""CIFAR10's convolutions on both sides: the authors' layer keeps a free complex matrix per ``rfft2``
bin, ``(H·W_f, C, C)`` with bin ``u·W_f + v`` (``layers.py:53-87@437eb05``); ours keeps the free ones and
the self-conjugate ones, real (projunn/conv.py, Note [Hermitian symmetry of a real convolution]).
The maps between the two are the library's ``kernel_from_matrices`` / ``matrices_from_kernel``."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from projunn.conv import OrthogonalConv2d, kernel_from_matrices, matrices_from_kernel


def conv_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The full-width convolutions of either side's ResNet9, by name."""
    for name, module in model.named_modules():
        if isinstance(module, OrthogonalConv2d) or type(module).__name__ == "FullWidthConv2d":
            yield name, module


def image_size(layer: nn.Module) -> tuple[int, int]:
    """``(H, W)`` of either side's layer."""
    return tuple(layer.image_size if isinstance(layer, OrthogonalConv2d) else layer.input_size)


def to_authors(weight: Tensor | None, weight_real: Tensor, size: tuple[int, int]) -> Tensor:
    """Our stored matrices (or any tensors of their leading shapes) on the authors' layout ``(H·W_f, ...)``,
    each redundant edge bin the conjugate of its partner."""
    return kernel_from_matrices(weight, weight_real, size).flatten(0, 1)


def from_authors(grid: Tensor, size: tuple[int, int]) -> tuple[Tensor | None, Tensor]:
    """The authors' matrices at our free bins and (real part) at our self-conjugate bins."""
    return matrices_from_kernel(grid.unflatten(0, (size[0], size[1] // 2 + 1)), size)


def bin_classes(H: int, W: int) -> dict[str, Tensor]:
    """Indices, in the authors' bin order ``u·W_f + v``, of the interior bins, the edge-column bins
    that pair with another (free and redundant) and the self-conjugate ones."""
    Wf = W // 2 + 1
    u, v = torch.arange(H).repeat_interleave(Wf), torch.arange(Wf).repeat(H)
    edge = (2 * v) % W == 0
    self_conjugate = edge & ((2 * u) % H == 0)
    return {
        "interior": (~edge).nonzero().flatten(),
        "paired edge": (edge & ~self_conjugate).nonzero().flatten(),
        "self-conjugate": self_conjugate.nonzero().flatten(),
    }


def hermitian_error(grid: Tensor, size: tuple[int, int]) -> float:
    """How far the authors' matrices leave the symmetry of a real convolution: the largest
    ``‖K − K_sym‖_F`` over the bins, ``K_sym`` the matrices our layout would hold."""
    return torch.linalg.matrix_norm(grid - to_authors(*from_authors(grid, size), size)).max().item()


def isometry_defect(model: nn.Module, layer_name: str, seed: int) -> float:
    """``max |‖conv(x)‖ / ‖x‖ − 1|`` over 4 Gaussian images, for one convolution that keeps its channels."""
    layer = model.get_submodule(layer_name)
    x = torch.randn(
        4, layer.out_channels, *image_size(layer), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    with torch.no_grad():
        y = layer(x)
    ratio = y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    return (ratio - 1).abs().max().item()

"""The chaos control of a run: its initial weights moved by a tiny amount (``init_noise``), everything
else (data order, augmentation, sketches) untouched, so that the spread of a few such runs of one
command is the floor under any comparison of single runs (docs/reproduction.md, "CIFAR10 side by side").
"""

from __future__ import annotations

import torch
from torch import nn

import projunn


def unitary_step_of_size(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor, size: float) -> torch.Tensor:
    """The projUNN-T step of ``W`` in the direction ``a bᴴ``, scaled so that its largest entry change is
    ``size`` (a small step's size is linear in its scale: one trial step, then rescaled)."""
    scale = size / (a.abs().amax() * b.abs().amax()).item()
    change = (projunn.projunn_t(W, a * scale, b) - W).abs().max().item()
    scale *= size / change if change > 0 else 1.0
    return projunn.projunn_t(W, a * scale, b)


def perturb_initial_weights(model: nn.Module, size: float, seed: int) -> float:
    """Move every parameter of ``model`` by ``size`` (its largest entry change) in a random direction
    drawn from a generator of its own (``seed``; torch's global generator is not touched): a declared
    unitary matrix by an exact projUNN-T step, so that it stays unitary, any other parameter by
    Gaussian noise. A matrix that ``projunn.parametrize`` computes is moved through its parameter.
    Returns the largest change made."""
    g = torch.Generator().manual_seed(seed)
    by_storage = {p.untyped_storage().data_ptr(): p for p in model.parameters()}
    unitary = {}
    for _, matrix in projunn.named_unitary_parameters(model):
        owner = by_storage.get(matrix.untyped_storage().data_ptr())
        if owner is not None:  # the parameter itself or a view of it (not a computed matrix)
            unitary[owner] = matrix
    largest = 0.0
    with torch.no_grad():
        for p in model.parameters():
            before = p.detach().clone()
            if p in unitary:
                W = unitary[p]
                wide = W.shape[-2] < W.shape[-1]
                V = W.mH if wide else W
                a = torch.randn(V.shape[:-1] + (1,), generator=g, dtype=V.dtype).to(V.device)
                b = torch.randn(V.shape[:-2] + (V.shape[-1], 1), generator=g, dtype=V.dtype).to(V.device)
                moved = unitary_step_of_size(V, a, b, size)
                W.copy_(moved.mH if wide else moved)
            else:
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
                p.add_(noise * (size / noise.abs().amax().clamp_min(1e-30)))
            largest = max(largest, (p - before).abs().max().item())
    return largest

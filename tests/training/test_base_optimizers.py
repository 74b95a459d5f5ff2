"""The experiment side's base optimizers (training/optim.py), against their formulas: the projUNN
authors' RMSprop (the complex square g·g) and TensorFlow 1's (scoRNN's; its mean square starts at 1)."""

from __future__ import annotations

import pytest
import torch


def test_authors_rmsprop_squares_complex_gradients_without_conjugate():
    # facebookresearch/projUNN, projunn/optimizers.py@3213f2e:146-166:
    # v ← α v + (1 − α) g·g, θ ← θ − lr g / (sqrt(v) + eps)
    from training.optim import AuthorsRMSprop

    g = torch.Generator().manual_seed(0)
    real = torch.randn(5, 4, dtype=torch.float64, generator=g)
    complex_ = torch.randn(5, 4, dtype=torch.complex128, generator=g)
    ours = [real.clone().requires_grad_(), complex_.clone().requires_grad_()]
    torch_real = real.clone().requires_grad_()
    opt = AuthorsRMSprop(ours, lr=1e-2)
    reference = torch.optim.RMSprop([torch_real], lr=1e-2)  # alpha 0.99, eps 1e-8: the same on reals
    v = torch.zeros(5, 4, dtype=torch.complex128)
    expected = complex_.clone()
    for _ in range(5):
        grads = (
            torch.randn(5, 4, dtype=torch.float64, generator=g),
            torch.randn(5, 4, dtype=torch.complex128, generator=g),
        )
        ours[0].grad, ours[1].grad, torch_real.grad = grads[0], grads[1], grads[0].clone()
        opt.step()
        reference.step()
        a, b = grads[1].real, grads[1].imag
        v = 0.99 * v + 0.01 * torch.complex(a * a - b * b, 2 * a * b)  # the complex square, written out
        root = v.abs().sqrt() * torch.exp(0.5j * v.angle())  # principal square root
        expected = expected - 1e-2 * grads[1] / (root + 1e-8)
    assert torch.allclose(ours[0], torch_real, rtol=0, atol=1e-14)
    assert torch.allclose(ours[1], expected, rtol=0, atol=1e-12)
    one = torch.zeros(1, dtype=torch.complex128, requires_grad=True)
    one.grad = torch.tensor([2j], dtype=torch.complex128)  # a gradient of constant phase: the step is real
    AuthorsRMSprop([one], lr=1.0, eps=0).step()
    assert one.detach().imag.abs().item() < 1e-15 and one.detach().real.abs().item() == pytest.approx(10.0)


def test_tensorflow_rmsprop_starts_its_mean_square_at_one():
    # scoRNN's optimizer, TensorFlow 1's RMSPropOptimizer: ms ← ρ ms + (1 − ρ) g², ms₀ = 1, θ ← θ − lr g / sqrt(ms + ε)
    from training.optim import TensorFlowRMSprop

    g = torch.Generator().manual_seed(0)
    theta = torch.randn(6, dtype=torch.float64, generator=g)
    p = theta.clone().requires_grad_()
    opt = TensorFlowRMSprop([p], lr=1e-3)
    ms = torch.ones(6, dtype=torch.float64)
    for _ in range(4):
        grad = torch.randn(6, dtype=torch.float64, generator=g)
        p.grad = grad
        opt.step()
        ms = 0.9 * ms + 0.1 * grad**2
        theta = theta - 1e-3 * grad / torch.sqrt(ms + 1e-10)
    assert torch.allclose(p.detach(), theta, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="real parameters only"):
        TensorFlowRMSprop([torch.zeros(2, dtype=torch.complex64, requires_grad=True)])

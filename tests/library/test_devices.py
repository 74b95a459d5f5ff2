"""The library on every available device (CPU always; CUDA where torch sees a GPU, skipped and counted
elsewhere), and precision: the step under the user's matmul precision, TF32. (The fused recurrence on each
device: test_rnn.py; the sync-free step: test_compile.py; training on the GPU: tests/training/test_devices.py.)

The CUDA cases run on a machine with a GPU (``scripts/bench/device_check.sh``); on a CPU-only machine
``pytest`` reports them as skipped.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import projunn
from projunn.conv import OrthogonalConv2d
from projunn.linalg import full_precision
from tests.helpers.devices import DEVICES, haar, needs_cuda


# ---------------------------------------------------------------------------------------------
# the library on each device
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("k", [1, 3])
def test_updates_match_float64_references(device, dtype, k):
    g = torch.Generator().manual_seed(1)
    W = haar((2, 9, 9), dtype, device)
    a = torch.randn(2, 9, k, dtype=dtype, generator=g).to(device)
    b = torch.randn(2, 9, k, dtype=dtype, generator=g).to(device)
    step = a @ b.mH
    omega = 0.5 * (W.mH @ step - step.mH @ W)
    assert torch.allclose(projunn.projunn_t(W, a, b), W @ torch.linalg.matrix_exp(omega), atol=1e-10)
    U, _, Vh = torch.linalg.svd(W + step)
    assert torch.allclose(projunn.projunn_d(W, a, b), U @ Vh, atol=1e-10)
    assert projunn.projunn_t(W, a, b).device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_samplers_recover_a_rank_k_step(device):
    g = torch.Generator().manual_seed(2)
    G = (
        torch.randn(3, 12, 2, dtype=torch.float64, generator=g)
        @ torch.randn(3, 2, 12, dtype=torch.float64, generator=g)
    ).to(device)
    for sampler in (projunn.lsi, projunn.column_sampling):
        a, b = sampler(G, 2, generator=torch.Generator().manual_seed(3))
        assert a.device.type == device and torch.allclose(a @ b.mH, G, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("base", ["SGD", "RMSprop", "Adam"])
@pytest.mark.parametrize("projector", ["T", "D"])
def test_projunn_learns_an_orthogonal_map_and_stays_orthogonal(device, base, projector):
    torch.manual_seed(0)
    n = 16
    target = haar((n, n), torch.float32, device, seed=1)
    W = nn.Parameter(haar((n, n), torch.float32, device, seed=2))
    lr = {"SGD": 1.0, "RMSprop": 3e-2, "Adam": 5e-2}[base]
    opt = projunn.ProjUNN([{"params": [W], "unitary": True}], base, lr=lr, projector=projector, rank=2, seed=0)
    losses = []
    for _ in range(100):
        x = torch.randn(32, n, device=device)
        loss = (x @ W.T - x @ target.T).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert projunn.unitarity_error(W).item() <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_continues_identically(device):
    def make():
        W = nn.Parameter(haar((3, 8, 8), torch.complex64, device))
        return W, projunn.ProjUNN([{"params": [W], "unitary": True}], "Adam", lr=1e-2, seed=4)

    def steps(W, opt, count, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(count):
            W.grad = torch.randn(W.shape, dtype=W.dtype, generator=g).to(device)
            opt.step()

    W1, opt1 = make()
    steps(W1, opt1, 3, 0)
    saved_W, saved = W1.detach().clone(), copy.deepcopy(opt1.state_dict())
    steps(W1, opt1, 3, 1)
    W2, opt2 = make()
    with torch.no_grad():
        W2.copy_(saved_W)
    opt2.load_state_dict(saved)
    steps(W2, opt2, 3, 1)
    assert torch.equal(W1, W2)


@pytest.mark.parametrize("device", DEVICES)
def test_orthogonal_convolution_preserves_norms(device):
    torch.manual_seed(0)
    layer = OrthogonalConv2d(3, 8, (6, 7), init="henaff", channel_growth="repeat", device=device)
    x = torch.randn(4, 3, 6, 7, device=device)
    ratio = layer(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert (ratio - 1).abs().max() <= 1e-5
    projunn.parametrize(layer, "cayley")
    assert projunn.unitarity_error(layer.weight).max() <= 1e-5


# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["highest", "high", "medium"])
def test_the_step_ignores_and_keeps_the_users_matmul_precision(setting):
    def run():
        W = nn.Parameter(haar((64, 64), torch.float32, "cpu"))
        opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-2, seed=0)
        for step in range(5):
            W.grad = torch.randn(64, 64, generator=torch.Generator().manual_seed(step))
            opt.step()
        return W.detach()

    reference = run()
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(setting)
    try:
        result = run()
        with full_precision():
            assert torch.backends.cuda.matmul.fp32_precision == torch.backends.mkldnn.matmul.fp32_precision == "ieee"
        assert torch.get_float32_matmul_precision() == setting  # the user's setting, untouched
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.equal(result, reference)


@needs_cuda
def test_tf32_does_not_cost_unitarity():
    torch.manual_seed(0)
    errors = {}
    previous = torch.backends.cuda.matmul.allow_tf32
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            W = nn.Parameter(haar((256, 256), torch.float32, "cuda"))
            opt = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=1e-3, reproject_every=None, seed=0)
            for _ in range(200):
                W.grad = torch.randn_like(W)
                opt.step()
            errors[tf32] = projunn.unitarity_error(W).item()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    assert errors[True] <= 2 * errors[False] + 1e-6  # the projection's products run in full float32

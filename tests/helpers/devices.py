"""The devices a test runs on: the CPU always, CUDA where torch sees a GPU (skipped and counted
elsewhere; scripts/bench/device_check.sh runs them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from projunn import init

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def haar(shape, dtype, device, seed=0):
    return init.haar_(torch.empty(shape, dtype=dtype), generator=torch.Generator().manual_seed(seed)).to(device)

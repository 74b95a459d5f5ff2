"""The framework on other devices and precisions: mixed-precision training keeps the unitary matrices in
float32, and one short run per task with ``trainer=gpu`` (CUDA only: skipped and counted elsewhere;
``scripts/bench/device_check.sh`` runs them on a GPU machine)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.devices import needs_cuda


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_keeps_unitary_matrices_in_float32(compose_cfg, tmp_path, precision):
    from tests.helpers.records import read_metrics
    from tests.helpers.runs import FAST
    from train import train

    cfg = compose_cfg(
        "task=copy", "task.T=8", "task.batch_size=4", "model.hidden_size=8", f"trainer.precision={precision}", *FAST
    )
    train(cfg)
    rows = read_metrics(tmp_path)
    assert all(math.isfinite(float(r["train/loss"])) for r in rows if r.get("train/loss"))
    assert max(float(r["unitarity/max_error"]) for r in rows if r.get("unitarity/max_error")) <= 1e-5
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert state["model.rnn.weight_hh"].dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# one short run per task on the GPU
# ---------------------------------------------------------------------------------------------
GPU_RUNS = [
    ("task=copy", "task.T=20", "task.batch_size=8", "model.hidden_size=16"),
    ("task=adding", "task.T=20", "task.batch_size=8", "model.hidden_size=16"),
    ("experiment=pmnist", "model.hidden_size=16", "task.batch_size=4", "task.eval_batch_size=5"),
    ("experiment=cifar10_projunn_t", "model.channels=[4,8,8]", "task.batch_size=8"),
]


@pytest.mark.integration
@needs_cuda
@pytest.mark.parametrize("overrides", GPU_RUNS, ids=[r[0] for r in GPU_RUNS])
def test_gpu_run_per_task(compose_cfg, tmp_path, monkeypatch, overrides):

    import tasks.cifar10 as cifar
    from tests.helpers.data import fake_cifar, write_mnist
    from tests.helpers.records import read_metrics
    from tests.helpers.runs import FAST
    from train import train

    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    write_mnist(tmp_path / "data", 16, 10)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_cfg(
        *overrides, "trainer=gpu", f"data_root={tmp_path / 'data'}", "unitarity_every=1", *FAST, run_dir=run_dir
    )
    assert math.isfinite(train(cfg))
    errors = [float(r["unitarity/max_error"]) for r in read_metrics(run_dir) if r.get("unitarity/max_error")]
    assert errors and max(errors) <= 1e-5

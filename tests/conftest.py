"""Shared fixtures (shared functions and constants are in tests/helpers/): compose the Hydra
config as train.py would, in a temporary run directory; a data root of random MNIST images; the
``slow`` tests kept out unless ``-m`` names them; torch's process-wide settings checked, and
the environment and Hydra's global config put back, after every test."""

from __future__ import annotations

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.helpers import ROOT
from tests.helpers.data import write_mnist

os.environ.setdefault("WANDB_MODE", "disabled")


def pytest_collection_modifyitems(config, items):
    """``slow`` tests run only when ``-m`` names them: pyproject's ``addopts`` says ``-m 'not slow'``,
    but pytest keeps only the last ``-m``, so ``pytest -m "not integration"`` would let them in."""
    if "slow" in config.getoption("markexpr", ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def torch_settings() -> dict:
    return {
        "default_dtype": torch.get_default_dtype(),
        "num_threads": torch.get_num_threads(),
        "grad_enabled": torch.is_grad_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
    }


@pytest.fixture(autouse=True)
def no_process_setting_left_changed():
    """A test leaves torch's process-wide settings as it found them, or fails. What an in-process
    run sets for the whole process, as Lightning does (deterministic algorithms with
    ``trainer.deterministic=true``, the CPU default; ``PL_GLOBAL_SEED`` and other variables of the
    environment), is put back."""
    before, environ = torch_settings(), dict(os.environ)
    deterministic, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    for name, value in environ.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    assert torch_settings() == before, "a test changed torch's process-wide settings"


@pytest.fixture
def compose_cfg(tmp_path):
    """``compose_cfg(*overrides, run_dir=tmp_path)`` → the composed config, with Hydra's runtime
    output directory at ``run_dir``."""

    def _compose(*overrides: str, run_dir=None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir or tmp_path)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # no run directory left behind for the next test


@pytest.fixture
def mnist(tmp_path):
    """A data root with torchvision's raw MNIST layout holding random images; returns ``(root, arrays)``."""
    return tmp_path / "data", write_mnist(tmp_path / "data")

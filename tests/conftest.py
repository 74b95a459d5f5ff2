"""Shared fixtures: compose the Hydra config as train.py would, in a temporary run directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "disabled")

# Small, fast settings for smoke runs: a few CPU steps, metrics.csv only, no progress bar (conf/debug/tiny.yaml).
FAST = ["debug=tiny"]


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

"""Compose a run's config from ``conf/`` and build what it trains, in one place: ``train.py``, the
lockstep against the authors' code (``scripts/reproduction/lockstep``) and the report (``scripts/results/report.py``)
build presets through it, so that what they compare is what ``python train.py`` trains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

import projunn
from tasks.data import missing_members

from .init_noise import perturb_initial_weights
from .schema import check_model_fits_task

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The config ``python train.py OVERRIDES`` composes, for a program that is not a Hydra run (the
    lockstep, the report); ``with_hydra``: with Hydra's own node (``hydra.runtime.choices``: the
    config groups chosen)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)
    finally:
        GlobalHydra.instance().clear()


@dataclass
class Built:
    """What a config builds: the task (a Lightning data module, ``tasks.data.Task``), the model, and
    the optimizer and scheduler as functions of the model (``make_optimizer(model, **extra)``)."""

    task: Any
    model: nn.Module
    make_optimizer: Callable[..., torch.optim.Optimizer]
    make_scheduler: Callable[..., Any] | None


def build(cfg: DictConfig, **model_kwargs: Any) -> Built:
    """The task, the model (``model_kwargs`` added to the task's), its parametrization (expRNN,
    scoRNN, Cayley) or the chaos control's moved initial weights when the config asks, and the
    optimizer, built once here so that bad settings (k > n, a base name) fail before training."""
    task = instantiate(cfg.task)
    if missing := missing_members(task):
        raise ValueError(
            f"task: {type(task).__name__} lacks {', '.join(missing)} of the task interface "
            "(tasks.data.Task; docs/extending.md)"
        )
    check_model_fits_task(cfg.model, task.model_kwargs)
    model = instantiate(cfg.model, **{**task.model_kwargs, **model_kwargs})
    if cfg.optim.get("parametrization"):  # the model re-expresses its unitary matrices
        projunn.parametrize(model, cfg.optim.parametrization, cfg.optim.get("negative_ones", 0))
    if cfg.get("init_noise"):  # a chaos control: the same run from initial weights moved by init_noise
        perturb_initial_weights(model, cfg.init_noise, cfg.init_noise_seed)
    make_optimizer = instantiate(cfg.optim)
    make_optimizer(model)
    make_scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return Built(task, model, make_optimizer, make_scheduler)

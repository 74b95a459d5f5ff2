"""Train one configuration: ``python train.py task=copy optim=projunn_t k=1``.

Composes ``conf/`` with Hydra, builds the task, model, optimizer and scheduler
(``training.build``), callbacks, loggers and trainer, fits, tests, and returns ``cfg.metric`` for
sweepers. ``python train.py -m ... k=1,2,4,8`` runs a sweep. A run directory holding ``last.ckpt``
resumes from it (``resume=false`` starts over).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import hydra
import pytorch_lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.compile import from_compiled

import training.hydra_callbacks  # noqa: F401  (registers the resolver that names sweep jobs)
from training.build import build
from training.console import RunProgress, log_start, route_logs
from training.interrupts import StopOnSignal, fit_then_test
from training.lightning_module import TrainingModule
from training.loggers import ResumeLog, make_loggers
from training.memory import keep_freed_memory
from training.reporting import as_command
from training.run_dir import RunDirLock, checkpoint_to_resume, plugins
from training.schema import check_config
from training.summary import RunSummary


def train(cfg: DictConfig) -> float | None:
    """One run, in process: returns ``cfg.metric``; errors and signals are raised, and a wandb run is
    left open (``main``, ``as_command(train)``, reports them and closes it)."""
    check_config(cfg)  # types and ranges, before anything is built
    hydra_cfg = HydraConfig.get()
    if cfg.keep_freed_memory:  # the copy task's 97 MB tensors reuse mapped pages step after step
        keep_freed_memory()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # One writer per run directory (in a distributed run, the launching process holds it).
    with RunDirLock(run_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext():
        L.seed_everything(cfg.seed, workers=True)
        built = build(cfg)
        log_start(hydra_cfg, built.model)
        module = TrainingModule(built.model, built.task, built.make_optimizer, built.make_scheduler)
        if cfg.compile:  # Lightning's route: its steps compiled, the module still a LightningModule
            module = from_compiled(torch.compile(module))
        ckpt_path = checkpoint_to_resume(run_dir, cfg.resume, cfg.ckpt_path and to_absolute_path(cfg.ckpt_path))
        loggers = make_loggers(cfg, run_dir, resumed=ckpt_path is not None)
        resume_log, stop = ResumeLog(loggers[0]), StopOnSignal(run_dir)
        sitting = RunSummary(run_dir, list(hydra_cfg.overrides.task)) if rank_zero_only.rank == 0 else RunSummary()
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
        callbacks += [resume_log, stop, sitting] + ([RunProgress()] if cfg.trainer.enable_progress_bar else [])
        trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins(), default_root_dir=run_dir
        )
        finished = False
        try:
            metric = fit_then_test(trainer, module, built.task, ckpt_path, stop, resume_log, cfg.metric, cfg.test)
            finished = True
        finally:  # summary.json and the end summary, also when a signal or an error stopped the sitting
            sitting.end(trainer, finished, cfg.metric)
    return metric


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    route_logs()  # the console and train.log, once Hydra has set up logging
    return as_command(train)(cfg)


if __name__ == "__main__":
    main()

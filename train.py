"""Train one configuration: ``python train.py task=copy optim=projunn_t k=1``.

Composes ``conf/`` with Hydra, builds the task (a Lightning data module), the model, the
optimizer (a ``_partial_`` called with the model), callbacks, loggers and trainer, fits, tests,
and returns ``cfg.metric`` for sweepers. ``python train.py -m ... k=1,2,4,8`` runs a sweep.
A run directory holding ``last.ckpt`` resumes from it (``resume=false`` starts over).
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

import projunn
import training.hydra_callbacks  # noqa: F401  (registers the resolver that names sweep jobs)
from tasks.data import missing_members
from training.chaos import perturb_initial_weights
from training.console import RunProgress, describe_model, log, route_logs
from training.interrupts import StopOnSignal, fit
from training.lightning_module import Experiment
from training.loggers import ResumeLog, make_loggers
from training.memory import keep_freed_memory
from training.reporting import reported
from training.run_dir import RunDirLock, checkpoint_to_resume, plugins
from training.schema import check_config, check_model_fits_task
from training.summary import Sitting, describe, finished_record


def train(cfg: DictConfig) -> float | None:
    """One run, in process: returns ``cfg.metric``; errors and signals are raised, and a wandb run is
    left open (``main``, ``reported(train)``, reports them and closes it)."""
    check_config(cfg)  # types and ranges, before anything is built
    hydra_cfg = HydraConfig.get()
    log.info("overrides: %s", " ".join(hydra_cfg.overrides.task) or "(none)")
    log.info("composed: %s", ", ".join(f"{g}={c}" for g, c in hydra_cfg.runtime.choices.items() if c and "/" not in g))
    if cfg.keep_freed_memory:  # the copy task's 97 MB tensors reuse mapped pages step after step
        keep_freed_memory()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # One writer per run directory (in a distributed run, the launching process holds it).
    with RunDirLock(run_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext():
        L.seed_everything(cfg.seed, workers=True)
        task = instantiate(cfg.task)
        if missing := missing_members(task):
            raise ValueError(
                f"task: {type(task).__name__} lacks {', '.join(missing)} of the task interface "
                "(tasks.data.Task; docs/extending.md)"
            )
        check_model_fits_task(cfg.model, task.model_kwargs)
        model = instantiate(cfg.model, **task.model_kwargs)
        if cfg.optim.get("parametrization"):  # expRNN, scoRNN, Cayley: the model re-expresses its unitary matrices
            projunn.parametrize(model, cfg.optim.parametrization, cfg.optim.get("negative_ones", 0))
        if cfg.init_noise:  # a chaos control: the same run from initial weights moved by init_noise
            perturb_initial_weights(model, cfg.init_noise, cfg.init_noise_seed)
        make_optimizer = instantiate(cfg.optim)
        make_optimizer(model)  # built once here, so that bad settings (k > n, a base name) fail before training
        make_scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
        module = Experiment(model, task, make_optimizer, make_scheduler)
        log.info(describe_model(model))
        if cfg.compile:  # Lightning's route: its steps compiled, the module still a LightningModule
            module = from_compiled(torch.compile(module))

        ckpt_path = checkpoint_to_resume(run_dir, cfg.resume, cfg.ckpt_path and to_absolute_path(cfg.ckpt_path))
        if ckpt_path is None and cfg.resume and finished_record(run_dir):  # its checkpoints left with scripts/record.py
            raise ValueError(
                f"{run_dir} holds the record of a finished run (summary.json): give another hydra.run.dir, "
                "or resume=false to start over there"
            )
        loggers = make_loggers(cfg, run_dir, resumed=ckpt_path is not None)
        resume_log, stop = ResumeLog(loggers[0]), StopOnSignal(run_dir)
        sitting = Sitting(run_dir, list(hydra_cfg.overrides.task)) if rank_zero_only.rank == 0 else Sitting()
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
        callbacks += [resume_log, stop, sitting] + ([RunProgress()] if cfg.trainer.enable_progress_bar else [])
        trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins(), default_root_dir=str(run_dir)
        )
        finished = False
        try:
            fit(trainer, module, task, ckpt_path, stop)
            if trainer.limit_val_batches and module.validated_at != trainer.global_step:
                trainer.validate(module, datamodule=task, verbose=False)  # the last step, when none fell on it
            # Read before test() replaces the callback metrics; a fit resumed at its end trains nothing.
            metric = trainer.callback_metrics.get(cfg.metric, resume_log.restored_metrics.get(cfg.metric))
            if cfg.test:
                trainer.test(module, datamodule=task, ckpt_path=None, verbose=False)
            finished = True
        finally:  # summary.json, also when a signal or an error stopped the sitting
            if trainer.global_rank == 0 and sitting.from_step is not None:  # training began
                if summary := sitting.write(trainer, finished):
                    for line in describe(summary, cfg.metric):
                        log.info(line)
    return None if metric is None else float(metric)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    route_logs()  # the console and train.log, once Hydra has set up logging
    return reported(train)(cfg)


if __name__ == "__main__":
    main()

"""Train one configuration: ``python train.py task=copy optim=projunn_t k=1``.

Composes ``conf/`` with Hydra, builds the task (a Lightning data module), the model, the
optimizer (a ``_partial_`` called with the model), callbacks, loggers and trainer, fits, tests,
and returns ``cfg.metric`` for sweepers. ``python train.py -m ... k=1,2,4,8`` runs a sweep.
A run directory holding ``last.ckpt`` resumes from it (``resume=false`` starts over).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import hydra
import pytorch_lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from pytorch_lightning.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import projunn
from tasks.callbacks import StepTimer, UnitarityMonitor
from tasks.checkpointing import (
    AtomicCheckpointIO,
    ResumeLog,
    RunDirLock,
    SignalStop,
    StepCheckpoint,
    StopOnSignal,
    checkpoint_to_resume,
)
from tasks.diagnostics import Diagnostics
from tasks.hydra_callbacks import short_dirname  # noqa: F401  (registers the resolver that names sweep jobs)
from tasks.loggers import MetricsCSV
from tasks.module import Experiment, NonFiniteLossError
from tasks.schema import check_config

log = logging.getLogger("train")


def _swept_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a multirun sweeps over, from the overrides and sweeper parameters it was started
    with (Hydra's ``multirun.yaml`` in the sweep directory, read with Hydra's own override parser:
    the same under every launcher, whose workers do not see the user's command line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    hydra_cfg = OmegaConf.load(path).hydra
    overrides = list(hydra_cfg.overrides.task) + [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def run_name() -> tuple[str, str | None]:
    """``(name, group)``: a run is named by its overrides (by the swept ones alone within a sweep,
    e.g. ``k=4``) and grouped by its sweep."""
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith(("data_root=", "logger"))]
    if hc.mode == RunMode.MULTIRUN:
        swept = _swept_keys(Path(hc.sweep.dir)) or set()
        chosen = [o for o in overrides if o.partition("=")[0].lstrip("+~") in swept]
        return ",".join(chosen or overrides) or "default", Path(hc.sweep.dir).name
    return ",".join(overrides) or "default", None


def make_loggers(cfg: DictConfig, run_dir: Path, resumed: bool) -> list:
    """metrics.csv, and a wandb run unless ``logger.wandb.mode=disabled``. A resumed fit logs to a
    new wandb run of the same group, named ``<name> (resumed)``, into which ``ResumeLog`` first
    replays metrics.csv up to the checkpoint: that run holds every step once, as metrics.csv does
    (the earlier run keeps the steps it logged, those after the checkpoint included)."""
    loggers = [MetricsCSV(run_dir)]
    if cfg.logger.wandb.mode != "disabled":
        from pytorch_lightning.loggers import WandbLogger

        name, group = run_name()
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        if resumed:
            name, run_id = f"{name} (resumed)", f"{run_id}-{time.strftime('%Y%m%d%H%M%S')}"
        loggers.append(
            WandbLogger(
                name=name,
                group=group,
                project=cfg.logger.wandb.project,
                entity=cfg.logger.wandb.entity,
                save_dir=str(run_dir),
                id=run_id,
                mode=cfg.logger.wandb.mode,
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def _takes(model_cfg: DictConfig, task: L.LightningDataModule) -> bool:
    """Whether the model a config builds accepts every keyword the task gives its model (``task.model_kwargs``)."""
    parameters = inspect.signature(hydra.utils.get_class(model_cfg._target_)).parameters
    return set(task.model_kwargs) <= set(parameters)


def check_model_fits_task(model_cfg: DictConfig, task: L.LightningDataModule) -> None:
    """One line naming the models that fit, when ``model=`` does not take the task's inputs (e.g. an RNN on images)."""
    if _takes(model_cfg, task):
        return
    choices = HydraConfig.get().runtime.choices
    options = sorted(Path(__file__).parent.glob("conf/model/*.yaml"))
    fitting = [path.stem for path in options if _takes(OmegaConf.load(path), task)]
    raise ValueError(
        f"model={choices.get('model')} does not fit task={choices.get('task')}; "
        f"models that do: {', '.join(fitting)}"
    )


class Interrupted(Exception):
    """The fit was stopped by a signal (``StopOnSignal``); ``code`` is the exit status, 128 + its number."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def train(cfg: DictConfig) -> float | None:
    check_config(cfg)  # types and ranges, before anything is built
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # One writer per run directory (in a distributed run, the launching process holds it).
    with RunDirLock(run_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext():
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> float | None:
    L.seed_everything(cfg.seed, workers=True)
    task = instantiate(cfg.task)
    check_model_fits_task(cfg.model, task)
    model = instantiate(cfg.model, **task.model_kwargs)
    if cfg.optim.get("parametrization"):  # expRNN, scoRNN, Cayley convolutions: the model re-expresses its unitary matrices
        projunn.parametrize(model, cfg.optim.parametrization, cfg.optim.get("negative_ones", 0))
    make_optimizer = instantiate(cfg.optim)
    make_optimizer(model)  # built once here so that bad settings (k > n, a base optimizer name) fail before training
    make_scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = Experiment(model, task, make_optimizer, make_scheduler)

    ckpt_path = checkpoint_to_resume(
        run_dir, cfg.resume, None if cfg.ckpt_path is None else hydra.utils.to_absolute_path(cfg.ckpt_path)
    )
    loggers = make_loggers(cfg, run_dir, resumed=ckpt_path is not None)
    callbacks = [
        StepTimer(),
        UnitarityMonitor(every_n_steps=cfg.unitarity_every),
        Diagnostics(every_n_steps=cfg.diagnostics_every, run_dir=run_dir),
        StepCheckpoint(
            dirpath=run_dir, save_last=True, save_top_k=0, every_n_train_steps=cfg.checkpoint_every, enable_version_counter=False
        ),
        resume_log := ResumeLog(loggers[0]),
        stop := StopOnSignal(run_dir),
    ]
    plugins = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        # Preemption and time-outs are handled by the submitit launcher, which requeues the job;
        # the requeued job resumes from last.ckpt. Lightning's own requeue would race with it.
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins, default_root_dir=str(run_dir))
    try:
        try:
            trainer.fit(module, datamodule=task, ckpt_path=ckpt_path)
        except SignalStop as stopped:
            raise Interrupted(str(stopped), 128 + stop.received) from None
        except RuntimeError as error:
            if "Error(s) in loading state_dict" not in str(error):
                raise
            detail = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise ValueError(f"checkpoint {ckpt_path} does not match this configuration: {detail}") from error
        if stop.received is not None:  # SIGINT / SIGTERM at the last step: no final validation or test
            if not stop.saved:
                trainer.save_checkpoint(stop.path)
            raise Interrupted(stop.message(trainer), 128 + stop.received)
        if trainer.limit_val_batches and module.validated_at != trainer.global_step:
            trainer.validate(module, datamodule=task, verbose=False)  # the last step, when no scheduled validation fell on it
        # Read before test() replaces the callback metrics; a fit resumed at its end trains nothing.
        metric = trainer.callback_metrics.get(cfg.metric, resume_log.restored_metrics.get(cfg.metric))
        if cfg.test:
            trainer.test(module, datamodule=task, ckpt_path=None, verbose=False)
    finally:
        if "wandb" in sys.modules:  # close this run's wandb run, also on failure (a sweep starts the next)
            import wandb

            wandb.finish()
    return None if metric is None else float(metric)


# Errors a user can cause (a bad override, missing data, an unwritable directory, a diverging run):
# reported as one line; the traceback goes to <run dir>/error.log.
USER_ERRORS = (ValueError, TypeError, OSError, NonFiniteLossError)


def user_error(error: BaseException) -> BaseException | None:
    """The user-caused error behind ``error`` (Hydra wraps errors of instantiated objects), or ``None``."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, USER_ERRORS) else None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except Interrupted as stopped:
        if rank_zero_only.rank == 0:
            print(str(stopped), file=sys.stderr)
        sys.exit(stopped.code)
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        if rank_zero_only.rank == 0:  # in a distributed run, every process stops; one reports
            details = Path(HydraConfig.get().runtime.output_dir) / "error.log"
            try:
                details.write_text("".join(traceback.format_exception(error)))
            except OSError:
                details = None
            print(f"error: {cause}" + (f" (traceback in {details})" if details else ""), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

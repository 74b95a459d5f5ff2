"""The types and ranges of the config's values, checked as soon as Hydra has composed the config and
before anything is built (``train.py``): a value of the wrong type or out of range is one line
naming the key, what it got and what it expects, e.g. ``optim.lr: expected a number >= 0, got
'abc'``. Keys that a composition does not have (another task's, another model's) are not checked;
what only the code can check (a rank above the hidden size, missing data) stays with the code.
The choices of a name (a cell, an initialiser, a projector, ...) are the code's own constants; those
of Lightning's and wandb's settings are theirs, written out here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from projunn.init import INITIALISERS
from projunn.parametrizations import MAPS
from projunn.rnn import NONLINEARITIES
from projunn.samplers import SAMPLERS
from projunn.updates import PROJECTORS
from tasks.sequence_models import BIAS_INITS, CELLS, INPUT_INITS, READOUT_INITS
from tasks.vision_models import ACTIVATIONS


@dataclass(frozen=True)
class Spec:
    expected: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(minimum: int | None = None) -> Spec:
    return Spec(
        "an integer" + ("" if minimum is None else f" >= {minimum}"),
        lambda v: _is_int(v) and (minimum is None or v >= minimum),
    )


def number(
    minimum: float | None = None, maximum: float | None = None, *, above: bool = False, below: bool = False
) -> Spec:
    low = "" if minimum is None else f" {'>' if above else '>='} {minimum}"
    high = "" if maximum is None else f"{' and' if low else ''} {'<' if below else '<='} {maximum}"

    def accepts(v: Any) -> bool:
        if not _is_number(v) or v != v:
            return False
        if minimum is not None and (v <= minimum if above else v < minimum):
            return False
        return maximum is None or (v < maximum if below else v <= maximum)

    return Spec(f"a number{low}{high}", accepts)


def choice(*options: Any) -> Spec:
    return Spec("one of " + ", ".join(map(repr, options)), lambda v: not isinstance(v, bool) and v in options)


def optional(spec: Spec) -> Spec:
    return Spec(f"{spec.expected} or null", lambda v: v is None or spec.accepts(v))


def either(first: Spec, second: Spec) -> Spec:
    return Spec(f"{first.expected} or {second.expected}", lambda v: first.accepts(v) or second.accepts(v))


def integers(minimum: int) -> Spec:
    return Spec(
        f"a list of integers >= {minimum}",
        lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0 and all(_is_int(x) and x >= minimum for x in v),
    )


BOOLEAN = Spec("true or false", lambda v: isinstance(v, bool))
TEXT = Spec("a string", lambda v: isinstance(v, str) and v != "")
POSITIVE = integer(1)

SCHEMA: dict[str, Spec] = {
    "k": POSITIVE,
    "seed": integer(),
    "data_root": TEXT,
    "metric": TEXT,
    "test": BOOLEAN,
    "resume": BOOLEAN,
    "compile": BOOLEAN,
    "ckpt_path": optional(TEXT),
    "init_noise": number(0),
    "init_noise_seed": integer(),
    "keep_freed_memory": BOOLEAN,
    "checkpoint_every": POSITIVE,
    "unitarity_every": POSITIVE,
    "diagnostics_every": integer(0),
    "spike_factor": number(0),
    "task.T": POSITIVE,
    "task.K": POSITIVE,
    "task.batch_size": POSITIVE,
    "task.eval_batch_size": POSITIVE,
    "task.steps_per_epoch": POSITIVE,
    "task.eval_batches": POSITIVE,
    "task.val_fraction": number(0, 1, below=True),
    "task.split_seed": optional(integer()),
    "task.permute": BOOLEAN,
    "task.standardize": BOOLEAN,
    "task.download": BOOLEAN,
    "task.augment": BOOLEAN,
    "task.test_every_epoch": BOOLEAN,
    "task.certified_radii": Spec(
        "a list of numbers >= 0",
        lambda v: isinstance(v, (list, ListConfig)) and all(number(0).accepts(x) for x in v),
    ),
    "task.margin": number(0),
    "task.temperature": number(0, above=True),
    "model.cell": choice(*CELLS),
    "model.hidden_size": POSITIVE,
    "model.nonlinearity": choice(*NONLINEARITIES),
    "model.init": choice(*INITIALISERS),
    "model.complex": BOOLEAN,
    "model.bias": BOOLEAN,
    "model.input_init": choice(*INPUT_INITS),
    "model.bias_init": choice(*BIAS_INITS),
    "model.readout_init": choice(*READOUT_INITS),
    "model.readout_gain": number(0, above=True),
    "model.orthogonal": BOOLEAN,
    "model.batch_norm": BOOLEAN,
    "model.channels": either(POSITIVE, integers(1)),  # deep_cnn: one width; resnet9: one per stage
    "model.depth": POSITIVE,
    "model.hidden_layers": POSITIVE,
    "model.activation": optional(choice(*ACTIVATIONS)),
    "optim.base": TEXT,
    "optim.lr": number(0),
    "optim.unitary_lr": optional(number(0)),
    "optim.unitary_lr_scale": number(0),
    "optim.projector": choice(*PROJECTORS),
    "optim.rank": POSITIVE,
    "optim.sampler": choice(*SAMPLERS),
    "optim.reproject_every": optional(POSITIVE),
    "optim.reproject_tol": optional(number(0)),
    "optim.parametrization": choice(*MAPS),
    "optim.negative_ones": integer(0),
    "scheduler.epochs": POSITIVE,
    "scheduler.gamma": number(0, above=True),
    "trainer.accelerator": choice("cpu", "gpu", "cuda", "mps", "auto"),
    "trainer.devices": either(either(integer(-1), choice("auto")), integers(0)),
    "trainer.precision": choice("32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true"),
    "trainer.max_steps": integer(-1),
    "trainer.max_epochs": integer(-1),
    "trainer.val_check_interval": either(POSITIVE, number(0, 1, above=True)),
    "trainer.check_val_every_n_epoch": optional(POSITIVE),
    "trainer.limit_val_batches": optional(either(integer(0), number(0, 1))),
    "trainer.limit_test_batches": optional(either(integer(0), number(0, 1))),
    "trainer.log_every_n_steps": POSITIVE,
    "trainer.num_sanity_val_steps": integer(-1),
    "trainer.deterministic": either(BOOLEAN, choice("warn")),
    "trainer.enable_progress_bar": BOOLEAN,
    "trainer.enable_model_summary": BOOLEAN,
    "logger.wandb.mode": choice("online", "offline", "disabled"),
    "logger.wandb.project": TEXT,
    "logger.wandb.entity": optional(TEXT),
}


class ConfigError(ValueError):
    """A config value of the wrong type or out of range."""


_ABSENT = object()


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first value of ``cfg`` that ``SCHEMA`` rejects."""
    for key, spec in SCHEMA.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not spec.accepts(value):
            raise ConfigError(f"{key}: expected {spec.expected}, got {value!r}")
    # One knob for projUNN's rank: k (the sweeps' and the reports' key); the optimizer reads it as
    # optim.rank: ${k}, so an override of optim.rank alone would leave k saying something else.
    rank = OmegaConf.select(cfg, "optim.rank", default=_ABSENT)
    if rank is not _ABSENT and rank != cfg.get("k", rank):
        raise ConfigError(f"optim.rank is k's (rank: ${{k}}); got optim.rank={rank} with k={cfg.k}: set k={rank}")


def _takes(model_cfg: DictConfig, model_kwargs: dict[str, Any]) -> bool:
    """Whether the model a config builds accepts every keyword the task gives its model."""
    parameters = inspect.signature(hydra.utils.get_class(model_cfg._target_)).parameters
    return set(model_kwargs) <= set(parameters)


def check_model_fits_task(model_cfg: DictConfig, model_kwargs: dict[str, Any]) -> None:
    """One line naming the models that fit, when ``model=`` does not take the task's inputs
    (``task.model_kwargs``; e.g. an RNN on images)."""
    if _takes(model_cfg, model_kwargs):
        return
    runtime = HydraConfig.get().runtime
    choices = runtime.choices
    (conf,) = [
        source.path for source in runtime.config_sources if source.provider == "main" and source.schema == "file"
    ]
    options = sorted((Path(conf) / "model").glob("*.yaml"))
    fitting = [path.stem for path in options if _takes(OmegaConf.load(path), model_kwargs)]
    raise ValueError(
        f"model={choices.get('model')} does not fit task={choices.get('task')}; models that do: {', '.join(fitting)}"
    )

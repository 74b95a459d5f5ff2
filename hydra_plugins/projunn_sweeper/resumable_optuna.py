"""An Optuna search that continues where it stopped: ``hydra/sweeper=optuna_study``
(``conf/hydra/sweeper/optuna_study.yaml``; its fields' types are ``OptunaStudyConf`` below).

The study lives in the sweep directory (``<sweep dir>/optuna.db``, SQLite, the study named after the
directory, unless ``storage``/``study_name`` say otherwise) and counts the trials already there, so
that the same command started again (with the same ``hydra.sweep.dir``) after a crash or Ctrl-C
continues the study up to ``n_trials`` in all:

* a trial left running by the interrupted process is run again first, with the overrides it was
  started with, in its own job directory, where ``train.py`` resumes it from its ``last.ckpt``;
  its result is then told to the study like any other's (it counts once). A trial interrupted
  before its job started (no overrides recorded) is marked failed;
* trials that finished (complete, pruned or failed) count towards ``n_trials``;
* job numbers are the study's trial numbers: trial ``i`` runs in ``<sweep dir>/<i>_<overrides>``,
  an ordinary run directory (``scripts/results/compare.py`` reads it), never one of an earlier start's.

The search space is ``params`` (the sweeper config's), replaced by a preset's top-level
``search_space`` when it has one, and by the command line's overrides key by key: a sweep
(``optim.lr='tag(log,interval(1e-4,1e-2))'``) replaces the key's range, a fixed value
(``optim.lr=7e-4``) takes the key out of the search. ``interval`` draws a float (``tag(log, ...)``:
on a log scale), an integer ``range`` an integer of its grid, ``choice`` (or any other range) one of
its values. ``n_jobs`` trials at a time go to the launcher; the study minimises or maximises (``direction``)
what ``train.py`` returns, ``cfg.metric``; the best trial's parameters end in
``<sweep dir>/optimization_results.yaml``.

Hydra imports this module at every start, to find its plugins: Optuna is imported only when a
sweep starts (and the annotations naming its types are strings). Hydra runs the module before it
enters ``sys.modules``, where ``dataclasses`` would look up string annotations: no
``from __future__ import annotations`` here.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import Direction
from omegaconf import MISSING, DictConfig, OmegaConf

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

OVERRIDES = "overrides"  # the user attribute holding the overrides a trial's job was launched with


@dataclass
class OptunaStudyConf:
    """The sweeper's fields and their types (their values and meaning: optuna_study.yaml)."""

    _target_: str = "hydra_plugins.projunn_sweeper.resumable_optuna.ResumableOptunaSweeper"
    sampler: Any = MISSING  # an Optuna sampler's config (hydra-optuna-sweeper's hydra/sweeper/sampler group)
    direction: Direction = MISSING
    storage: str | None = MISSING
    study_name: str | None = MISSING
    n_trials: int = MISSING
    n_jobs: int = MISSING
    max_failure_rate: float = MISSING
    params: dict[str, str] | None = MISSING


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_study_schema", node=OptunaStudyConf, provider="projunn"
)


class ResumableOptunaSweeper(Sweeper):
    """Hydra's sweeper of ``hydra/sweeper=optuna_study``: an Optuna study that a second start continues."""

    def __init__(
        self,
        sampler: "optuna.samplers.BaseSampler",
        direction: Direction,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: Mapping[str, str] | None,
    ) -> None:
        if n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_jobs must be at least 1, got {n_jobs}")
        if not 0 <= max_failure_rate <= 1:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {max_failure_rate}")
        self.sampler, self.direction, self.storage, self.study_name = sampler, direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate, self.params = n_trials, n_jobs, max_failure_rate, params

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna  # here, not at the top: see the module's docstring

        if not isinstance(self.sampler, optuna.samplers.BaseSampler):
            raise ValueError(f"hydra.sweeper.sampler must build an Optuna sampler, got {self.sampler!r}")
        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
        study_name = self.study_name or sweep_dir.name
        space, fixed = search_space(self.config.get("search_space") or self.params or {}, arguments)
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=self.sampler,
            direction=self.direction.name,
            load_if_exists=True,
        )
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self._run_again(study, trial)
        log.info(
            f"study {study_name} in {storage}: {len(study.trials)} of {self.n_trials} trials done"
            f" (the same command with hydra.sweep.dir={sweep_dir} continues it)"
        )
        while len(study.trials) < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - len(study.trials)))]
            overrides = []
            for trial in trials:
                overrides.append([f"{key}={suggest(trial, key, override)}" for key, override in space.items()] + fixed)
                trial.set_user_attr(OVERRIDES, overrides[-1])
            numbers = [trial.number for trial in trials]
            self._tell(study, numbers, self.launcher.launch(overrides, initial_job_idx=numbers[0]))

        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        best = {"best_params": study.best_params, "best_value": study.best_value} if completed else {}
        OmegaConf.save(OmegaConf.create(best), sweep_dir / "optimization_results.yaml")
        log.info(f"best of study {study_name}: {best or 'none, no trial completed'}")

    def _run_again(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
        """Run an interrupted trial again in its job directory and tell the study its result."""
        from optuna.trial import TrialState

        overrides = trial.user_attrs.get(OVERRIDES)
        if overrides is None:
            log.warning(f"trial {trial.number} was interrupted before its job started: marked failed")
            study.tell(trial.number, state=TrialState.FAIL)
            return
        log.info(f"trial {trial.number} was interrupted: running it again ({' '.join(overrides)})")
        self._tell(study, [trial.number], self.launcher.launch([overrides], initial_job_idx=trial.number))

    def _tell(self, study: "optuna.Study", numbers: Sequence[int], returns: Sequence[JobReturn]) -> None:
        """Tell the study each trial's value, or that it failed; raise the first job's error when
        more than ``max_failure_rate`` of them failed."""
        from optuna.trial import TrialState

        errors = []
        for number, job in zip(numbers, returns):
            try:
                value = float(job.return_value)  # raises the job's error
            except Exception as error:
                log.warning(f"trial {number} failed: {error!r}")
                study.tell(number, state=TrialState.FAIL)
                errors.append(error)
            else:
                study.tell(number, value)
        if len(errors) > self.max_failure_rate * len(numbers):
            raise errors[0]


def search_space(params: Mapping[str, Any], arguments: Sequence[str]) -> tuple[dict[str, Override], list[str]]:
    """The keys to search, each with its sweep override, and the fixed overrides every trial's job
    gets: ``params`` (key: value) then ``arguments``, a later override of a key replacing an earlier."""
    space, fixed = {}, {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = override
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())


def suggest(trial: "optuna.Trial", key: str, override: Override) -> Any:
    """``trial``'s value of ``key`` in the range the sweep ``override`` gives it."""
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):  # Hydra's interval bounds are floats
        return trial.suggest_float(key, sweep.start, sweep.end, log="log" in sweep.tags)
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if isinstance(sweep, RangeSweep) and all(isinstance(v, int) for v in values):
        return trial.suggest_int(key, min(values), max(values), step=abs(sweep.step))
    return trial.suggest_categorical(key, values)

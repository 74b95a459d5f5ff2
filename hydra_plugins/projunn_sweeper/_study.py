"""The study behind ``resumable_optuna.ResumableOptunaSweeper`` (its docstring says what it does)."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna.trial import TrialState

log = logging.getLogger(__name__)

OVERRIDES = "overrides"  # the user attribute holding the overrides a trial's job was launched with


class ResumableSweep(OptunaSweeperImpl):
    """The plugin's sweep, started from the trials its study already holds."""

    def _configure_trials(self, trials, search_space_distributions, fixed_params):
        overrides = super()._configure_trials(trials, search_space_distributions, fixed_params)
        for trial, trial_overrides in zip(trials, overrides):
            trial.set_user_attr(OVERRIDES, list(trial_overrides))
        return overrides

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.storage = self.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
        self.study_name = self.study_name or sweep_dir.name
        if self.config.get("search_space") is not None:  # a preset's
            self.params = self.config.search_space
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, directions=self._get_directions(), load_if_exists=True
        )
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self._finish(study, trial)
        done = len(study.trials)
        log.info(
            f"study {self.study_name} in {self.storage}: {done} of {self.n_trials} trials done"
            f" (the same command with hydra.sweep.dir={sweep_dir} continues it)"
        )
        # The plugin's loop runs n_trials; its job numbers start at job_idx.
        self.n_trials, self.job_idx = max(0, self.n_trials - done), done
        super().sweep(arguments)

    def _finish(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Run an interrupted trial again in its job directory and tell the study its result."""
        overrides = trial.user_attrs.get(OVERRIDES)
        if overrides is None:
            log.warning(f"trial {trial.number} was interrupted before its job started: marked failed")
            study.tell(trial.number, state=TrialState.FAIL)
            return
        log.info(f"trial {trial.number} was interrupted: running it again ({' '.join(overrides)})")
        (result,) = self.launcher.launch([tuple(overrides)], initial_job_idx=trial.number)
        try:
            value = float(result.return_value)  # raises the job's error
        except Exception:
            study.tell(trial.number, state=TrialState.FAIL)
            if self.max_failure_rate < 1:
                raise
            log.warning(f"trial {trial.number} failed")
            return
        study.tell(trial.number, value)

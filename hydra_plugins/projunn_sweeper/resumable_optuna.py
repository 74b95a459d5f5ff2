"""Hydra's Optuna sweeper (hydra-optuna-sweeper), made resumable: ``hydra/sweeper=optuna_study``
(``conf/hydra/sweeper/optuna_study.yaml``).

The plugin's sweeper runs ``n_trials`` more trials each time it starts. This one keeps the study in
the sweep directory (``<sweep dir>/optuna.db``, SQLite, the study named after the directory, unless
``storage``/``study_name`` say otherwise) and counts the trials already there, so that the same
command started again (with the same ``hydra.sweep.dir``) after a crash or Ctrl-C continues the
study up to ``n_trials`` in all:

* a trial left running by the interrupted process is run again first, with the overrides it was
  started with, in its own job directory, where ``train.py`` resumes it from its ``last.ckpt``;
  its result is then told to the study like any other's (it counts once). A trial interrupted
  before its job started (no overrides recorded) is marked failed;
* trials that finished (complete, pruned or failed) count towards ``n_trials``;
* job numbers continue from the study's trial numbers: trial ``i`` runs in
  ``<sweep dir>/<i>_<overrides>``, an ordinary run directory (``scripts/compare.py`` reads it),
  never one of an earlier start's.

The search space is ``params`` (the sweeper config's), replaced by a preset's top-level
``search_space`` when it has one, and by the command line's sweep overrides
(``optim.lr='tag(log,interval(1e-4,1e-2))'``) key by key; ``train.py`` returns ``cfg.metric``,
which the study minimises. (The work is in ``_study.py``, which imports Optuna: Hydra imports
this module at every start, to find its plugins.)
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """The plugin's sweeper, its work done by ``_study.ResumableSweep``."""

    def __init__(self, **kwargs: Any) -> None:
        from ._study import ResumableSweep

        super().__init__(**kwargs)
        self.sweeper = ResumableSweep(**kwargs)

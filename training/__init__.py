"""The run machinery of the experiments, for any task: the LightningModule (``lightning_module``),
the optimizer builder (``optim``), the measurement callbacks (``callbacks``, ``diagnostics``), the
loggers and the replay of metrics after a resume (``loggers``), the run directory's checkpoints and
lock (``run_dir``), stopping at a signal (``interrupts``), the config's types and ranges
(``schema``), how a run ends for its user (``reporting``) and Hydra's hooks (``hydra_callbacks``).
``train.py`` wires them from ``conf/``; nothing in ``projunn/`` depends on this package."""

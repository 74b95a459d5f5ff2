"""The experiment side of projunn: Lightning data modules for the paper's tasks, the models
they train, the optimizer builder, callbacks and loggers. ``train.py`` wires them from
``conf/``; nothing in ``projunn/`` depends on this package."""

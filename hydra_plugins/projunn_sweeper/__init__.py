"""This project's Hydra plugin (Hydra loads sweepers from the ``hydra_plugins`` package only, found
on ``sys.path``: the checkout's root, from which ``train.py`` runs): the resumable Optuna sweeper of
``hydra/sweeper=optuna_study``."""

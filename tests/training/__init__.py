"""Tests of the experiment framework: train.py, training/, the Hydra plugins (sweeps, the Optuna study)."""

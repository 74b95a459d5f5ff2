"""What several test modules share, so that none imports another, by what it is about:
``references`` (the math tests' tolerance and float64 references), ``records`` (reading what a run
writes: metrics.csv, checkpoints, wandb's offline record, markdown tables), ``runs`` (``python
train.py`` as a user runs it, the fast settings, the interrupted run and its twin), ``data``
(stand-in MNIST and CIFAR10 files), ``devices`` (the devices a test runs on) and ``hooks`` (callbacks
a test adds to a run by a config override). Fixtures are in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"  # data files the tests read (tests/fixtures/make_projunn_state.py made one)

"""Benchmarks, reports and checks, run from the repository root. Those that use the experiment code
(``tasks``, ``training``: not installed, importable from the root) run as modules:
``python -m scripts.bench_rnn``, ``python -m scripts.bench_conv``, ``python -m scripts.lockstep``;
the others also as files (``python scripts/report.py``)."""

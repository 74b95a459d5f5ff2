"""The project's commands, grouped by job: ``results/`` (run records into tables and curves),
``reproduction/`` (the presets beside the authors' code), ``bench/`` (timings). Each runs from the
repository root as ``python -m scripts.GROUP.NAME`` (``--help``); ``python -m scripts`` lists them.
They import each other package-relative and the experiment code (``tasks``, ``training``: not
installed, importable from the root) by name."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root

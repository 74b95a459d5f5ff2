"""Benchmarks, reports and checks, run from the repository root as modules: ``python -m scripts.NAME``
(``--help`` for each); ``python -m scripts`` lists them. They import each other package-relative
(``from .timing import interleaved``) and the experiment code (``tasks``, ``training``: not installed,
importable from the root) by name."""

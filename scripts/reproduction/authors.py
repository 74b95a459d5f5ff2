"""The projUNN authors' code, for the scripts that run it beside ours (``lockstep``, ``side_by_side``):
the pinned commits of github.com/facebookresearch/projUNN, their files extracted from a checkout by
``git archive``, their package imported under another name, and the one-line error when the checkout
is missing or unusable."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import subprocess
import sys
import tarfile
import types
from pathlib import Path

PMNIST_COMMIT, SEQUENCE_COMMIT = "437eb05", "5285b00"
PINNED = {
    PMNIST_COMMIT: ("permuted_mnist.py", "convolutional_experiment.py", "projunn"),
    SEQUENCE_COMMIT: ("copy_task.py", "adding_task.py", "projunn"),
}
NEEDS = (
    "needs --authors PATH, a git checkout of github.com/facebookresearch/projUNN holding commits "
    f"{PMNIST_COMMIT} and {SEQUENCE_COMMIT} (git clone https://github.com/facebookresearch/projUNN)"
)


class NeedsAuthors(Exception):
    """The authors' checkout is missing or unusable; the message says why."""


def extract(authors: Path | None, dest: Path) -> dict[str, Path]:
    """``{commit: folder}``: each pinned commit's files, written by ``git archive`` under ``dest``."""
    if authors is None:
        raise NeedsAuthors("no --authors given")
    if not authors.exists():
        raise NeedsAuthors(f"{authors} does not exist")
    git = ["git", "-C", str(authors)]
    probe = subprocess.run([*git, "rev-parse", "--git-dir"], capture_output=True, text=True)
    if probe.returncode:
        raise NeedsAuthors(f"{authors} is not a git checkout")
    folders = {}
    for commit, paths in PINNED.items():
        found = subprocess.run([*git, "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
        if found.returncode:
            raise NeedsAuthors(f"{authors} has no commit {commit} (not the authors' repository, or a shallow clone)")
        archive = subprocess.run([*git, "archive", "--format=tar", commit, *paths], capture_output=True)
        if archive.returncode:
            raise NeedsAuthors(f"{authors} at {commit} lacks {', '.join(paths)}")
        folder = dest / commit
        folder.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        folders[commit] = folder
    return folders


def import_package(folder: Path, name: str) -> types.ModuleType:
    """Their ``projunn`` package (``folder/projunn``) imported as ``name``, with ``layers`` loaded."""
    spec = importlib.util.spec_from_file_location(
        name, folder / "projunn" / "__init__.py", submodule_search_locations=[str(folder / "projunn")]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    importlib.import_module(f"{name}.layers")
    return package


def script_definitions(path: Path, names: tuple[str, ...], namespace: dict) -> dict:
    """Execute the top-level ``def``/``class`` statements called ``names`` of a script in ``namespace``."""
    tree = ast.parse(path.read_text())
    chosen = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name in names]
    missing = set(names) - {n.name for n in chosen}
    if missing:
        raise NeedsAuthors(f"{path.name} defines no {', '.join(sorted(missing))}")
    exec(compile(ast.Module(body=chosen, type_ignores=[]), str(path), "exec"), namespace)
    return namespace

"""README.md stays true: its Python example runs, and its train.py commands compose."""
from __future__ import annotations

import re
import shlex

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def train_commands() -> list[list[str]]:
    commands = []
    for line in README.splitlines():
        if "python train.py" in line:
            command = line.split("python train.py", 1)[1].split("#", 1)[0].split("`", 1)[0]
            words = shlex.split(command)
            commands.append(words)
    return commands


@pytest.mark.parametrize("words", train_commands(), ids=lambda w: " ".join(w) or "default")
def test_train_commands_compose(compose_cfg, words):
    overrides = []
    for word in words:
        if word in ("-m", "--multirun") or word.startswith(("hydra/", "hydra.")):
            continue  # launcher choices are checked in test_reliability / by Hydra itself
        key, _, value = word.partition("=")
        if "<" in value:
            continue  # a placeholder such as <run dir>
        overrides.append(f"{key}={value.split(',')[0]}")  # a sweep: its first point
    cfg = compose_cfg(*overrides)
    assert cfg.task and cfg.model and cfg.optim

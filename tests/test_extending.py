"""docs/extending.md, executed: its task (the module and the config, taken from the page's own code
blocks) trains with the page's command in a temporary copy of the repository, and its projector
example keeps a matrix unitary. (The task interface and a task that lacks one of its members:
tests/tasks/test_tasks.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.records import read_metrics
from tests.helpers.runs import ENV, TIMEOUT_S

PAGE = (ROOT / "docs" / "extending.md").read_text()


def block_after(marker: str, language: str) -> str:
    """The first ``language`` code block after ``marker`` on the page."""
    match = re.search(re.escape(marker) + r".*?```" + language + r"\n(.*?)```", PAGE, re.S)
    assert match, f"docs/extending.md has no {language} block after {marker!r}"
    return match.group(1)


@pytest.mark.integration
def test_the_worked_task_trains_from_its_module_and_its_config_alone(tmp_path):
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".git", ".venv*", "outputs", "data", "site", "__pycache__", "*.egg-info")
    shutil.copytree(ROOT, copy, ignore=ignore)
    (copy / "tasks" / "parity.py").write_text(block_after("`tasks/parity.py`:", "python"))
    (copy / "conf" / "task" / "parity.yaml").write_text(block_after("`conf/task/parity.yaml`", "yaml"))
    command = block_after("Then it trains like any other task", "bash").split()
    assert command[:3] == ["python", "train.py", "task=parity"]
    run_dir = tmp_path / "run"
    args = [*command[2:], "trainer.max_steps=6", "trainer.val_check_interval=3", "logger=csv"]
    args += ["trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=copy, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(run_dir)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 6 and all(0 < v < 5 for v in losses)
    baselines = [float(r["train/baseline"]) for r in rows if r.get("train/baseline")]
    assert baselines and all(b == pytest.approx(0.693147, abs=1e-5) for b in baselines)
    assert max(float(r["unitarity/max_error"]) for r in rows if r.get("unitarity/max_error")) < 1e-5
    assert any(r.get("test/acc") for r in rows)


def test_the_projector_example_keeps_the_matrix_unitary_and_trains_it():
    namespace: dict = {}
    exec(block_after("the polar projection by an SVD:", "python"), namespace)  # its own asserts: unitary, trained
    assert namespace["opt"].state_dict()["state"]  # the base optimizer stepped

"""What a run shows its user (training/console.py, training.summary.describe): a console without
meaningless counts or upstream noise, an end summary after every sitting and one line per job of a
sweep, train.log holding the run's story. (``import projunn`` without torch's compiler:
tests/library/test_compile.py.)"""

from __future__ import annotations

import pytest

from tests.helpers.runs import ENV, run_sweep, run_train
from training.summary import describe, one_line

SUMMARY = {
    "command": "python train.py task=copy",
    "run_dir": "outputs/runs/x",
    "status": "finished",
    "steps": {"done": 1500, "of": 1500},
    "epochs": {"done": 3, "of": None},
    "final": {"val/loss": 0.02, "test/acc": 0.9956, "test/acc_best": 0.9956, "test/loss": 0.0123, "train/loss": 0.1},
    "best": {"val/loss": 0.015, "test/acc": 0.9956},
    "median_step_s": 0.0914,
    "max_unitarity_error": 3.1e-6,
}


def test_the_end_summary_says_where_what_and_what_next():
    lines = describe(SUMMARY, "val/loss")
    assert lines[0] == "run outputs/runs/x: finished, 1,500 of 1,500 steps"
    assert (
        "val/loss 0.02 (best 0.015)" in lines[1] and "test/acc 99.56 %" in lines[1] and "test/loss 0.0123" in lines[1]
    )
    assert "acc_best" not in lines[1] and "train/" not in lines[1]
    assert lines[2] == "  max unitarity error 3.1e-06 · median step 91 ms"
    assert any("python -m scripts.results.compare outputs/runs/x" in line for line in lines[3:])
    unfinished = describe({**SUMMARY, "status": "unfinished", "steps": {"done": 700, "of": 1500}}, "test/acc")
    assert unfinished[0] == "run outputs/runs/x: unfinished, 700 of 1,500 steps"
    assert "test/acc 99.56 %" in unfinished[1] and "best" not in unfinished[1]  # the metric is a test metric: once
    assert unfinished[-1].split() == [
        "continue",
        "it:",
        "python",
        "train.py",
        "task=copy",
        "hydra.run.dir=outputs/runs/x",
    ]
    epochs = describe({**SUMMARY, "steps": {"done": 938, "of": 938}, "epochs": {"done": 2, "of": 2}}, "val/loss")
    assert epochs[0].endswith("938 of 938 steps, 2 of 2 epochs")
    assert one_line(SUMMARY, "val/loss").startswith("finished, 1,500 of 1,500 steps · val/loss 0.02 (best 0.015)")


NOISE = ["Epoch 0/-", "FLOPs", "anonymous", "Tip:", "LeafSpec", "No CUDA runtime", "Traceback"]


@pytest.mark.integration
def test_a_run_tells_its_story_on_the_console_and_in_train_log(tmp_path):
    """As README's first command runs (progress bar, wandb offline), at a few steps: none of the
    noise above; the last lines give the run directory, the test metric and the unitarity error;
    train.log holds what was composed and the end summary."""
    env = {k: v for k, v in ENV.items() if k != "WANDB_MODE"}
    overrides = ["task=copy", "task.T=10", "trainer.max_steps=6", "trainer.val_check_interval=3"]
    overrides += ["logger=default", "logger.wandb.mode=offline", "trainer.enable_progress_bar=true"]
    run_dir = tmp_path / "run"
    result = run_train(*overrides, run_dir=run_dir, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in output, (noise, output[-3000:])
    last = result.stdout.strip().splitlines()[-5:]
    assert last[0] == f"run {run_dir}: finished, 6 of 6 steps", last
    assert "test/acc" in last[1] and "max unitarity error" in last[2], last
    log = (run_dir / "train.log").read_text()
    assert "overrides: " in log and "composed: " in log and "model: SequenceModel" in log
    assert "training started" in log and f"run {run_dir}: finished" in log and "max unitarity error" in log


@pytest.mark.integration
def test_a_sweep_ends_with_one_line_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep("debug=tiny", "task=adding", "task.T=10", "k=1,2", sweep_dir=sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    start = lines.index(f"sweep {sweep}: 2 jobs")
    assert lines[start + 1].startswith(f"  {sweep}/0_") and ": finished, 3 of 3 steps · val/loss" in lines[start + 1]
    assert lines[start + 2].startswith(f"  {sweep}/1_") and "max unitarity error" in lines[start + 2]
    assert lines[start + 3] == f"  curves and table: python -m scripts.results.compare {sweep}"

"""Make run directories ready to keep in git: metrics thinned, diagnostics compacted, a finished run's
checkpoints deleted, no absolute path of this machine (docs/reliability.md, "Run records").

    python -m scripts.results.record outputs/paper/adding_T200 [more run directories]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from training.diagnostics import FILE as DIAGNOSTICS
from training.record import METRICS, SUMMARY, cut_torn_tail, make_portable, read_summary, write_text_atomic
from training.run_dir import LAST, LOCK, PREVIOUS, RunDirLock
from training.summary import compact_diagnostics, stride, thin_metrics


def held_by_git(run_dir: Path) -> list[Path]:
    """The files of ``run_dir`` that ``.gitignore`` lets git hold."""
    run_dir = run_dir.resolve()
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and "wandb" not in p.relative_to(run_dir).parts)
    if not files:
        return []
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=run_dir,
        input="\n".join(str(p) for p in files),
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return [p for p in files if str(p) not in set(ignored)]


def record(run_dir: Path) -> str:
    """Thin and clean one run directory; returns a line saying what git holds of it."""
    summary_path = run_dir / SUMMARY
    if not summary_path.is_file() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such directory")
    if not summary_path.is_file():
        raise ValueError(f"{run_dir} holds no {SUMMARY}: not a run directory, or its run has not ended a sitting")
    lock = RunDirLock(run_dir)
    lock.acquire()  # RunDirectoryBusy while a training process writes there
    try:
        summary = read_summary(run_dir)  # DamagedRecord (one line naming the file) if it cannot be read
        for appended in (run_dir / METRICS, run_dir / DIAGNOSTICS):
            cut_torn_tail(appended)
        planned = summary["steps"]["of"] or summary["steps"]["done"]
        every = stride(planned)
        before, after = thin_metrics(run_dir / METRICS, every) if (run_dir / METRICS).is_file() else (0, 0)
        summary["metrics_rows"], summary["metrics_every"] = after, every
        if (run_dir / DIAGNOSTICS).is_file():
            compact_diagnostics(run_dir / DIAGNOSTICS)
        write_text_atomic(summary_path, json.dumps(summary, indent=1) + "\n")
        make_portable(run_dir)  # no absolute path of this machine in what git keeps
        if summary["status"] == "finished":
            for name in (LAST, PREVIOUS):
                (run_dir / name).unlink(missing_ok=True)
    finally:
        lock.release()
    held = [p for p in held_by_git(run_dir) if p.name != LOCK]
    size = sum(p.stat().st_size for p in held)
    kept = "every step" if every == 1 else f"one step in {every}"
    return (
        f"{run_dir}: {summary['status']}, step {summary['steps']['done']} of {planned}; metrics.csv {before} -> "
        f"{after} rows ({kept} kept); git holds {len(held)} files, {size / 1e6:.2f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args()
    failed = False
    for run_dir in args.run_dirs:
        try:
            print(record(run_dir))
        except (ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""pMNIST at equal budget, over seeds: the authors' ``permuted_mnist.py`` beside ``experiment=pmnist``.

    python scripts/seed_spread.py --authors PATH --data-root DIR                 # 3 seeds x 3 epochs, D and T
    python scripts/seed_spread.py --authors PATH --data-root DIR --jobs 2 --threads 1
    python scripts/seed_spread.py --authors PATH --out DIR --report              # the table from what has run

One run of either code says little: test accuracy after an epoch moves by about ten points
between seeds on both sides. So each code runs once per seed (``--seeds``, default 0 1 2) for
``--epochs`` epochs (default 3), for projUNN-D and projUNN-T (``--projectors``), and the table
gives, after every epoch, the mean ± sample standard deviation and the range over the seeds of
each code, side by side, and whether the preset's mean lies inside the range of the authors' runs.

The authors' side: ``PATH`` is a git checkout of github.com/facebookresearch/projUNN (any commit;
nothing of it is copied into this project). Their ``permuted_mnist.py`` and ``projunn/`` are taken
at 437eb05 (the commit docs/reproduction.md pins) by ``git archive`` into ``OUT/authors``, and the
script is changed by the replacements in ``PATCHES`` only, each listed with its reason: a seed, an
epoch count and a data folder from the command line, torchmetrics' current ``Accuracy`` signature,
a step timer and, with ``--device cpu``, no ``.cuda()``. Everything else (model, initialisation,
RMSprop, LSI sketch, projUNN-D/T, data order) is theirs, run as
``python permuted_mnist.py --permute --projector projUNND|projUNNT --seed S``.

The preset's side: ``python train.py experiment=pmnist [optim=projunn_t] seed=S
trainer.max_epochs=E``, one run directory per run (``OUT/ours_D_s0``...).

Every run writes into ``OUT`` (default ``outputs/reproduction/pmnist_spread``); a run that has
finished is not run again, so the same command continues an interrupted spread: ours resume from
their checkpoint, an unfinished run of the authors' script (which cannot resume) starts over.
``--jobs`` runs go at once, each with ``--threads`` threads (one thread each is the fastest use
of a small CPU: this model's step is many small kernels). The table goes to standard output and
``OUT/spread.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lockstep import NEEDS, PMNIST_COMMIT, NeedsAuthors, extract

ROOT = Path(__file__).resolve().parents[1]
PROJECTORS = {"D": ("projunn_d", "projUNND"), "T": ("projunn_t", "projUNNT")}

# (what, replacement, why): applied to their permuted_mnist.py at 437eb05, each exactly once.
PATCHES = [
    (
        'parser.add_argument("--rank", type=int, default=1)\n',
        'parser.add_argument("--rank", type=int, default=1)\n'
        'parser.add_argument("--seed", type=int, default=5544)\n'
        'parser.add_argument("--data_root", type=str, default="./mnist")\n',
        "a seed and the MNIST folder from the command line",
    ),
    (
        "torch.manual_seed(5544)\nnp.random.seed(5544)",
        "torch.manual_seed(args.seed)\nnp.random.seed(args.seed)",
        "seed",
    ),
    ('"./mnist", train=True, download=True', "args.data_root, train=True, download=False", "data folder, no download"),
    ('"./mnist", train=False', "args.data_root, train=False", "data folder"),
    (
        "torchmetrics.Accuracy(compute_on_step=False)",
        'torchmetrics.Accuracy(task="multiclass", num_classes=10)',
        "torchmetrics >= 0.11 removed compute_on_step and needs the task",
    ),
    (
        "for epoch in range(100):",
        "for epoch in range(args.epochs):",
        "their loop runs 100 epochs whatever --epochs says; here --epochs",
    ),
    ("import torchmetrics\n", "import torchmetrics\nimport time\n", "step timer"),
    (
        "            predictions = model(batch_x)\n",
        "            t0 = time.perf_counter()\n            predictions = model(batch_x)\n",
        "step timer: forward, backward and update",
    ),
    (
        "                scheduler.step()\n",
        '                scheduler.step()\n                print("step_time", time.perf_counter() - t0)\n',
        "step timer",
    ),
    (
        'print("Test set accuracy: ", accuracy.compute())',
        'print("Test set accuracy: ", accuracy.compute().item(), "epoch", epoch + 1, flush=True)',
        "parseable",
    ),
]
CPU_PATCHES = [(".cuda()", "", "runs on the CPU"), ('device="cuda"', 'device="cpu"', "runs on the CPU")]
TEST_LINE = re.compile(r"Test set accuracy:\s+(?:tensor\()?([0-9.]+)\)? epoch (\d+)")


def patched_script(authors: Path, out: Path, device: str) -> Path:
    """Their ``permuted_mnist.py`` at 437eb05 with ``PATCHES`` applied, in ``out/authors``."""
    folder = out / "authors"
    script = folder / "permuted_mnist.py"
    if not script.exists():
        with tempfile.TemporaryDirectory() as tmp:
            source = extract(authors, Path(tmp))[PMNIST_COMMIT]
            text = (source / "permuted_mnist.py").read_text()
            for old, new, why in PATCHES + (CPU_PATCHES if device == "cpu" else []):
                count = text.count(old)
                if old != ".cuda()" and count != 1:
                    raise NeedsAuthors(
                        f"permuted_mnist.py at {PMNIST_COMMIT} holds {old!r} {count} times, not once ({why})"
                    )
                text = text.replace(old, new)
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-r", str(source / "projunn"), str(folder)], check=True)
            script.write_text(text)
    return script


def authors_accuracies(log: Path) -> list[float]:
    """Test accuracy (%) after each epoch, from a log of their patched script."""
    text = log.read_text() if log.exists() else ""
    return [100 * float(acc) for acc, _ in TEST_LINE.findall(text)]


def ours_accuracies(run_dir: Path) -> list[float]:
    """Test accuracy (%) after each epoch, from the run directory's metrics.csv."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [100 * float(row["test/acc"]) for row in csv.DictReader(f) if row.get("test/acc")]


def median_step(code: str, path: Path) -> float | None:
    """Median seconds per training step (their timer; our ``time/step_s``)."""
    if code == "authors":
        times = [float(t) for t in re.findall(r"step_time ([0-9.e-]+)", path.read_text())] if path.exists() else []
    else:
        rows = list(csv.DictReader((path / "metrics.csv").open())) if (path / "metrics.csv").exists() else []
        times = [float(r["time/step_s"]) for r in rows if r.get("time/step_s")]
    return statistics.median(times) if times else None


def run_one(code: str, projector: str, seed: int, args: argparse.Namespace, script: Path | None) -> str:
    name = f"{code}_{projector}_s{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if code == "authors":
        log = args.out / f"{name}.log"
        if len(authors_accuracies(log)) >= args.epochs:
            return f"{name}: done"
        command = [
            sys.executable,
            script.name,
            "--permute",
            "--projector",
            PROJECTORS[projector][1],
            "--seed",
            str(seed),
            "--epochs",
            str(args.epochs),
            "--data_root",
            str(args.data_root),
        ]
        cwd = script.parent
    else:
        run_dir = args.out / name
        if len(ours_accuracies(run_dir)) >= args.epochs:
            return f"{name}: done"
        log = args.out / f"{name}.log"
        command = [
            sys.executable,
            "train.py",
            "experiment=pmnist",
            f"optim={PROJECTORS[projector][0]}",
            f"seed={seed}",
            f"data_root={args.data_root}",
            f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
        ]
        command += ["trainer=gpu"] if args.device == "cuda" else []
        cwd = ROOT
    with log.open("w") as f:
        status = subprocess.run(command, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    return f"{name}: exit {status} (log {log})"


def spread(values: list[float]) -> str:
    if not values:
        return "—"
    std = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.1f}{std} (n = {len(values)}; {min(values):.1f}–{max(values):.1f})"


def table(args: argparse.Namespace) -> str:
    lines = []
    for projector in args.projectors:
        runs = {
            code: {
                s: (
                    authors_accuracies(args.out / f"{code}_{projector}_s{s}.log")
                    if code == "authors"
                    else ours_accuracies(args.out / f"{code}_{projector}_s{s}")
                )
                for s in args.seeds
            }
            for code in ("authors", "ours")
        }
        steps = {
            code: [
                t
                for s in args.seeds
                if (
                    t := median_step(
                        code,
                        args.out
                        / (f"{code}_{projector}_s{s}.log" if code == "authors" else f"{code}_{projector}_s{s}"),
                    )
                )
                is not None
            ]
            for code in ("authors", "ours")
        }
        lines += [
            f"projUNN-{projector} (k = 1, n = 170), test accuracy % after each epoch, seeds "
            f"{', '.join(map(str, args.seeds))}: mean ± std (n; min–max)",
            "",
            "| epoch | authors' permuted_mnist.py | experiment=pmnist | preset's mean inside the authors' range? |",
            "|---|---|---|---|",
        ]
        for epoch in range(args.epochs):
            theirs = [acc[epoch] for acc in runs["authors"].values() if len(acc) > epoch]
            ours = [acc[epoch] for acc in runs["ours"].values() if len(acc) > epoch]
            inside = "—"
            if len(theirs) > 1 and ours:
                inside = "yes" if min(theirs) <= statistics.mean(ours) <= max(theirs) else "no"
            lines.append(f"| {epoch + 1} | {spread(theirs)} | {spread(ours)} | {inside} |")
        lines += [
            "",
            "median step (s), per run: authors "
            + ", ".join(f"{t:.2f}" for t in steps["authors"])
            + "; preset "
            + ", ".join(f"{t:.2f}" for t in steps["ours"]),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors", type=Path, help="a git checkout of facebookresearch/projUNN")
    parser.add_argument("--data-root", type=Path, help="the folder holding MNIST/raw (torchvision's layout)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/reproduction/pmnist_spread")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--projectors", nargs="+", choices=sorted(PROJECTORS), default=["D", "T"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--report", action="store_true", help="only print the table from what has run")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if not args.report:
        if args.data_root is None or not (args.data_root / "MNIST" / "raw").is_dir():
            print(f"seed_spread.py: needs --data-root DIR with MNIST/raw in it, got {args.data_root}", file=sys.stderr)
            return 2
        args.data_root = args.data_root.resolve()
        try:
            script = patched_script(args.authors, args.out, args.device)
        except NeedsAuthors as error:
            print(f"seed_spread.py: {error}; {NEEDS}", file=sys.stderr)
            return 2
        # Codes alternate within each seed, so the two sides share the machine's state at every moment.
        jobs = [(code, p, s) for p in args.projectors for s in args.seeds for code in ("authors", "ours")]
        with ThreadPoolExecutor(args.jobs) as pool:
            for line in pool.map(lambda job: run_one(*job, args, script), jobs):
                print(line, flush=True)
    report = table(args)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spread.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The authors' scripts beside the paper presets at equal budget, over seeds: pMNIST and CIFAR10, each
code once per seed and variant, the test accuracies tabulated side by side (docs/reproduction.md,
"Side by side over seeds, at equal budget").

    python -m scripts.reproduction.side_by_side pmnist --authors PATH --data-root DIR   # 3 seeds x 3 epochs, D and T
    python -m scripts.reproduction.side_by_side pmnist --report                         # the table from what has run
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from training.record import metric_rows, portable
from training.run_dir import RunDirectoryBusy, RunDirLock

from .. import ROOT
from ..results.compare import t_interval
from ..tables import head, row
from .authors import NEEDS, PMNIST_COMMIT, NeedsAuthors, extract

# (what, replacement, why): each applied to the authors' script at 437eb05, and found exactly once.
CPU = [(".cuda()", "", "runs on the CPU"), ('device="cuda"', 'device="cpu"', "runs on the CPU")]
ACCURACY = (
    "torchmetrics.Accuracy(compute_on_step=False)",
    'torchmetrics.Accuracy(task="multiclass", num_classes=10)',
    "torchmetrics >= 0.11 removed compute_on_step and needs the task",
)
PMNIST_PATCHES = [
    (
        'parser.add_argument("--rank", type=int, default=1)\n',
        'parser.add_argument("--rank", type=int, default=1)\n'
        'parser.add_argument("--seed", type=int, default=5544)\n'
        'parser.add_argument("--data_root", type=str, default="./mnist")\n'
        'parser.add_argument("--steps", type=int, default=None)\n',
        "seed, MNIST folder and a step limit from the command line (their seed, 5544, by default)",
    ),
    ("torch.manual_seed(5544)\nnp.random.seed(5544)",
     "torch.manual_seed(args.seed)\nnp.random.seed(args.seed)", "seed"),
    ('"./mnist", train=True, download=True', "args.data_root, train=True, download=False", "data folder"),
    ('"./mnist", train=False', "args.data_root, train=False", "data folder"),
    ACCURACY,
    ("for epoch in range(100):",
     "for epoch in range(args.epochs if args.steps is None else -(-args.steps // len(train_loader))):",
     "their loop ignores --epochs (runs 100); with a step limit, the epochs that hold its steps"),
    ("        for batch_idx, (batch_x, batch_y) in enumerate(train_loader):\n",
     "        for batch_idx, (batch_x, batch_y) in enumerate(train_loader):\n"
     "            if args.steps is not None and epoch * len(train_loader) + batch_idx >= args.steps:\n"
     "                break\n", "step limit"),
    ("import torchmetrics\n", "import torchmetrics\nimport time\n", "step timer"),
    ("            predictions = model(batch_x)\n", "            t0 = time.perf_counter()\n"
     "            predictions = model(batch_x)\n", "step timer: forward, backward and update"),
    ("                scheduler.step()\n", '                scheduler.step()\n                print("step_time", '
     "time.perf_counter() - t0)\n", "step timer"),
    ('print("Test set accuracy: ", accuracy.compute())',
     'print("Test set accuracy: ", accuracy.compute().item(), "epoch", epoch + 1, flush=True)', "parseable"),
]  # fmt: skip
CIFAR10_PATCHES = [
    (
        'parser.add_argument("--unitary", action="store_true")\n',
        'parser.add_argument("--unitary", action="store_true")\n'
        'parser.add_argument("--data_root", type=str, default="./")\n'
        'parser.add_argument("--epochs", type=int, default=None)\n'
        'parser.add_argument("--steps", type=int, default=None)\n'
        'parser.add_argument("--seed", type=int, default=None)\n',
        "data folder, epochs (theirs: 90), a step limit and a seed (theirs sets none) from the command line",
    ),
    ('"./", download=True, train=True', "args.data_root, download=False, train=True", "data folder, no download"),
    ('"./", download=True, train=False', "args.data_root, download=False, train=False", "data folder, no download"),
    ("train_loader, test_loader, epochs, channels, length = load_data(args.dataset)\n",
     "if args.seed is not None:\n    torch.manual_seed(args.seed)\n"
     "train_loader, test_loader, epochs, channels, length = load_data(args.dataset)\n"
     "epochs = args.epochs or epochs\n", "seed, epochs"),
    ACCURACY,
    ("import os\n", "import os\nimport time\n", "step timer"),
    ("    for iter, (images, labels) in enumerate(train_loader):\n",
     "    for iter, (images, labels) in enumerate(train_loader):\n"
     "        if args.steps is not None and iter >= args.steps:\n            break\n"
     "        t0 = time.perf_counter()\n", "step limit, step timer"),
    ("                param.data.add_(update)\n",
     "                param.data.add_(update)\n"
     '        print("step_time", time.perf_counter() - t0, "loss", loss.item(), flush=True)\n',
     "step timer: forward, backward and update; the loss of every step"),
    ("            if iter % 10 == 0:\n", "            if args.unitary and iter % 10 == 0:\n",
     "their check of the first layer's orthogonality reads a frequency matrix: without --unitary (the"
     " unconstrained ResNet9) it fails at step 0 on the 4-D kernel"),
]  # fmt: skip


@dataclass
class Task:
    script: str
    patches: list[tuple[str, str, str]]
    test_line: str  # a regex whose group is the test accuracy in [0, 1]
    loss_line: str  # a regex whose group is a training step's loss
    # name: (their flags, or the variant whose runs of theirs it is compared with, or None; our overrides)
    variants: dict[str, tuple[list[str] | str | None, list[str]]]
    seeds: list[int]
    epochs: int


TASKS = {
    "pmnist": Task(
        "permuted_mnist.py",
        PMNIST_PATCHES,
        r"Test set accuracy:\s+(?:tensor\()?([0-9.]+)\)? epoch \d+",
        r"\tLoss: (\S+)\t",
        {
            "D": (["--permute", "--projector", "projUNND"], ["experiment=pmnist", "optim=projunn_d"]),
            "T": (["--permute", "--projector", "projUNNT"], ["experiment=pmnist", "optim=projunn_t"]),
        },
        [0, 1, 2],
        3,
    ),
    "cifar10": Task(
        "convolutional_experiment.py",
        CIFAR10_PATCHES,
        r"epoch test accuracy ([0-9.]+)",
        r"step_time \S+ loss (\S+)",
        {
            "T": (["--dataset", "CIFAR10", "--unitary", "--projector", "projUNNT"], ["experiment=cifar10_projunn_t"]),
            "D": (["--dataset", "CIFAR10", "--unitary", "--projector", "projUNND"], ["experiment=cifar10_projunn_d"]),
            "resnet9": (["--dataset", "CIFAR10"], ["experiment=cifar10_resnet9"]),
            "cayley": (None, ["experiment=cifar10_cayley"]),
            # the preset with their RMSprop (g·g of complex gradients), against their T runs
            "T-AuthorsRMSprop": ("T", ["experiment=cifar10_projunn_t", "optim.base=AuthorsRMSprop"]),
        },
        [0],
        1,
    ),
}


def patched_script(task: Task, authors: Path, out: Path, device: str) -> Path:
    """The authors' ``task.script`` at 437eb05 with its patches applied, in ``out/authors``."""
    folder = out / "authors"
    script = folder / task.script
    if not script.exists():
        with tempfile.TemporaryDirectory() as tmp:
            source = extract(authors, Path(tmp))[PMNIST_COMMIT]
            text = (source / task.script).read_text()
            for old, new, why in task.patches + (CPU if device == "cpu" else []):
                if old != ".cuda()" and text.count(old) != 1:
                    raise NeedsAuthors(
                        f"{task.script} at {PMNIST_COMMIT} holds {old!r} {text.count(old)} times ({why})"
                    )
                text = text.replace(old, new)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source / "projunn", folder / "projunn", dirs_exist_ok=True)
            script.write_text(text)
    return script


@dataclass
class Run:
    """What one run left: test accuracy (%) after each evaluation, training losses, step times (s)."""

    accuracies: list[float]
    losses: list[float]
    steps: list[float]


def read_authors(task: Task, log: Path) -> Run:
    text = log.read_text() if log.exists() else ""
    accuracies = [100 * float(a) for a in re.findall(task.test_line, text)]
    losses = [float(loss) for loss in re.findall(task.loss_line, text)]
    return Run(accuracies, losses, [float(t) for t in re.findall(r"step_time (\S+)", text)])


def read_ours(run_dir: Path) -> Run:
    rows = metric_rows(run_dir)

    def column(key: str) -> list[float]:
        return [float(row[key]) for row in rows if row.get(key)]

    return Run([100 * a for a in column("test/acc")], column("train/loss"), column("time/step_s"))


def finished(run: Run, args: argparse.Namespace) -> bool:
    return len(run.accuracies) >= (1 if args.steps else args.epochs)


def run_one(code: str, variant: str, seed: int, args: argparse.Namespace, script: Path | None) -> str:
    name = f"{code}_{variant}_s{seed}"
    theirs, overrides = args.spec.variants[variant]
    log = args.out / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if code == "authors":
        if finished(read_authors(args.spec, log), args):
            return f"{name}: done"
        command = [sys.executable, script.name, *theirs, "--seed", str(seed), "--data_root", str(args.data_root)]
        command += ["--epochs", str(args.epochs)] + (["--steps", str(args.steps)] if args.steps else [])
        cwd = script.parent
    else:
        if finished(read_ours(args.out / name), args):
            return f"{name}: done"
        command = [sys.executable, "train.py", *overrides, f"seed={seed}", f"data_root={args.data_root}"]
        command += [f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false", "logger=csv"]
        command += [f"hydra.run.dir={args.out / name}"] + (["trainer=gpu"] if args.device == "cuda" else [])
        command += [f"trainer.max_steps={args.steps}"] if args.steps else []
        cwd = ROOT
    with log.open("w") as f:
        status = subprocess.run(command, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    log.write_text(portable(log.read_text()))  # the authors' log is their run's record in git: no path of here
    return f"{name}: exit {status} (log {log})"


def difference(theirs: list[float], ours: list[float]) -> str:
    """The preset's mean minus the authors', with its 95 % Welch interval where both sides have two runs."""
    if not theirs or not ours:
        return "—"
    diff, low, high, _ = t_interval(dict(enumerate(theirs)), dict(enumerate(ours)), paired=False)
    interval = "" if math.isnan(low) else f" [{low:+.1f}, {high:+.1f}]"
    return f"{diff:+.1f}{interval}"


def summary(values: list[float]) -> str:
    if not values:
        return "—"
    std = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.1f}{std} (n = {len(values)}; {min(values):.1f}–{max(values):.1f})"


def quarters(losses: list[float]) -> str:
    """A run's loss curve in one cell: the mean training loss over each quarter of its logged steps."""
    if len(losses) < 4:
        return "—"
    bounds = [i * len(losses) // 4 for i in range(5)]
    return ", ".join(f"{statistics.mean(losses[a:b]):.3f}" for a, b in zip(bounds, bounds[1:]))


def table(args: argparse.Namespace) -> str:
    evaluations = [f"step {args.steps}"] if args.steps else [f"epoch {e + 1}" for e in range(args.epochs)]
    lines = []
    for variant in args.variants:
        theirs_of = args.spec.variants[variant][0]
        theirs_of = theirs_of if isinstance(theirs_of, str) else variant  # whose authors' runs it faces
        runs = {
            "authors": [read_authors(args.spec, args.out / f"authors_{theirs_of}_s{s}.log") for s in args.seeds],
            "ours": [read_ours(args.out / f"ours_{variant}_s{s}") for s in args.seeds],
        }
        against = f" (the authors' runs of {theirs_of})" if theirs_of != variant else ""
        lines += [
            f"{args.task}, {variant}{against}: test accuracy %, seeds {' '.join(map(str, args.seeds))}: "
            "mean ± std (n; min–max); the difference of the means, preset − authors', with its 95 % "
            "Welch interval (the two codes draw different batches at one seed: not paired)",
            "",
            *head(
                ["after", "authors' script", "preset", "preset's mean inside the authors' range?", "preset − authors'"]
            ),
        ]
        for i, when in enumerate(evaluations):
            at = -1 if args.steps else i  # with a step limit: the test after its last step
            theirs = [r.accuracies[at] for r in runs["authors"] if len(r.accuracies) > max(at, 0)]
            ours = [r.accuracies[at] for r in runs["ours"] if len(r.accuracies) > max(at, 0)]
            inside = "—"
            if len(theirs) > 1 and ours:
                inside = "yes" if min(theirs) <= statistics.mean(ours) <= max(theirs) else "no"
            lines.append(row([when, summary(theirs), summary(ours), inside, difference(theirs, ours)]))
        for code, label in (("authors", "authors'"), ("ours", "preset's")):
            done = [r for r in runs[code] if r.steps]
            if done:
                lines.append(
                    f"\n{label} runs: median step "
                    + ", ".join(f"{statistics.median(r.steps):.2f}" for r in done)
                    + " s; last training loss "
                    + ", ".join(f"{r.losses[-1]:.3f}" if r.losses else "—" for r in done)
                    + "; training loss, mean over each quarter of the run: "
                    + "; ".join(quarters(r.losses) for r in done)
                )
        lines.append("")
    return "\n".join(lines)


def report(task: str, out: Path | None = None) -> str:
    """The table of what has run in ``out`` (default ``outputs/reproduction/<task>``) at the task's
    default seeds, epochs and variants: docs/reproduction.md's report blocks (``scripts.results.report
    --side-by-side``)."""
    return table(arguments([task, "--report"] + (["--out", str(out)] if out else [])))


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, each option left out filled from the task's defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--authors", type=Path, help="a git checkout of facebookresearch/projUNN")
    parser.add_argument("--data-root", type=Path, help="the data folder (torchvision's layout)")
    parser.add_argument("--out", type=Path, help="default: outputs/reproduction/<task>")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps", type=int, help="stop every run after this many training steps")
    parser.add_argument("--variants", nargs="+")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--report", action="store_true", help="only print the table from what has run")
    args = parser.parse_args(argv)
    args.spec = spec = TASKS[args.task]
    args.out = (args.out or ROOT / "outputs" / "reproduction" / args.task).resolve()
    args.seeds, args.epochs = args.seeds or spec.seeds, args.epochs or spec.epochs
    args.variants = args.variants or list(spec.variants)
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    spec = args.spec
    unknown = set(args.variants) - set(spec.variants)
    if unknown:
        expected = ", ".join(spec.variants)
        print(
            f"side_by_side.py: unknown variant {', '.join(sorted(unknown))}; expected one of {expected}",
            file=sys.stderr,
        )
        return 2
    if not args.report:
        if args.data_root is None or not args.data_root.is_dir():
            print(f"side_by_side.py: needs --data-root DIR holding the data set, got {args.data_root}", file=sys.stderr)
            return 2
        args.data_root = args.data_root.resolve()
        args.out.mkdir(parents=True, exist_ok=True)
        lock = RunDirLock(args.out)  # one comparison a folder: a second would rewrite the first's logs
        try:
            lock.acquire()
            script = patched_script(spec, args.authors, args.out, args.device)
            # The codes alternate within each seed, so both sides share the machine's state at every moment.
            jobs = [
                (code, v, s)
                for v in args.variants
                for s in args.seeds
                for code in ("authors", "ours")
                if code == "ours" or isinstance(spec.variants[v][0], list)
            ]
            pool = ThreadPoolExecutor(args.jobs)
            try:
                for line in pool.map(lambda job: run_one(*job, args, script), jobs):
                    print(line, flush=True)
            finally:  # Ctrl-C: the runs under way end (their process group got it too), no further one starts
                pool.shutdown(cancel_futures=True)
        except RunDirectoryBusy as error:
            print(f"side_by_side.py: {error}", file=sys.stderr)
            return 2
        except NeedsAuthors as error:
            print(f"side_by_side.py: {error}; {NEEDS}", file=sys.stderr)
            return 2
        finally:
            lock.release()
    report = table(args)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training step of paper presets with and without ``compile=true``, through ``train.py`` itself:
runs of each taking turns, the median of each run's own ``time/step_s`` (docs/speed.md).

    python -m scripts.bench.compile                     # copy T=1000, adding T=200, pMNIST, CIFAR10 (fake)
    python -m scripts.bench.compile --presets copy_T1000 --steps 40 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from training.record import metric_rows

from .. import ROOT
from . import harness

PRESETS = ["copy_T1000", "adding_T200", "pmnist", "cifar10_projunn_t"]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "test=false"]


def child(overrides: list[str], fake_cifar: bool) -> None:
    """``train.py`` with these overrides in this process (random CIFAR10 images with ``fake_cifar``)."""
    if fake_cifar:
        import tasks.cifar10

        def random_images(root: object, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
            n = 50_000 if train else 10_000
            g = torch.Generator().manual_seed(int(train))
            images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
            return images, torch.randint(0, 10, (n,), generator=g)

        tasks.cifar10.load_cifar10 = random_images
    sys.argv = ["train.py", *overrides]
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")  # as `python train.py`, for Hydra's config path


def run(preset: str, compiled: bool, steps: int, fake_cifar: bool, run_dir: Path) -> list[float]:
    """The ``time/step_s`` column of one run."""
    overrides = [
        f"experiment={preset}",
        f"compile={str(compiled).lower()}",
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        f"checkpoint_every={10 * steps}",
        f"hydra.run.dir={run_dir}",
        *QUIET,
    ]
    command = [sys.executable, "-m", __spec__.name, "--child", *(["--fake-cifar"] if fake_cifar else [])]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run([*command, *overrides], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"error: {preset} compile={compiled} failed:\n{result.stderr[-3000:]}")
    return [float(row["time/step_s"]) for row in metric_rows(run_dir) if row.get("time/step_s")]


def main() -> None:
    parser = harness.parser(__doc__, device=False, rounds=1)
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    parser.add_argument("--skip", type=int, default=5, help="first steps of each run left out of the median")
    parser.add_argument("--fake-cifar", action="store_true", help="random images for the CIFAR10 presets")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        return child(overrides, args.fake_cifar)
    if args.skip >= args.steps:
        raise SystemExit(f"error: --skip {args.skip} leaves none of --steps {args.steps}")
    out = harness.Output(args.out)
    out(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps a run, ")
    out(f"median of steps {args.skip + 1}..{args.steps}, {args.rounds} run(s) of each", "")
    out.head(["preset", "eager s/step", "compile=true s/step", "compiled / eager", "compiled run's first step (s)"])
    for preset in args.presets:
        times: dict[bool, list[float]] = {False: [], True: []}
        first: list[float] = []
        for _ in range(args.rounds):
            for compiled in (False, True):
                with tempfile.TemporaryDirectory() as tmp:
                    column = run(preset, compiled, args.steps, args.fake_cifar, Path(tmp))
                times[compiled] += column[args.skip :]
                if compiled:
                    first.append(column[0])
        eager, compiled = statistics.median(times[False]), statistics.median(times[True])
        cells = [
            preset,
            f"{eager:.3f}",
            f"{compiled:.3f}",
            f"{compiled / eager:.2f}",
            f"{statistics.median(first):.1f}",
        ]
        out.row(cells)


if __name__ == "__main__":
    main()

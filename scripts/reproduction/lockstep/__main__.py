"""``python -m scripts.reproduction.lockstep``: the command line (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from training.record import portable

from ... import ROOT
from ..authors import NEEDS, NeedsAuthors, extract
from . import __doc__ as DOC
from . import table
from .samplers import SAMPLERS
from .specs import TASKS, Settings
from .streams import STREAMS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.reproduction.lockstep",
        description=DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--authors", type=Path, help="a git checkout of facebookresearch/projUNN")
    parser.add_argument("--tasks", nargs="+", choices=tuple(TASKS), default=list(TASKS))
    parser.add_argument("--steps", type=int, default=None, help="default 10 (3 for CIFAR10)")
    parser.add_argument("--batch", type=int, default=None, help="default 16 (8 for CIFAR10)")
    parser.add_argument("--seq-len", type=int, default=784, help="pMNIST steps per sequence")
    parser.add_argument("--copy-T", type=int, default=1000)
    parser.add_argument("--adding-T", type=int, default=200)
    parser.add_argument(
        "--image-size", type=int, default=None, help="CIFAR10's Gaussian images' side, a multiple of 4 (default 16)"
    )
    parser.add_argument(
        "--stream",
        choices=STREAMS,
        default="gaussian",
        help="CIFAR10's batches: Gaussian images, or the real training batches of the preset's run or of the "
        "authors' script (streams.py; --data-root holds cifar-10-batches-py)",
    )
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="both sides' precision")
    parser.add_argument("--sampler", choices=tuple(SAMPLERS), default=None, help="default topk (sketch for CIFAR10)")
    parser.add_argument(
        "--data-root", default=str(ROOT / "data"), help="folder holding MNIST/raw (and cifar-10-batches-py)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    if args.stream != "gaussian" and not any(TASKS[name].cifar for name in args.tasks):
        parser.error(f"--stream {args.stream}: a CIFAR10 stream, for the CIFAR10 tasks")
    try:
        settings = {name: Settings.resolve(args, TASKS[name]) for name in args.tasks}
    except ValueError as error:
        print(f"lockstep: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lockstep-") as tmp:
        try:
            folders = extract(args.authors, Path(tmp))
        except NeedsAuthors as error:
            print(f"lockstep: {NEEDS}; {error}", file=sys.stderr)
            return 2
        from .run import Lockstep  # Lightning and the training stack: seconds, after the refusals

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        # Their projUNN-D casts its complex 2 × 2 eigenvalues back to a real W's dtype (utils.py:225).
        warnings.filterwarnings("ignore", message="Casting complex values to real discards")
        results = []
        for name in args.tasks:
            task = TASKS[name]
            run = Lockstep(task, settings[name], folders[task.commit])
            info = run.info()
            print("\n" + "\n".join(table.header(info)))
            start, rows = time.perf_counter(), []
            for row in run.rows():
                rows.append(row)
                print("\n".join([*table.step_zero(row), table.cells(info, row)]), flush=True)
            results.append(run.result(rows, time.perf_counter() - start))
            print("\n".join(table.footer(results[-1])))
    if args.json:
        # no path of this machine in the record: the authors' checkout and data by placeholders, the file by name
        kept = {k: portable(str(v)) for k, v in vars(args).items()}
        kept.update(authors="<authors>" if args.authors else "None", json=args.json.name)
        args.json.write_text(json.dumps({"args": kept, "tasks": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

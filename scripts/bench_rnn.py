"""Time one copy-task training step (forward + backward + optimizer step) of the unitary RNN
trained by projUNN-T against torch.nn.RNN(nonlinearity="relu") of the same size, on the CPU.

    python scripts/bench_rnn.py --T 1000 --hidden 190 --batch 128

Both models are tasks.models.SequenceModel (same input map, same per-step readout, same loss);
the steps are interleaved and the medians compared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tasks/
from tasks.copy_memory import CopyMemory  # noqa: E402
from tasks.models import SequenceModel  # noqa: E402
from tasks.optim import build_optimizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=190)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(0)
    task = CopyMemory(T=args.T, batch_size=args.batch)
    x, y = task.make_batch(torch.Generator().manual_seed(0))
    setups = {
        "nn.RNN(relu) + RMSprop": ("rnn", dict(lr=7e-4)),
        "UnitaryRNN + projUNN-T k=1": ("unitary", dict(lr=7e-4, unitary_lr_scale=1 / 32, projector="T", rank=1)),
    }
    steps, parts = {}, {}
    for name, (cell, optim) in setups.items():
        model = SequenceModel(input_size=10, output_size=9, hidden_size=args.hidden, cell=cell, readout="all", init="henaff")
        optimizer = build_optimizer(model, base="RMSprop", **optim)
        timings = parts[name] = {"forward+backward": [], "update": []}

        def step(model=model, optimizer=optimizer, timings=timings) -> None:
            start = time.perf_counter()
            loss, _ = task.objective(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            middle = time.perf_counter()
            optimizer.step()
            timings["forward+backward"].append(middle - start)
            timings["update"].append(time.perf_counter() - middle)

        steps[name] = step
    for step in steps.values():
        step()  # warm-up
    for timings in parts.values():
        for values in timings.values():
            values.clear()
    for _ in range(args.reps):
        for step in steps.values():
            step()

    print(f"copy task T={args.T}, hidden {args.hidden}, batch {args.batch}, {torch.get_num_threads()} threads, median of {args.reps}")
    print("| model | forward+backward (s) | update (ms) | step (s) |")
    print("|---|---|---|---|")
    totals = {}
    for name, timings in parts.items():
        fb, up = statistics.median(timings["forward+backward"]), statistics.median(timings["update"])
        totals[name] = statistics.median([a + b for a, b in zip(timings["forward+backward"], timings["update"])])
        print(f"| {name} | {fb:.3f} | {up * 1e3:.2f} | {totals[name]:.3f} |")
    rnn, urnn = totals.values()
    print(f"ratio (projUNN-T step / nn.RNN step): {urnn / rnn:.2f}")


if __name__ == "__main__":
    main()

"""Time one training step (forward + backward + optimizer step) of the unitary RNN against
torch.nn.RNN(nonlinearity="relu") of the same size (cuDNN on a GPU), on the copy task and on
pixel-by-pixel MNIST, side by side.

    python -m scripts.bench_rnn                      # copy (T = 1000, n = 190) and pMNIST (T = 784, n = 170), batch 128
    python -m scripts.bench_rnn --device cuda
    python -m scripts.bench_rnn --task copy --T 200  # smaller

Models (all tasks.sequence_models.SequenceModel: the same input map, readout and loss): nn.RNN + RMSprop;
the unitary RNN + projUNN-T k = 1 with its fused recurrence (Note [fused recurrence] in
projunn/rnn.py, the default on CUDA) and with the step-by-step autograd loop (the default on the
CPU); expRNN (W = exp(A)) with the device's default. The steps are interleaved, each timed between
device synchronisations, and the medians compared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import projunn
from tasks.sequence_models import SequenceModel
from training.optim import build_optimizer

TASKS = {  # input size, output size, readout, nonlinearity, default T, default hidden size
    "copy": (10, 9, "all", "relu", 1000, 190),
    "pmnist": (1, 10, "last", "modrelu", 784, 170),
}
MODELS = {
    "nn.RNN(relu) + RMSprop": ("rnn", True, None, dict(lr=7e-4)),
    "UnitaryRNN, fused + projUNN-T k=1": (
        "unitary",
        True,
        None,
        dict(lr=7e-4, unitary_lr_scale=1 / 32, projector="T", rank=1),
    ),
    "UnitaryRNN, step loop + projUNN-T k=1": (
        "unitary",
        False,
        None,
        dict(lr=7e-4, unitary_lr_scale=1 / 32, projector="T", rank=1),
    ),
    "expRNN (the device's default)": ("unitary", None, "matrix_exp", dict(lr=7e-4, unitary_lr_scale=0.1)),
}


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def bench(task: str, T: int, hidden: int, batch: int, reps: int, device: torch.device) -> dict[str, dict[str, float]]:
    inputs, outputs, readout, nonlinearity, _, _ = TASKS[task]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, T, inputs, generator=g).to(device)
    y = torch.randint(0, outputs, (batch, T) if readout == "all" else (batch,), generator=g).to(device)
    steps, parts = {}, {}
    for name, (cell, fused, parametrization, optim) in MODELS.items():
        torch.manual_seed(0)
        model = SequenceModel(
            inputs, outputs, hidden, cell=cell, readout=readout, nonlinearity=nonlinearity, init="henaff"
        )
        if cell == "unitary":
            model.rnn.fused = fused
        if parametrization:
            projunn.parametrize(model, parametrization)
        model = model.to(device)
        optimizer = build_optimizer(model, base="RMSprop", parametrization=parametrization, **optim)
        timings = parts[name] = {"forward+backward": [], "update": []}

        def step(model=model, optimizer=optimizer, timings=timings) -> None:
            start = clock(device)
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten())
            optimizer.zero_grad()
            loss.backward()
            middle = clock(device)
            optimizer.step()
            timings["forward+backward"].append(middle - start)
            timings["update"].append(clock(device) - middle)

        steps[name] = step
    for step in steps.values():
        step()  # warm-up
    for timings in parts.values():
        for values in timings.values():
            values.clear()
    for _ in range(reps):
        for step in steps.values():
            step()
    return {
        name: {
            "forward+backward": statistics.median(t["forward+backward"]),
            "update": statistics.median(t["update"]),
            "step": statistics.median([a + b for a, b in zip(t["forward+backward"], t["update"])]),
        }
        for name, t in parts.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both")
    parser.add_argument("--T", type=int, help="sequence length (default: the task's, 1000 or 784)")
    parser.add_argument("--hidden", type=int, help="hidden size (default: the task's, 190 or 170)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    for task in TASKS if args.task == "both" else [args.task]:
        _, _, _, nonlinearity, T, hidden = TASKS[task]
        T, hidden = args.T or T, args.hidden or hidden
        results = bench(task, T, hidden, args.batch, args.reps, device)
        print(f"\n{task}: T={T}, hidden {hidden} ({nonlinearity}), batch {args.batch}, {where}, median of {args.reps}")
        print("| model | forward+backward (ms) | update (ms) | step (ms) | step / nn.RNN step |")
        print("|---|---|---|---|---|")
        reference = results["nn.RNN(relu) + RMSprop"]["step"]
        for name, r in results.items():
            print(
                f"| {name} | {r['forward+backward'] * 1e3:.1f} | {r['update'] * 1e3:.2f} | {r['step'] * 1e3:.1f} "
                f"| {r['step'] / reference:.2f} |"
            )


if __name__ == "__main__":
    main()

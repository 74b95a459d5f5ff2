"""Time one training step (forward + backward + optimizer step) of the unitary RNN against
torch.nn.RNN(nonlinearity="relu") of the same size (cuDNN on a GPU) and against the step's
arithmetic floor, side by side, on the copy, adding and pixel-by-pixel MNIST tasks.

    python -m scripts.bench_rnn                      # pMNIST, copy T = 1000 and adding T = 200, batch 128
    python -m scripts.bench_rnn --device cuda
    python -m scripts.bench_rnn --task copy --T 200  # smaller

Models (all tasks.sequence_models.SequenceModel: the same input map, readout and loss): nn.RNN + RMSprop;
the unitary RNN + projUNN-T k = 1 with the layer's default path (its fused recurrence, Note [fused
recurrence] in projunn/rnn.py, whose loop is C++ on the CPU, Note [compiled recurrence]), with the fused
node's PyTorch loop and with the step-by-step autograd loop; expRNN (W = exp(A)). The
floor is the step's matrix products alone, on data of the step's sizes: T products
``(B × n)(n × n)`` forward, T backward, and the ``(n × T·B)(T·B × n)`` weight-gradient product.
All are taken in turn, each timed between device synchronisations, and the medians compared.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import projunn
from tasks.sequence_models import SequenceModel
from training.optim import build_optimizer

from .timing import clock

TASKS = {  # input size, output size, readout, nonlinearity, default T, default hidden size, batch
    "pmnist": (1, 10, "last", "modrelu", 784, 170, 128),
    "copy": (10, 9, "all", "relu", 1000, 190, 128),
    "adding": (2, 1, "last", "relu", 200, 170, 50),
}
PROJUNN_T = dict(lr=7e-4, unitary_lr_scale=1 / 32, projector="T", rank=1)
MODELS = {  # cell, the unitary layer's path (None: its default), parametrization, optimizer settings
    "nn.RNN(relu) + RMSprop": ("rnn", None, None, dict(lr=7e-4)),
    "UnitaryRNN (default) + projUNN-T k=1": ("unitary", None, None, PROJUNN_T),
    "UnitaryRNN, PyTorch loop + projUNN-T k=1": ("unitary", "pytorch", None, PROJUNN_T),
    "UnitaryRNN, step loop + projUNN-T k=1": ("unitary", "steps", None, PROJUNN_T),
    "expRNN (the layer's default)": ("unitary", None, "matrix_exp", dict(lr=7e-4, unitary_lr_scale=0.1)),
}
FLOOR = "floor: the step's matrix products"


def take_path(rnn: torch.nn.Module, path: str | None) -> None:
    """The unitary layer's time loop: its default (None), the fused node's PyTorch loop, or step by step."""
    if path is not None:
        rnn.compiled, rnn.fused = False, path == "pytorch"


def floor_step(T: int, hidden: int, batch: int, device: torch.device):
    """The products a step of the recurrence cannot avoid, on data of its sizes: ``T`` products
    ``h Wᵀ`` forward, ``T`` products ``δ W`` backward, one weight-gradient product over all steps."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(hidden, hidden, generator=g).to(device)
    h = torch.randn(batch, hidden, generator=g).to(device)
    out = torch.empty(batch, hidden, device=device)
    states = torch.randn(T * batch, hidden, generator=g).to(device)

    def step() -> None:
        for _ in range(T):
            torch.mm(h, weight.T, out=out)
        for _ in range(T):
            torch.mm(h, weight, out=out)
        states.mT @ states

    return step


def bench(task: str, T: int, hidden: int, batch: int, reps: int, device: torch.device) -> dict[str, dict[str, float]]:
    inputs, outputs, readout, nonlinearity, _, _, _ = TASKS[task]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, T, inputs, generator=g).to(device)
    shape = (batch, T) if readout == "all" else (batch,)
    y = torch.randint(0, outputs, shape, generator=g).to(device) if outputs > 1 else torch.randn(batch, 1).to(device)
    loss_fn = torch.nn.functional.cross_entropy if outputs > 1 else torch.nn.functional.mse_loss
    steps, parts = {}, {}
    for name, (cell, path, parametrization, optim) in MODELS.items():
        torch.manual_seed(0)
        model = SequenceModel(
            inputs, outputs, hidden, cell=cell, readout=readout, nonlinearity=nonlinearity, init="henaff"
        )
        take_path(model.rnn, path)
        if parametrization:
            projunn.parametrize(model, parametrization)
        model = model.to(device)
        optimizer = build_optimizer(model, base="RMSprop", parametrization=parametrization, **optim)
        timings = parts[name] = {"forward+backward": [], "update": []}

        def step(model=model, optimizer=optimizer, timings=timings) -> None:
            start = clock(device)
            predictions = model(x)
            loss = loss_fn(predictions.flatten(0, -2), y.flatten() if outputs > 1 else y)
            optimizer.zero_grad()
            loss.backward()
            middle = clock(device)
            optimizer.step()
            timings["forward+backward"].append(middle - start)
            timings["update"].append(clock(device) - middle)

        steps[name] = step
    floor, floor_times = floor_step(T, hidden, batch, device), []
    for step in [*steps.values(), floor]:
        step()  # warm-up
    for timings in parts.values():
        for values in timings.values():
            values.clear()
    for _ in range(reps):
        for step in steps.values():
            step()
        start = clock(device)
        floor()
        floor_times.append(clock(device) - start)
    results = {
        name: {
            "forward+backward": statistics.median(t["forward+backward"]),
            "update": statistics.median(t["update"]),
            "step": statistics.median([a + b for a, b in zip(t["forward+backward"], t["update"])]),
        }
        for name, t in parts.items()
    }
    results[FLOOR] = {"step": statistics.median(floor_times)}
    return results


def profile(task: str, T: int, hidden: int, batch: int, device: torch.device, rows: int = 12) -> None:
    """Where one training step of the unitary RNN's default path and of its step-by-step loop goes:
    torch.profiler's operators by self time, after a warm-up step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    inputs, outputs, readout, nonlinearity, _, _, _ = TASKS[task]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, T, inputs, generator=g).to(device)
    y = torch.randint(0, max(outputs, 2), (batch,), generator=g).to(device)
    for name in [
        name for name, (cell, _, parametrization, _) in MODELS.items() if cell == "unitary" and not parametrization
    ]:
        _, path, _, optim = MODELS[name]
        torch.manual_seed(0)
        model = SequenceModel(inputs, max(outputs, 2), hidden, readout="last", nonlinearity=nonlinearity, init="henaff")
        take_path(model.rnn, path)
        model = model.to(device)
        optimizer = build_optimizer(model, base="RMSprop", **optim)

        def step(model=model, optimizer=optimizer) -> None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            step()
            clock(device)
        print(f"\n{task} ({readout} readout here), {name}: one step, operators by self time")
        print("```")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
        print("```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all")
    parser.add_argument("--T", type=int, help="sequence length (default: the task's, 784, 1000 or 200)")
    parser.add_argument("--hidden", type=int, help="hidden size (default: the task's, 170 or 190)")
    parser.add_argument("--batch", type=int, help="batch size (default: the task's, 128 or 50)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--profile", action="store_true", help="instead: torch.profiler's table of one step")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    for task in TASKS if args.task == "all" else [args.task]:
        _, _, _, nonlinearity, T, hidden, batch = TASKS[task]
        T, hidden, batch = args.T or T, args.hidden or hidden, args.batch or batch
        if args.profile:
            profile(task, T, hidden, batch, device)
            continue
        results = bench(task, T, hidden, batch, args.reps, device)
        print(f"\n{task}: T={T}, hidden {hidden} ({nonlinearity}), batch {batch}, {where}, median of {args.reps}")
        print("| model | forward+backward (ms) | update (ms) | step (ms) | step / nn.RNN step | step / floor |")
        print("|---|---|---|---|---|---|")
        reference, floor = results["nn.RNN(relu) + RMSprop"]["step"], results[FLOOR]["step"]
        for name, r in results.items():
            parts = f"{r['forward+backward'] * 1e3:.1f} | {r['update'] * 1e3:.2f}" if "update" in r else "— | —"
            print(
                f"| {name} | {parts} | {r['step'] * 1e3:.1f} | {r['step'] / reference:.2f} | {r['step'] / floor:.2f} |"
            )


if __name__ == "__main__":
    main()

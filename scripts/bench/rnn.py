"""One training step of the unitary RNN against torch.nn.RNN(nonlinearity="relu") and against the step's
arithmetic floor, side by side. On the copy, adding and pixel-by-pixel MNIST tasks' sizes; nn.RNN is
cuDNN's on a GPU (docs/speed.md).

    python -m scripts.bench.rnn                      # pMNIST, copy T = 1000 and adding T = 200
    python -m scripts.bench.rnn --task copy --T 200  # smaller
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import projunn
from projunn.rnn import BLOCK
from tasks.sequence_models import SequenceModel
from training.memory import keep_freed_memory
from training.optim import build_optimizer

from . import harness
from .harness import Clock, Output

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
FLOOR = "floor: the recurrence's matrix products"
FLOOR_ALL = "floor: all the step's matrix products"


def take_path(rnn: torch.nn.Module, path: str | None) -> None:
    """The unitary layer's time loop: its default (None), the fused node's PyTorch loop, or step by step."""
    if path is not None:
        rnn.compiled, rnn.fused = False, path == "pytorch"


def floor_steps(task: str, T: int, hidden: int, batch: int, device: torch.device) -> dict[str, Callable[[], None]]:
    """The products a step cannot avoid, on data of its sizes, into buffers allocated once. The
    recurrence's: ``T`` products ``h Wᵀ`` forward, ``T`` products ``δ W`` backward, one
    weight-gradient product over all steps. All the step's: those and the input map's and the
    readout's, forward and their weight gradients (and the readout's gradient of its input), over
    every step (the readout over the last step only where the task reads only that one), in blocks
    of ``BLOCK`` steps' rows as the recurrence does them (BLAS's fastest for few columns)."""
    inputs, outputs, readout, *_ = TASKS[task]
    g = torch.Generator().manual_seed(1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device)

    weight, h, out, states = randn(hidden, hidden), randn(batch, hidden), randn(batch, hidden), randn(T * batch, hidden)
    read = T * batch if readout == "all" else batch
    x, weight_ih, bias = randn(T * batch, inputs), randn(hidden, inputs), randn(hidden)
    weight_out, logits, grad_read = randn(outputs, hidden), randn(read, outputs), randn(read, hidden)
    grad_ih_t, grad_out = randn(inputs, hidden), randn(outputs, hidden)

    def recurrence() -> None:
        for _ in range(T):
            torch.mm(h, weight.T, out=out)
        for _ in range(T):
            torch.mm(h, weight, out=out)
        states.mT @ states

    def blocks(rows: int) -> list[slice]:  # BLOCK steps of rows per product, as the recurrence does them
        return [slice(start, start + BLOCK * batch) for start in range(0, rows, BLOCK * batch)]

    def everything() -> None:
        for r in blocks(T * batch):  # the input map, into the outputs' buffer
            torch.addmm(bias, x[r], weight_ih.T, out=states[r])
        recurrence()
        read_states = states[:read]
        for r in blocks(read):
            torch.mm(read_states[r], weight_out.T, out=logits[r])  # the readout
            torch.mm(logits[r], weight_out, out=grad_read[r])  # its gradient of the states
            grad_out.addmm_(logits[r].mT, read_states[r])  # its weight gradient
        for r in blocks(T * batch):
            grad_ih_t.addmm_(x[r].mT, states[r])  # the input map's weight gradient

    return {FLOOR: recurrence, FLOOR_ALL: everything}


def training_steps(
    task: str, T: int, hidden: int, batch: int, clock: Clock, names: list[str]
) -> dict[str, Callable[[], tuple[float, float]]]:
    """One training step of each named model on one batch of the task's shapes (its readout, loss and
    nonlinearity); a step returns the seconds of its forward+backward and of its update."""
    inputs, outputs, readout, nonlinearity, _, _, _ = TASKS[task]
    device = clock.device
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, T, inputs, generator=g).to(device)
    shape = (batch, T) if readout == "all" else (batch,)
    y = torch.randint(0, outputs, shape, generator=g).to(device) if outputs > 1 else torch.randn(batch, 1).to(device)
    loss_fn = torch.nn.functional.cross_entropy if outputs > 1 else torch.nn.functional.mse_loss
    steps = {}
    for name in names:
        cell, path, parametrization, optim = MODELS[name]
        torch.manual_seed(0)
        model = SequenceModel(
            inputs, outputs, hidden, cell=cell, readout=readout, nonlinearity=nonlinearity, init="henaff"
        )
        take_path(model.rnn, path)
        if parametrization:
            projunn.parametrize(model, parametrization)
        model = model.to(device)
        optimizer = build_optimizer(model, base="RMSprop", parametrization=parametrization, **optim)

        def step(model=model, optimizer=optimizer) -> tuple[float, float]:
            start = clock()
            predictions = model(x)
            loss = loss_fn(predictions.flatten(0, -2), y.flatten() if outputs > 1 else y)
            optimizer.zero_grad()
            loss.backward()
            middle = clock()
            optimizer.step()
            return middle - start, clock() - middle

        steps[name] = step
    return steps


def bench(task: str, T: int, hidden: int, batch: int, reps: int, clock: Clock) -> dict[str, dict[str, float]]:
    """Each model's median step and its parts, and each floor's median, taken in turn (after three
    warm-up steps each: kept freed memory settles into reused pages over the first steps)."""
    steps = training_steps(task, T, hidden, batch, clock, list(MODELS))
    floors = floor_steps(task, T, hidden, batch, clock.device)
    times = harness.interleaved_parts({**steps, **floors}, reps, clock, warmup=3)
    return {name: dict(zip(("step", "forward+backward", "update"), t)) for name, t in times.items()}


def profile(task: str, T: int, hidden: int, batch: int, clock: Clock, out: Output, rows: int = 12) -> None:
    """Where one training step of the unitary RNN's default path and of its step-by-step loop goes:
    torch.profiler's operators by self time, after three warm-up steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    names = [
        name for name, (cell, _, parametrization, _) in MODELS.items() if cell == "unitary" and not parametrization
    ]
    for name, step in training_steps(task, T, hidden, batch, clock, names).items():
        for _ in range(3):  # warm-up: kept freed memory settles into reused pages over the first steps
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if clock.device.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            step()
            clock()
        out("", f"{task}, {name}: one step, operators by self time", "```")
        out(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), "```")


def main() -> None:
    parser = harness.parser(__doc__, reps=10)
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all")
    parser.add_argument("--T", type=int, help="sequence length (default: the task's, 784, 1000 or 200)")
    parser.add_argument("--hidden", type=int, help="hidden size (default: the task's, 170 or 190)")
    parser.add_argument("--batch", type=int, help="batch size (default: the task's, 128 or 50)")
    parser.add_argument("--profile", action="store_true", help="instead: torch.profiler's table of one step")
    parser.add_argument(
        "--unmap-freed-memory",
        action="store_true",
        help="leave glibc's malloc at its default (large tensors mapped fresh every step) instead of train.py's "
        "keep_freed_memory (training/memory.py)",
    )
    args = parser.parse_args()
    clock, out = Clock.of(args), Output(args.out)
    kept = not args.unmap_freed_memory and keep_freed_memory()
    where = clock.where()
    where += ", freed memory kept (train.py's default)" if kept else ", malloc's default (freed memory unmapped)"
    for task in TASKS if args.task == "all" else [args.task]:
        _, _, _, nonlinearity, T, hidden, batch = TASKS[task]
        T, hidden, batch = args.T or T, args.hidden or hidden, args.batch or batch
        if args.profile:
            profile(task, T, hidden, batch, clock, out)
            continue
        results = bench(task, T, hidden, batch, args.reps, clock)
        out("", f"{task}: T={T}, hidden {hidden} ({nonlinearity}), batch {batch}, {where}, median of {args.reps}")
        header = ["model", "forward+backward (ms)", "update (ms)", "step (ms)", "step / nn.RNN step"]
        out.head([*header, "step / recurrence's products", "step / all products"])
        reference = results["nn.RNN(relu) + RMSprop"]["step"]
        floor, floor_all = results[FLOOR]["step"], results[FLOOR_ALL]["step"]
        for name, r in results.items():
            parts = [f"{r['forward+backward'] * 1e3:.1f}", f"{r['update'] * 1e3:.2f}"] if "update" in r else ["—", "—"]
            ratios = [f"{r['step'] / d:.2f}" for d in (reference, floor, floor_all)]
            out.row([name, *parts, f"{r['step'] * 1e3:.1f}", *ratios])


if __name__ == "__main__":
    main()

"""Orthogonal full-width convolutions against ordinary ones (float32, CPU or CUDA). A benchmark, not a test.

1. The paper's ResNet9 (tasks/vision_models.py) training step at batch 64 on CIFAR-shaped random data:
   time of forward+backward and of the optimizer step, for the standard network (3×3
   convolutions, BatchNorm, RMSprop), the orthogonal one (OrthogonalConv2d everywhere, RMSprop
   wrapped by projunn.ProjUNN with projUNN-T and projUNN-D, k=1) and the same network with
   Cayley convolutions (every frequency's matrix through the Cayley map, RMSprop). The share of the ProjUNN step
   (RMSprop + rank-1 sampling + projection) in the orthogonal step is reported, and, for
   reference, the time of a plain RMSprop step on the same parameters (the projection's
   overhead is the difference). Medians over ``--reps`` steps, the models taken in turn after
   one warm-up round. The orthogonal ResNet9 is built with ``init="identity"`` by default:
   step times do not depend on the matrices' values, and a Haar init of its 36M complex
   entries takes a minute on a CPU.
2. DeepCNN(depth=100, channels=32) at initialisation on one batch of MNIST-shaped random
   data: the ratio of the first convolution's gradient norm to the last one's, for the
   parameters and for the layers' outputs (∂L/∂a), orthogonal against unconstrained
   (PyTorch's default init), with the nonlinearity each uses by default and with ReLU.

    nice -n 10 python -m scripts.bench_conv --reps 3
    nice -n 10 python -m scripts.bench_conv --threads 1 --clock cpu   # on a busy machine
    python -m scripts.bench_conv --device cuda --batch 256            # each step between synchronisations
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import projunn
from tasks.vision_models import DeepCNN, ResNet9


def param_count(model: nn.Module) -> int:
    """Real numbers in the parameters (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


BASE_CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: time.process_time
DEVICE = torch.device("cpu")


def CLOCK() -> float:  # noqa: N802 (a module-level clock, set by main)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return BASE_CLOCK()


def make_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], tuple[float, float]]:
    """One training step; returns the seconds of forward+backward and of ``opt.step()``."""

    def step() -> tuple[float, float]:
        t0 = CLOCK()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        t1 = CLOCK()
        opt.step()
        return t1 - t0, CLOCK() - t1

    return step


def interleaved(steps: dict[str, Callable[[], tuple[float, ...]]], reps: int) -> dict[str, tuple[float, ...]]:
    """Median times of each step, the steps taken in turn (after one warm-up round) so that
    changes in the machine's load hit every method alike."""
    times: dict[str, list[tuple[float, ...]]] = {name: [] for name in steps}
    for i in range(reps + 1):
        for name, step in steps.items():
            t = step()
            if i:
                times[name].append(t)
    return {name: tuple(statistics.median(col) for col in zip(*ts)) for name, ts in times.items()}


def bench_resnet9(batch: int, reps: int, init: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    standard = ResNet9(orthogonal=False).to(DEVICE)
    t0 = time.perf_counter()
    orthogonal = ResNet9(orthogonal=True, init=init).to(DEVICE)
    built = time.perf_counter() - t0
    cayley = projunn.parametrize(ResNet9(orthogonal=True, init="identity").to(DEVICE), "cayley")
    steps = {"standard, RMSprop": make_step(standard, torch.optim.RMSprop(standard.parameters(), lr=1e-3), x, y)}
    for projector in ("T", "D"):
        opt = projunn.ProjUNN(
            projunn.param_groups(orthogonal, unitary_lr=1e-4), "RMSprop", lr=1e-3, projector=projector, rank=1
        )
        steps[f"orthogonal, projUNN-{projector} k=1"] = make_step(orthogonal, opt, x, y)
    steps["Cayley convolutions, RMSprop"] = make_step(cayley, torch.optim.RMSprop(cayley.parameters(), lr=1e-3), x, y)
    # Reference: a plain RMSprop step on the same parameters (timing only: it breaks unitarity,
    # so it runs last).
    results = interleaved(steps, reps)
    plain = torch.optim.RMSprop(orthogonal.parameters(), lr=1e-3)
    for p in orthogonal.parameters():
        p.grad = torch.zeros_like(p)
    plain_step = interleaved({"plain": lambda: (time_it(plain.step),)}, reps)["plain"][0]

    clock = "wall-clock" if BASE_CLOCK is time.perf_counter else "CPU (process) time"
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"\n## ResNet9 training step, batch {batch}, {where} float32, {clock}, median of {reps}")
    print(f"(the orthogonal ResNet9 was built with init={init!r} in {built:.1f} s)\n")
    header = ["model", "params (reals)", "fwd+bwd ms", "opt step ms", "total ms", "opt step share"]
    header.append("plain RMSprop step ms")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, (fb, st) in results.items():
        model = standard if name.startswith("standard") else cayley if name.startswith("Cayley") else orthogonal
        cells = [name, f"{param_count(model) / 1e6:.2f}M"]
        cells += [f"{fb * 1e3:.0f}", f"{st * 1e3:.0f}", f"{(fb + st) * 1e3:.0f}"]
        cells += [f"{st / (fb + st):.0%}", f"{plain_step * 1e3:.0f}" if model is orthogonal else ""]
        print("| " + " | ".join(cells) + " |", flush=True)


def time_it(f: Callable[[], object]) -> float:
    t0 = CLOCK()
    f()
    return CLOCK() - t0


def gradient_ratios(model: DeepCNN, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    outputs: dict[int, torch.Tensor] = {}
    first, last = model.layers[0], model.layers[-1]

    def keep(index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            out.retain_grad()
            outputs[index] = out

        return hook

    handles = [first.register_forward_hook(keep(0)), last.register_forward_hook(keep(-1))]
    loss = nn.functional.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    for h in handles:
        h.remove()

    def norm(module: nn.Module) -> float:
        return torch.sqrt(sum(p.grad.abs().pow(2).sum() for p in module.parameters() if p.grad is not None)).item()

    return {
        "param": norm(first) / norm(last),
        "act": (outputs[0].grad.norm() / outputs[-1].grad.norm()).item(),
        "forward": (outputs[-1].norm() / outputs[0].norm()).item(),
        "loss": loss.item(),
    }


def fmt(ratio: float) -> str:
    return "0 (underflow)" if ratio == 0 else f"{ratio:.3g}"


def bench_deep(depth: int, channels: int, batch: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    print(f"\n## DeepCNN(depth={depth}, channels={channels}) at initialisation, one batch of {batch}", end=" ")
    print("MNIST-shaped N(0,1) images\n")
    header = ["convolutions", "nonlinearity", "‖∇θ first‖/‖∇θ last‖", "‖∂L/∂a first‖/‖∂L/∂a last‖"]
    header += ["‖a last‖/‖a first‖", "loss"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for orthogonal, activation in ((True, "maxmin"), (True, "relu"), (False, "relu"), (False, "maxmin")):
        torch.manual_seed(1)
        model = DeepCNN(depth=depth, channels=channels, orthogonal=orthogonal, activation=activation).to(DEVICE)
        r = gradient_ratios(model, x, y)
        kind = "orthogonal full-width" if orthogonal else "nn.Conv2d 3×3, default init"
        cells = [kind, activation] + [fmt(r[key]) for key in ("param", "act", "forward")] + [f"{r['loss']:.3f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
        del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--init", default="identity", help="initialiser of the orthogonal ResNet9 (haar is slow on CPU)"
    )
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--deep-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, steadier on a shared machine (use with --threads 1)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-deep", action="store_true")
    args = parser.parse_args()
    global BASE_CLOCK, DEVICE
    BASE_CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    DEVICE = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} (other jobs share the machine)"
    )
    if not args.skip_resnet:
        bench_resnet9(args.batch, args.reps, args.init)
    if not args.skip_deep:
        bench_deep(args.depth, args.channels, args.deep_batch)


if __name__ == "__main__":
    main()

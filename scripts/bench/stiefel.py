"""One optimizer step on an n×p matrix with orthonormal columns (the Stiefel manifold), projUNN beside the
other ways to keep it there. Those are torch's parametrization, geotorch, geoopt and POGO; the table
also gives how far each is off the manifold after many steps (docs/speed.md).

    python -m scripts.bench.stiefel --quick --out /tmp/bench_stiefel.md    # tiny sizes, a few steps
    python -m scripts.bench.stiefel --shapes 4096x256 --steps 100 --device cuda
"""

from __future__ import annotations

import argparse
import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import projunn

from . import harness
from .harness import Clock, Output

SHAPES = ((1024, 64), (4096, 256), (30000, 50), (2048, 2048))
QUICK_SHAPES = ((64, 8), (32, 32))
LR = 1e-4  # every method's learning rate (bench_update.py's)


@dataclass
class Method:
    """A way to take one step: ``step()`` with the gradient ``set_grad`` installed last, ``matrix()`` the
    current n×p matrix."""

    step: Callable[[], None]
    set_grad: Callable[[Tensor], None]
    matrix: Callable[[], Tensor]


def peer(name: str):
    """The module ``name`` or ``None`` when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def gradient_step(W: nn.Parameter, optimizer: torch.optim.Optimizer) -> Method:
    """A method whose parameter is the matrix itself: the gradient is its ``.grad``."""

    def set_grad(grad: Tensor) -> None:
        W.grad = grad

    return Method(optimizer.step, set_grad, lambda: W.detach())


def parametrized_step(module: nn.Module, optimizer: torch.optim.Optimizer) -> Method:
    """A method that computes ``module.weight`` from a parameter: forward + backward with the gradient + step."""
    holder: dict[str, Tensor] = {}

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)
        module.weight.backward(holder["grad"])
        optimizer.step()

    def set_grad(grad: Tensor) -> None:
        holder["grad"] = grad

    def matrix() -> Tensor:
        with torch.no_grad():
            return module.weight.detach()

    return Method(step, set_grad, matrix)


def holder_of(W0: Tensor) -> nn.Module:
    """A module holding a copy of ``W0`` as ``weight``."""
    module = nn.Module()
    module.weight = nn.Parameter(W0.clone())
    return module


def build(name: str, W0: Tensor) -> Method | str:
    """The method ``name`` started at ``W0`` (``n × p``, orthonormal columns), or why it cannot run."""
    if name == "RMSprop":
        W = nn.Parameter(W0.clone())
        return gradient_step(W, torch.optim.RMSprop([W], lr=LR))
    if name.startswith("projUNN"):
        W = nn.Parameter(W0.clone())
        projector = name.split("-")[1][0]
        optimizer = projunn.ProjUNN([{"params": [W], "unitary": True}], "RMSprop", lr=LR, projector=projector, rank=1)
        return gradient_step(W, optimizer)
    if name == "torch orthogonal":
        module = holder_of(W0)
        torch.nn.utils.parametrizations.orthogonal(module, "weight")  # keeps W0 (it is orthogonal)
        return parametrized_step(module, torch.optim.RMSprop(module.parameters(), lr=LR))
    if name == "geotorch":
        geotorch = peer("geotorch")
        if geotorch is None:
            return "not installed"
        module = holder_of(W0)
        geotorch.orthogonal(module, "weight")
        module.weight = W0.clone()  # geotorch starts at a random matrix: assign the common start
        return parametrized_step(module, torch.optim.RMSprop(module.parameters(), lr=LR))
    if name.startswith("geoopt"):
        geoopt = peer("geoopt")
        if geoopt is None:
            return "not installed"
        manifold = geoopt.Stiefel(canonical=name.endswith("canonical"))
        W = geoopt.ManifoldParameter(W0.clone(), manifold=manifold)
        return gradient_step(W, geoopt.optim.RiemannianAdam([W], lr=LR))
    if name == "POGO":
        pogo = peer("pogo.base")
        if pogo is None:
            return "not installed"
        W = nn.Parameter(W0.clone())
        # POGO takes batches (B, p, n) of row-orthonormal matrices: ours is one n × p matrix, read transposed.
        optimizer = peer("pogo").POGO(
            [W], base_optimizer=pogo.VectorAdam(), lr=LR, rows=False, flatten_fn=lambda x: x.unsqueeze(0)
        )
        return gradient_step(W, optimizer)
    raise ValueError(f"Unknown method {name!r}")


METHODS = (
    "RMSprop",
    "projUNN-T k=1",
    "projUNN-D k=1",
    "torch orthogonal",
    "geotorch",
    "geoopt canonical",
    "geoopt euclidean",
    "POGO",
)


def dense(name: str, n: int, p: int) -> bool:
    """Whether the method builds an ``n × n`` matrix at every step."""
    return name in ("geotorch", "geoopt canonical") or (name == "torch orthogonal" and n == p)


def unit_gradient(n: int, p: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """A Gaussian ``n × p`` gradient of unit Frobenius norm (about)."""
    return (torch.randn(n, p, generator=generator) / math.sqrt(n * p)).to(device)


def constraint_error(method: Method, n: int, p: int, steps: int, budget_s: float, device: torch.device) -> tuple:
    """``(steps taken, ‖W^H W − I‖_F)`` after ``steps`` steps with fresh unit gradients, or after fewer
    when ``budget_s`` ran out."""
    generator = torch.Generator().manual_seed(1)
    start, taken = time.perf_counter(), 0
    while taken < steps and (taken == 0 or time.perf_counter() - start < budget_s):
        method.set_grad(unit_gradient(n, p, generator, device))
        method.step()
        taken += 1
    return taken, projunn.unitarity_error(method.matrix()).item()


def bench(n: int, p: int, args: argparse.Namespace, clock: Clock) -> list[dict]:
    """A row per method at ``(n, p)``: its median step time (interleaved) and its constraint error after
    ``args.steps`` steps from the common start, or why it was skipped."""
    device = clock.device
    W0 = projunn.init.haar_(torch.empty(n, p, dtype=torch.float64), torch.Generator().manual_seed(0))
    W0 = W0.to(device=device, dtype=torch.float32)
    grad = unit_gradient(n, p, torch.Generator().manual_seed(2), device)
    rows, fast, slow = [], {}, {}
    for name in args.methods:
        if dense(name, n, p) and n > args.dense_max:
            rows.append({"method": name, "skipped": f"builds {n}×{n} matrices (n > --dense-max {args.dense_max})"})
            continue
        method = build(name, W0)
        if isinstance(method, str):
            rows.append({"method": name, "skipped": method})
            continue
        method.set_grad(grad)
        (slow if dense(name, n, p) else fast)[name] = method
        rows.append({"method": name})
    times = {}
    for methods in (fast, slow):
        steps = {name: method.step for name, method in methods.items()}
        times.update(harness.interleaved(steps, args.reps, clock, args.budget))
    for row in rows:
        if "skipped" in row:
            continue
        name = row["method"]
        fresh = build(name, W0)  # the error from the common start, not after the timing's steps
        row["ms"] = times[name] * 1e3
        row["steps"], row["error"] = constraint_error(fresh, n, p, args.steps, args.error_budget, device)
    return rows


def header(steps: int) -> list[str]:
    return ["(n, p)", "method", "ms per step", "/ RMSprop", "/ projUNN-T", f"‖W^H W − I‖_F after {steps} steps"]


def cells(n: int, p: int, rows: list[dict], steps: int) -> list[list[str]]:
    """The table's rows of one shape."""
    ms = {row["method"]: row["ms"] for row in rows if "ms" in row}
    found = []
    for row in rows:
        if "skipped" in row:
            found.append([f"({n}, {p})", row["method"], "—", "—", "—", f"skipped: {row['skipped']}"])
            continue
        floor, projunn_t = ms.get("RMSprop"), ms.get("projUNN-T k=1")
        ratio = {base: f"{row['ms'] / base:.3g}" if base else "—" for base in (floor, projunn_t)}
        error = f"{row['error']:.1e}" + ("" if row["steps"] == steps else f" (after {row['steps']} steps)")
        found.append([f"({n}, {p})", row["method"], f"{row['ms']:.3g}", ratio[floor], ratio[projunn_t], error])
    return found


def plot(results: dict[tuple[int, int], list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(results)
    methods = [
        m for m in METHODS if any(row["method"] == m and "ms" in row for rows in results.values() for row in rows)
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        values = [next((row.get("ms") for row in results[s] if row["method"] == method), None) for s in shapes]
        xs = [j + (i - (len(methods) - 1) / 2) * width for j, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=method)
    ax.set_yscale("log")
    ax.set_xticks(range(len(shapes)), [f"{n}×{p}" for n, p in shapes])
    ax.set_xlabel("(n, p)")
    ax.set_ylabel("ms per step (log)")
    ax.set_title(title)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_shape(text: str) -> tuple[int, int]:
    try:
        n, p = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape NxP such as 4096x256, got {text!r}") from None
    if not 1 <= p <= n:
        raise argparse.ArgumentTypeError(f"expected a tall shape NxP with 1 <= p <= n, got {text!r}")
    return n, p


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, reps=20, budget=20.0)
    parser.add_argument(
        "--shapes",
        type=parse_shape,
        nargs="+",
        help="NxP, n >= p (default: " + ", ".join(f"{n}x{p}" for n, p in SHAPES) + ")",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        metavar="METHOD",
        help=f"default: all ({', '.join(METHODS)})",
    )
    parser.add_argument("--steps", type=int, default=1000, help="steps before the constraint error is taken")
    parser.add_argument(
        "--error-budget",
        type=float,
        default=60.0,
        help="seconds per method and shape for those steps; fewer steps are taken if they run out",
    )
    parser.add_argument(
        "--dense-max", type=int, default=2048, help="skip methods that build n×n matrices above this n (default 2048)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny: shapes {', '.join(f'{n}x{p}' for n, p in QUICK_SHAPES)}, 2 reps, 10 steps",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes = args.shapes or list(QUICK_SHAPES)
        args.reps, args.budget, args.steps, args.error_budget = 2, 0.05, 10, 5.0
    shapes = args.shapes or list(SHAPES)
    clock, out = Clock.of(args), Output(args.out)
    versions = [f"torch {torch.__version__}"] + [
        f"{name} {getattr(module, '__version__', '?')}" if module else f"{name} absent"
        for name, module in (("geotorch", peer("geotorch")), ("geoopt", peer("geoopt")), ("pogo-torch", peer("pogo")))
    ]
    out(f"{', '.join(versions)}; float32, {clock.where()}; lr {LR} for every method", "")
    out.head(header(args.steps))
    results = {}
    for n, p in shapes:
        results[(n, p)] = bench(n, p, args, clock)
        for row in cells(n, p, results[(n, p)], args.steps):
            out.row(row)
    if path := out.beside(".png"):
        plot(results, path, f"One step on an n×p Stiefel matrix ({clock.device.type.upper()}, float32)")
        print(f"saved {args.out} and {path}")


if __name__ == "__main__":
    main()

"""Time one optimizer step on an n×n orthogonal matrix given a dense gradient (float32, CPU or CUDA).

Methods, measured side by side (interleaved, median over repetitions):
  (a) plain torch.optim.RMSprop on an unconstrained matrix;
  (b) RMSprop + projUNN-T, k=1 (projunn.ProjUNN);
  (c) RMSprop + projUNN-D, k=1;
  (d) expRNN-style: forward+backward of W = matrix_exp(A − A^T), then RMSprop on A;
  (e) scoRNN/Cayley-style: forward+backward of W = (I + S)^{-1}(I − S), S = A − A^T, then RMSprop on A.

Prints a Markdown table with the ratios and saves a log-log plot. On CUDA each step is timed
between two synchronisations, and projUNN runs its sync-free step (``capturable``).

``--against DIR`` also times (b) and (c) with the ``projunn`` package of another checkout of this
repository, interleaved with this one's, and prints their ratios: what a change to the library
costs, measured side by side in one process (e.g. ``git worktree add ../before <commit>``).

    python -m scripts.bench_update --sizes 256 512 1024 2048 4096 --out bench_update.png
    python -m scripts.bench_update --device cuda                  # n = 1024 ... 8192
    python -m scripts.bench_update --sizes 256 512 1024 2048 --against ../before
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

import projunn

from .tables import head, row
from .timing import interleaved


def load_library(root: Path) -> ModuleType:
    """The ``projunn`` package of the checkout at ``root``, imported under another name."""
    init = root / "projunn" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"error: --against {root}: no projunn/__init__.py there")
    spec = importlib.util.spec_from_file_location(
        "projunn_against", init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_steps(n: int, device: torch.device, seed: int = 0, against: ModuleType | None = None) -> dict[str, callable]:
    g = torch.Generator().manual_seed(seed)
    grad = (torch.randn(n, n, generator=g) / n).to(device)  # a dense gradient of realistic (unit Frobenius) size
    lr = 1e-4
    steps = {}

    W = torch.nn.Parameter((torch.randn(n, n, generator=g) / n**0.5).to(device))
    W.grad = grad.clone()
    plain = torch.optim.RMSprop([W], lr=lr)
    steps["(a) RMSprop"] = plain.step

    libraries = [("", projunn)] + ([(", --against", against)] if against is not None else [])
    for suffix, library in libraries:
        for label, projector in (("(b) projUNN-T k=1", "T"), ("(c) projUNN-D k=1", "D")):
            start = torch.Generator().manual_seed(seed + 1)  # the same matrix for both libraries
            U = torch.nn.Parameter(library.init.haar_(torch.empty(n, n), generator=start).to(device))
            U.grad = grad.clone()
            opt = library.ProjUNN([{"params": [U], "unitary": True}], "RMSprop", lr=lr, projector=projector, rank=1)
            steps[label + suffix] = opt.step

    def parametrized(transform):
        A = torch.nn.Parameter(torch.zeros(n, n, device=device))
        opt = torch.optim.RMSprop([A], lr=lr)

        def step() -> None:
            opt.zero_grad()
            transform(A - A.T).backward(grad)
            opt.step()

        return step

    eye = torch.eye(n, device=device)
    steps["(d) expRNN (matrix_exp)"] = parametrized(torch.linalg.matrix_exp)
    steps["(e) Cayley"] = parametrized(lambda S: torch.linalg.solve(eye + S, eye - S))
    return steps


def bench(
    n: int, reps: int, budget_s: float, device: torch.device, against: ModuleType | None = None
) -> dict[str, float]:
    steps = make_steps(n, device, against=against)
    # The O(n²) methods are interleaved among themselves, and the O(n³) parametrizations among
    # themselves: their large temporaries would otherwise flush the caches between the fast steps.
    fast = {name: step for name, step in steps.items() if name[:3] in ("(a)", "(b)", "(c)")}
    slow = {name: step for name, step in steps.items() if name not in fast}
    return {**interleaved(fast, reps, budget_s, device), **interleaved(slow, reps, budget_s, device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="default: 256 ... 4096 (CPU), 1024 ... 8192 (CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per method and size before stopping early")
    parser.add_argument("--out", default="bench_update.png")
    parser.add_argument(
        "--against", type=Path, help="another checkout of this repository: its projUNN steps side by side"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    against = load_library(args.against) if args.against else None
    if args.sizes is None:
        args.sizes = [1024, 2048, 4096, 8192] if device.type == "cuda" else [256, 512, 1024, 2048, 4096]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, float32, {where}")
    names = ["(a) RMSprop", "(b) projUNN-T k=1", "(c) projUNN-D k=1", "(d) expRNN (matrix_exp)", "(e) Cayley"]
    print("\n".join(head(["n"] + [f"{name} ms" for name in names] + ["(b)/(a)", "(c)/(a)", "(d)/(b)", "(e)/(b)"])))
    results = {}
    for n in args.sizes:
        results[n] = r = bench(n, args.reps, args.budget, device, against)
        a, b, c, d, e = (r[name] for name in names)
        cells = [str(n)] + [f"{r[name] * 1e3:.3f}" for name in names]
        cells += [f"{b / a:.2f}", f"{c / a:.2f}", f"{d / b:.0f}", f"{e / b:.0f}"]
        print(row(cells), flush=True)
    if against is not None:
        print("\nthis checkout against the one given to --against (ms; ratio this / that)")
        print("\n".join(head(["n", *(f"({x}) {y}" for x in "bc" for y in ("this", "that", "this/that"))])))
        for n, r in results.items():
            cells = [str(n)]
            for name in names[1:3]:
                this, that = r[name], r[name + ", --against"]
                cells += [f"{this * 1e3:.3f}", f"{that * 1e3:.3f}", f"{this / that:.2f}"]
            print(row(cells))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in names:
        ax.loglog(args.sizes, [results[n][name] * 1e3 for n in args.sizes], "o-", label=name)
    ax.set_xticks(args.sizes, [str(n) for n in args.sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("n")
    ax.set_ylabel("time per step (ms)")
    ax.set_title(f"One optimizer step on an n×n matrix ({device.type.upper()}, float32)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

"""One optimizer step on an n×n orthogonal matrix given a dense gradient: RMSprop, projUNN-T and -D
(k = 1), expRNN's and Cayley's parametrizations, side by side (float32; docs/speed.md).

    python -m scripts.bench.update --sizes 256 512 1024 2048 4096 --out bench_update.md
    python -m scripts.bench.update --sizes 256 512 1024 2048 --against ../before
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

import projunn

from . import harness
from .harness import Clock, Output


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


def bench(n: int, reps: int, budget_s: float, clock: Clock, against: ModuleType | None = None) -> dict[str, float]:
    steps = make_steps(n, clock.device, against=against)
    # The O(n²) methods are interleaved among themselves, and the O(n³) parametrizations among
    # themselves: their large temporaries would otherwise flush the caches between the fast steps.
    fast = {name: step for name, step in steps.items() if name[:3] in ("(a)", "(b)", "(c)")}
    slow = {name: step for name, step in steps.items() if name not in fast}
    return {**harness.interleaved(fast, reps, clock, budget_s), **harness.interleaved(slow, reps, clock, budget_s)}


def plot(results: dict[int, dict[str, float]], names: list[str], device: torch.device, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sizes = list(results)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in names:
        ax.loglog(sizes, [results[n][name] * 1e3 for n in sizes], "o-", label=name)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("n")
    ax.set_ylabel("time per step (ms)")
    ax.set_title(f"One optimizer step on an n×n matrix ({device.type.upper()}, float32)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = harness.parser(__doc__, reps=30, budget=20.0)
    parser.add_argument("--sizes", type=int, nargs="+", help="default: 256 ... 4096 (CPU), 1024 ... 8192 (CUDA)")
    parser.add_argument(
        "--against", type=Path, help="another checkout of this repository: its projUNN steps side by side"
    )
    args = parser.parse_args()
    clock, out = Clock.of(args), Output(args.out)
    against = harness.load_library(args.against) if args.against else None
    if args.sizes is None:
        args.sizes = [1024, 2048, 4096, 8192] if clock.device.type == "cuda" else [256, 512, 1024, 2048, 4096]
    out(f"torch {torch.__version__}, float32, {clock.where()}")
    names = ["(a) RMSprop", "(b) projUNN-T k=1", "(c) projUNN-D k=1", "(d) expRNN (matrix_exp)", "(e) Cayley"]
    out.head(["n"] + [f"{name} ms" for name in names] + ["(b)/(a)", "(c)/(a)", "(d)/(b)", "(e)/(b)"])
    results = {}
    for n in args.sizes:
        results[n] = r = bench(n, args.reps, args.budget, clock, against)
        a, b, c, d, e = (r[name] for name in names)
        cells = [str(n)] + [f"{r[name] * 1e3:.3f}" for name in names]
        cells += [f"{b / a:.2f}", f"{c / a:.2f}", f"{d / b:.0f}", f"{e / b:.0f}"]
        out.row(cells)
    if against is not None:
        out("", "this checkout against the one given to --against (ms; ratio this / that)")
        out.head(["n", *(f"({x}) {y}" for x in "bc" for y in ("this", "that", "this/that"))])
        for n, r in results.items():
            cells = [str(n)]
            for name in names[1:3]:
                this, that = r[name], r[name + ", --against"]
                cells += [f"{this * 1e3:.3f}", f"{that * 1e3:.3f}", f"{this / that:.2f}"]
            out.row(cells)
    if path := out.beside(".png"):
        plot(results, names, clock.device, path)
        print(f"saved {path}")


if __name__ == "__main__":
    main()

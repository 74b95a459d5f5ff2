"""How far float32 projUNN training drifts off the unitary manifold: ``ProjUNN`` (RMSprop base) on one
n×n orthogonal matrix fed a fresh Gaussian gradient of unit Frobenius norm every step, its unitarity
error ``‖W^H W − I‖_F`` at logarithmically spaced steps (docs/speed.md, "Drift").

    python -m scripts.bench.unitarity_drift --n 256 --steps 100000                 # default drift control
    python -m scripts.bench.unitarity_drift --n 256 --steps 100000 --no-reproject  # drift control disabled
"""

from __future__ import annotations

import torch

import projunn

from . import harness


def log_spaced(steps: int, per_decade: int = 4) -> list[int]:
    """1, ..., steps with ``per_decade`` roughly even points per factor of 10."""
    points, i = set(), 0
    while True:
        point = round(10 ** (i / per_decade))
        if point >= steps:
            break
        points.add(point)
        i += 1
    points.add(steps)
    return sorted(points)


def unitarity_errors(
    n: int = 256,
    steps: int = 100_000,
    projector: str = "T",
    rank: int = 1,
    lr: float = 1e-3,
    reproject_every: int | None = 100,
    reproject_tol: float | None = None,
    seed: int = 0,
    report_at: list[int] | None = None,
    device: torch.device | str = "cpu",
):
    """Yield ``(step, unitarity_error)`` at the steps in ``report_at`` (default: log-spaced).

    ``reproject_every`` and ``reproject_tol`` are passed to ``ProjUNN`` (their defaults are
    ``ProjUNN``'s own); ``reproject_every=None`` disables drift control.
    """
    generator = torch.Generator().manual_seed(seed)
    W = torch.nn.Parameter(projunn.init.haar_(torch.empty(n, n), generator=generator).to(device))
    opt = projunn.ProjUNN(
        [{"params": [W], "unitary": True}],
        "RMSprop",
        lr=lr,
        projector=projector,
        rank=rank,
        reproject_every=reproject_every,
        reproject_tol=reproject_tol,
        seed=seed,
    )
    report = set(log_spaced(steps) if report_at is None else report_at)
    yield 0, projunn.unitarity_error(W).item()
    for step in range(1, steps + 1):
        W.grad = torch.randn(n, n, generator=generator).div_(n).to(device)
        opt.step()
        if step in report:
            yield step, projunn.unitarity_error(W).item()


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--n", type=int, default=256, help="matrix size (default 256)")
    parser.add_argument("--steps", type=int, default=100_000, help="number of optimizer steps (default 100000)")
    parser.add_argument("--projector", choices=("T", "D"), default="T", help="projUNN-T or projUNN-D (default T)")
    parser.add_argument("--rank", type=int, default=1, help="rank k of each update (default 1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="RMSprop learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0)
    control = parser.add_mutually_exclusive_group()
    control.add_argument(
        "--reproject-every", type=int, default=100, help="drift check period in steps (ProjUNN default 100)"
    )
    control.add_argument("--no-reproject", action="store_true", help="disable drift control (reproject_every=None)")
    parser.add_argument(
        "--reproject-tol", type=float, default=None, help="re-projection threshold (default: ProjUNN's 20·sqrt(n)·eps)"
    )
    args = parser.parse_args()
    clock, out = harness.Clock.of(args), harness.Output(args.out)

    every = None if args.no_reproject else args.reproject_every
    out(
        f"n={args.n} steps={args.steps} projector={args.projector} rank={args.rank} lr={args.lr} "
        f"float32 RMSprop, reproject_every={every} reproject_tol={args.reproject_tol} seed={args.seed}, "
        f"{clock.where()}",
        "",
    )
    out.head(["step", "unitarity_error", "seconds"])
    start = clock()
    settings = dict(projector=args.projector, rank=args.rank, lr=args.lr, seed=args.seed, device=clock.device)
    errors = unitarity_errors(args.n, args.steps, reproject_every=every, reproject_tol=args.reproject_tol, **settings)
    for step, error in errors:
        out.row([step, f"{error:.3e}", f"{clock() - start:.1f}"])


if __name__ == "__main__":
    main()

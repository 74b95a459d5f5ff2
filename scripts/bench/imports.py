"""The time of ``import projunn`` against ``import torch``, each in a fresh Python process. The two take
turns, each time less an empty interpreter's start in the same round (docs/speed.md).

    python -m scripts.bench.imports --rounds 15 --out outputs/readme/bench_import.md
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from . import harness

STATEMENTS = {"nothing": "pass", "torch": "import torch", "projunn": "import projunn"}


def wall(statement: str) -> float:
    """Seconds for a fresh interpreter to run ``statement`` and exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def main() -> None:
    args = harness.parser(__doc__, device=False, rounds=15).parse_args()
    out = harness.Output(args.out)
    wall(STATEMENTS["projunn"])  # warm the file system's caches once
    times: dict[str, list[float]] = {"torch": [], "projunn": []}
    for _ in range(args.rounds):
        empty = wall(STATEMENTS["nothing"])
        for name in times:
            times[name].append(wall(STATEMENTS[name]) - empty)
    torch_s, projunn_s = (statistics.median(times[name]) for name in ("torch", "projunn"))
    out(
        f"`python -m scripts.bench.imports --rounds {args.rounds}`: medians of {args.rounds} fresh processes each, "
        "interleaved, less an empty interpreter's start.",
        "",
    )
    out.table(
        ["import", "median s", "min s", "max s"],
        ([f"`{name}`", *(f"{f(ts):.3f}" for f in (statistics.median, min, max))] for name, ts in times.items()),
    )
    out("", f"`import projunn` / `import torch`: **{projunn_s / torch_s:.3f}**")


if __name__ == "__main__":
    main()

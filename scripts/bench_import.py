"""The time of ``import projunn`` against ``import torch``, each in a fresh Python process.

The two imports take turns (``--rounds`` of each, interleaved, so that a drift of the machine's speed
hits both alike); each time is the wall time of ``python -c "import X"`` less that of ``python -c
"pass"`` taken in the same round, and the table gives the medians and their ratio. ``import projunn``
imports torch and the library, which must not load torch's compiler (``torch._dynamo``) before a
program compiles (``projunn.linalg.eager_under_compile``).

    python -m scripts.bench_import --rounds 15 --out outputs/readme/bench_import.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .tables import markdown

STATEMENTS = {"nothing": "pass", "torch": "import torch", "projunn": "import projunn"}


def wall(statement: str) -> float:
    """Seconds for a fresh interpreter to run ``statement`` and exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) to this file")
    args = parser.parse_args()
    wall(STATEMENTS["projunn"])  # warm the file system's caches once
    times: dict[str, list[float]] = {"torch": [], "projunn": []}
    for _ in range(args.rounds):
        empty = wall(STATEMENTS["nothing"])
        for name in times:
            times[name].append(wall(STATEMENTS[name]) - empty)
    torch_s, projunn_s = (statistics.median(times[name]) for name in ("torch", "projunn"))
    lines = [
        f"`python -m scripts.bench_import --rounds {args.rounds}`: medians of {args.rounds} fresh processes each, "
        "interleaved, less an empty interpreter's start.",
        "",
        markdown(
            ["import", "median s", "min s", "max s"],
            ([f"`{name}`", *(f"{f(ts):.3f}" for f in (statistics.median, min, max))] for name, ts in times.items()),
        ),
        f"`import projunn` / `import torch`: **{projunn_s / torch_s:.3f}**",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

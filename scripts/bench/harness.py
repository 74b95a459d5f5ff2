"""One way for every benchmark to take its common arguments (``parser``), to time side by side (``Clock``,
``interleaved``) and to print its output, with ``--out`` to a file too (``Output``)."""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from .. import tables


def parser(
    doc: str, *, device: bool = True, reps: int | None = None, rounds: int | None = None, budget: float | None = None
) -> argparse.ArgumentParser:
    """A benchmark's parser with the arguments every benchmark takes alike: ``--out``; where and how it
    times in this process (``--device``, ``--threads``, ``--clock``) unless ``device`` is false (it times
    other processes); ``--reps`` (repetitions of each method), ``--rounds`` (runs of each, in fresh
    processes) and ``--budget`` where it takes them, with its own defaults. ``doc``: its docstring."""
    found = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if device:
        found.add_argument("--device", default="cpu", help="cpu or cuda")
        found.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
        found.add_argument(
            "--clock",
            choices=("wall", "cpu"),
            default="wall",
            help="cpu: the process's CPU time, steadier on a shared machine (with --threads 1)",
        )
    if reps is not None:
        found.add_argument("--reps", type=int, default=reps, help=f"timed repetitions of each method (default {reps})")
    if rounds is not None:
        found.add_argument("--rounds", type=int, default=rounds, help=f"runs of each, taken in turn (default {rounds})")
    if budget is not None:
        found.add_argument(
            "--budget",
            type=float,
            default=budget,
            help=f"seconds a method may use before it stops repeating, after 3 (default {budget:g})",
        )
    found.add_argument("--out", type=Path, help="also write what is printed (its tables, Markdown) to this file")
    return found


@dataclass(frozen=True)
class Clock:
    """Seconds, read once ``device`` has finished its queued work: wall-clock time, or with ``cpu`` the
    process's CPU time."""

    device: torch.device
    cpu: bool = False

    @classmethod
    def of(cls, args: argparse.Namespace) -> Clock:
        """The clock the common arguments ask for; sets ``--threads``."""
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        return cls(torch.device(args.device), args.clock == "cpu")

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.cpu else time.perf_counter()

    def where(self) -> str:
        """The device in words: the GPU's name, or the CPU and its threads."""
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"CPU, {torch.get_num_threads()} threads"


def interleaved_parts(
    steps: dict[str, Callable[[], tuple[float, ...] | None]],
    reps: int,
    clock: Clock,
    budget_s: float = math.inf,
    warmup: int = 2,
) -> dict[str, tuple[float, ...]]:
    """Median seconds of each step, then of each part it times itself (a step returns its parts'
    seconds, read with ``clock``, or None). The steps are taken in turn, so that drifts of the
    machine's speed hit every method alike, after ``warmup`` calls each (allocations, optimizer
    state); a step stops repeating once it has 3 times and has used ``budget_s``."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[tuple[float, ...]]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            if len(times[name]) >= 3 and sum(t[0] for t in times[name]) > budget_s:
                continue
            start = clock()
            parts = step() or ()
            times[name].append((clock() - start, *parts))
    return {name: tuple(statistics.median(column) for column in zip(*ts)) for name, ts in times.items()}


def interleaved(
    steps: dict[str, Callable[[], object]], reps: int, clock: Clock, budget_s: float = math.inf, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each step, taken in turn (``interleaved_parts``, the steps timed whole)."""

    def whole(step: Callable[[], object]) -> Callable[[], None]:
        def timed() -> None:  # what a step returns is not its parts' times
            step()

        return timed

    timed = {name: whole(step) for name, step in steps.items()}
    return {name: t[0] for name, t in interleaved_parts(timed, reps, clock, budget_s, warmup).items()}


class Output:
    """What a benchmark prints, and with ``--out FILE`` writes to FILE too, a line at a time, so that a
    run stopped midway keeps what it measured."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, *lines: str) -> None:
        text = "\n".join(lines)
        print(text, flush=True)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(text + "\n")

    def head(self, header: Iterable[object]) -> None:
        """A table's header, its rows to follow one ``row`` at a time."""
        self(*tables.head(header))

    def row(self, cells: Iterable[object]) -> None:
        self(tables.row(cells))

    def table(self, header: Iterable[object], rows: Iterable[Iterable[object]]) -> None:
        self(tables.markdown(header, rows).rstrip("\n"))

    def beside(self, suffix: str) -> Path | None:
        """A file beside ``--out`` with this suffix (a plot's), or None without ``--out``."""
        return None if self.path is None else self.path.with_suffix(suffix)


def load_library(root: Path) -> ModuleType:
    """The ``projunn`` package of the checkout at ``root`` (``--against``), imported under another name."""
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

"""Timing shared by the benchmarks (``bench_update``, ``bench_stiefel``, ``bench_rnn``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def interleaved(
    steps: dict[str, Callable[[], object]], reps: int, budget_s: float, device: torch.device
) -> dict[str, float]:
    """Median seconds of each step, the steps taken in turn so that drifts of the machine's speed hit
    every method alike, after two warm-up calls each (allocations, optimizer state); a step stops
    repeating once it has 3 times and has used ``budget_s``."""
    for step in steps.values():
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            if len(times[name]) >= 3 and sum(times[name]) > budget_s:
                continue
            start = clock(device)
            step()
            times[name].append(clock(device) - start)
    return {name: statistics.median(ts) for name, ts in times.items()}

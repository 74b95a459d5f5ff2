"""The adding problem (Hochreiter & Schmidhuber 1997), as in the projUNN paper.

Each step carries two inputs: a value drawn from U(0, 1) and a marker. Exactly two steps are
marked, one among the first ``h = ⌊(T − 1)/2⌋`` steps and one among the others (the split of the
projUNN authors' ``adding_task.py`` and of scoRNN's); the target is the sum of their values, read
from the last output. Predicting 1 whatever the input gives MSE = Var(U₁ + U₂) = 1/6 ≈ 0.167,
the baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from projunn.checks import positive_int

from .data import GeneratedTask


class Adding(GeneratedTask):
    """Adding problem of length ``T``: inputs ``(B, T, 2)``, targets ``(B, 1)``."""

    baseline = 1.0 / 6.0

    def __init__(
        self, T: int = 200, batch_size: int = 50, steps_per_epoch: int = 4000, eval_batches: int = 10, seed: int = 0
    ) -> None:
        super().__init__(batch_size, steps_per_epoch, eval_batches, seed)
        self.T = positive_int("sequence length T", T)
        if T < 3:
            raise ValueError(f"sequence length T must be at least 3 (one marker per half), got {T}")

    @property
    def model_kwargs(self) -> dict:
        return {"input_size": 2, "output_size": 1, "readout": "last"}

    def make_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        B, T = self.batch_size, self.T
        values = torch.rand(B, T, generator=generator)
        half = (T - 1) // 2
        first = torch.randint(0, half, (B,), generator=generator)
        second = torch.randint(half, T, (B,), generator=generator)
        markers = torch.zeros(B, T)
        rows = torch.arange(B)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = (values[rows, first] + values[rows, second]).unsqueeze(1)
        return torch.stack([values, markers], dim=-1), targets

    def objective(self, prediction: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean squared error of the last output; no accuracy is defined."""
        return F.mse_loss(prediction, targets), {}

"""Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016), as in the projUNN paper.

A sequence of length ``T + 2K``: ``K`` symbols drawn from ``{1..8}``, ``T`` blanks (0), the
marker (9), then ``K − 1`` blanks. The marker is the first of the ``K`` recall steps, at which the
network must output the ``K`` symbols in order (as the projUNN authors' ``copy_task.py`` and
expRNN's copying problem lay it out). Targets are blank everywhere else. The loss is the
cross-entropy averaged over all ``T + 2K`` steps; a network that remembers nothing outputs blanks
and then uniform guesses, which costs ``K log 8 / (T + 2K)`` (with K = 10: ``10 log 8 / (T + 20)``),
the memoryless baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from projunn.checks import positive_int

from .data import GeneratedTask

SYMBOLS = 8
BLANK, MARKER = 0, SYMBOLS + 1


class CopyMemory(GeneratedTask):
    """Copy memory with delay ``T``: inputs ``(B, T + 2K, 10)`` one-hot, targets ``(B, T + 2K)`` in ``0..8``."""

    def __init__(
        self,
        T: int = 100,
        K: int = 10,
        batch_size: int = 128,
        steps_per_epoch: int = 4000,
        eval_batches: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, steps_per_epoch, eval_batches, seed)
        self.T = positive_int("copy delay T", T)
        self.K = positive_int("number of symbols K", K)
        self.baseline = K * math.log(SYMBOLS) / (T + 2 * K)

    @property
    def model_kwargs(self) -> dict:
        return {"input_size": SYMBOLS + 2, "output_size": SYMBOLS + 1, "readout": "all"}

    def make_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        B, T, K = self.batch_size, self.T, self.K
        symbols = torch.randint(1, SYMBOLS + 1, (B, K), generator=generator)
        tokens = torch.full((B, T + 2 * K), BLANK, dtype=torch.long)
        tokens[:, :K] = symbols
        tokens[:, T + K] = MARKER  # the first recall step
        targets = torch.full((B, T + 2 * K), BLANK, dtype=torch.long)
        targets[:, -K:] = symbols
        return F.one_hot(tokens, SYMBOLS + 2).float(), targets

    def objective(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy over all steps; accuracy on the ``K`` recalled symbols."""
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        recalled = logits[:, -self.K :].argmax(-1) == targets[:, -self.K :]
        return loss, {"acc": recalled.float().mean()}

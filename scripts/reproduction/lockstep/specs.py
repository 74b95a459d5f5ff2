"""What lockstep runs: each task's description (the authors' commit, script and settings beside the
preset's overrides), the variants of the authors' side, the run's settings and the batches."""

from __future__ import annotations

import argparse
import functools
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..authors import PMNIST_COMMIT, SEQUENCE_COMMIT


def _modrelu_without_eps(self, inputs: Tensor) -> Tensor:
    """Their ``modrelu.forward`` (``layers.py:217-222@437eb05``) without the ``1e-6`` added to ``|z|``."""
    return torch.sgn(inputs) * nn.functional.relu(torch.abs(inputs) + self.b)


@dataclass(frozen=True)
class Variant:
    """One version of the authors' side: which run-time changes their package gets (never a file)."""

    name: str
    c128: bool = False  # their 2 × 2 eigen-solve in complex128 (``utils.default_complex_dtype``)
    nostab: bool = False  # projUNN-D's ``stable_adder`` 1e-8 set to 0
    modrelu: bool = False  # their modReLU without its 1e-6
    their_lsi: bool = False  # their own random LSI sketch instead of the deterministic sampler
    eps0: bool = False  # RMSprop's eps 0 on both sides

    def apply(self, package: types.ModuleType) -> None:
        if self.c128:
            package.utils.default_complex_dtype = torch.complex128
        if self.nostab:
            package.utils.projUNN_D = functools.partial(package.utils.projUNN_D, stable_adder=0.0)
        if self.modrelu and hasattr(package.layers, "modrelu"):
            package.layers.modrelu.forward = _modrelu_without_eps


def _copy_loss(out: Tensor, y: Tensor) -> Tensor:  # copy_task.py:221,236
    return F.cross_entropy(out.reshape(-1, 9), y.reshape(-1))


@dataclass(frozen=True)
class LockstepTask:
    """One preset beside one of the authors' scripts."""

    name: str
    commit: str  # of facebookresearch/projUNN (scripts/reproduction/authors.py)
    script: str
    their_args: dict  # the ``args`` their definitions read
    overrides: tuple[str, ...]  # ours, for conf/
    lr: float  # their RMSprop's
    loss: Callable[[Tensor, Tensor], Tensor]  # theirs
    sizes: tuple[int, int, int] | None = None  # their ``proj_net(input, hidden, output)``; None: their ResNet9
    unitary: bool = True  # False: their ResNet9 without ``--unitary`` (nn.Conv2d), ours experiment=cifar10_resnet9

    @property
    def cifar(self) -> bool:
        return self.sizes is None

    @property
    def frequencies(self) -> bool:
        """CIFAR10 with full-width orthogonal convolutions (the frequency layouts, ``layout.py``)."""
        return self.cifar and self.unitary

    @property
    def direct(self) -> bool:
        return self.their_args["projector"] == "projUNND"

    def names(self) -> dict[str, str] | None:
        """Our parameter names → theirs (``layers.py:172-200``, ``proj_net``); None for CIFAR10, whose
        names agree but whose convolutions are laid out differently (``layout.py``)."""
        if self.cifar:
            return None
        names = {
            "rnn.weight_ih": "rnn_layer.input_kernel.weight",
            "rnn.weight_hh": "rnn_layer.recurrent_kernel.weight",
            "readout.weight": "output_layer.weight",
            "readout.bias": "output_layer.bias",
        }
        if self.name.startswith("pmnist"):
            names["rnn.activation.bias"] = "rnn_layer.nonlinearity.b"
        return names

    def variants(self) -> list[Variant]:
        """The authors' variants (the package docstring); on CIFAR10 ``c128`` and ``c128-nostab`` are
        left out for time (each authors' step there takes seconds), and their own random LSI runs
        beside (``lsi``), for how far its weights leave the symmetry of a real convolution."""
        if not self.unitary:
            return [Variant("written")]
        if self.cifar:
            return [
                Variant("written"),
                Variant("matched", c128=True, nostab=self.direct),
                Variant("matched-eps0", c128=True, nostab=self.direct, eps0=True),
                Variant("lsi", their_lsi=True),
            ]
        found = [Variant("written"), Variant("c128", c128=True)]
        if self.direct:
            found.append(Variant("c128-nostab", c128=True, nostab=True))
        if self.name.startswith("pmnist"):
            found.append(Variant("matched", c128=True, nostab=self.direct, modrelu=True))
        return found


def _task(name: str, script: str, projector: str, overrides: str, **fields: Any) -> LockstepTask:
    """A task from its script (which fixes the commit; their CIFAR10 script divides the unitary step by
    10: ``convolutional_experiment.py:120-127``), projector (``"T"``, ``"D"``, rank 1) and our
    overrides; their RMSprop's lr 1e-3 and the cross-entropy unless ``fields`` say otherwise."""
    commit = SEQUENCE_COMMIT if script in ("copy_task.py", "adding_task.py") else PMNIST_COMMIT
    args = {"rank": 1, "projector": f"projUNN{projector}"}
    if script == "convolutional_experiment.py":
        args["lr_divider"] = 10.0
    fields = {"lr": 1e-3, "loss": F.cross_entropy, **fields}
    return LockstepTask(name, commit, script, args, tuple(overrides.split()), **fields)


CIFAR_SCRIPT = "convolutional_experiment.py"
TASKS = {
    task.name: task
    for task in (
        _task("pmnist_d", "permuted_mnist.py", "D", "experiment=pmnist", sizes=(1, 170, 10)),
        _task("pmnist_t", "permuted_mnist.py", "T", "experiment=pmnist optim=projunn_t", sizes=(1, 170, 10)),
        _task("copy", "copy_task.py", "T", "experiment=copy_T1000", lr=7e-4, loss=_copy_loss, sizes=(10, 190, 9)),
        _task("adding", "adding_task.py", "T", "experiment=adding_T200", loss=F.mse_loss, sizes=(2, 170, 1)),  # :213
        _task("cifar_t", CIFAR_SCRIPT, "T", "experiment=cifar10_projunn_t optim.base=AuthorsRMSprop"),
        _task("cifar_d", CIFAR_SCRIPT, "D", "experiment=cifar10_projunn_d optim.base=AuthorsRMSprop"),
        # their script without --unitary: the same RMSprop (its projector never called), nn.Conv2d layers
        _task("cifar_resnet9", CIFAR_SCRIPT, "T", "experiment=cifar10_resnet9", unitary=False),
    )
}


@dataclass(frozen=True)
class Settings:
    """One task's run: the command line's values, with the task's defaults filled in."""

    batch: int
    steps: int
    sampler: str
    seed: int
    seq_len: int
    copy_T: int
    adding_T: int
    image_size: int
    data_root: Path
    dtype: torch.dtype = torch.float64
    stream: str = "gaussian"  # CIFAR10's batches: Gaussian images, or either code's real stream (streams.py)

    @classmethod
    def resolve(cls, args: argparse.Namespace, task: LockstepTask) -> Settings:
        stream = args.stream if task.cifar else "gaussian"
        if stream != "gaussian" and args.image_size not in (None, 32):
            raise ValueError(f"--stream {stream}: CIFAR10's images are 32 × 32, not --image-size {args.image_size}")
        if stream == "authors" and task.unitary:
            raise ValueError(
                f"--stream authors: {task.name} runs their script with --unitary, whose projector draws its random "
                "sketch from the generator that augments their batches, so their stream depends on their "
                "training; it is defined for cifar_resnet9 only"
            )
        return cls(
            batch=args.batch or (8 if task.cifar else 16),
            steps=args.steps or (3 if task.cifar else 10),
            sampler=args.sampler or ("sketch" if task.cifar else "topk"),
            seed=args.seed,
            seq_len=args.seq_len,
            copy_T=args.copy_T,
            adding_T=args.adding_T,
            image_size=args.image_size or (16 if stream == "gaussian" else 32),
            data_root=Path(args.data_root),
            dtype=getattr(torch, args.dtype),
            stream=stream,
        )

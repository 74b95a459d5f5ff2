"""Lockstep comparison of the paper presets against the projUNN authors' code, step by step, in float64.

    python -m scripts.lockstep --authors PATH                       # every task, 10 steps each
    python -m scripts.lockstep --authors PATH --tasks pmnist_d copy --steps 20 --json lockstep.json

``PATH`` is a git checkout (or bare clone) of github.com/facebookresearch/projUNN, any commit:
``git clone https://github.com/facebookresearch/projUNN``. Nothing of it is copied into this
project: the script extracts the two commits that docs/reproduction.md pins, with
``git -C PATH archive``, into a temporary directory, and imports their ``projunn`` package there
under other names (ours stays ``projunn``):

* 437eb05, ``permuted_mnist.py``, ``convolutional_experiment.py`` and their ``projunn/`` (pMNIST, CIFAR10);
* 5285b00, ``copy_task.py``, ``adding_task.py`` and their ``projunn/`` (copy, adding).

Their scripts parse ``sys.argv``, seed, and (CIFAR10) load the dataset when imported, so they
are not imported: the definitions the experiment needs (``projector``, ``proj_net``) are read
from each file and executed with their ``projunn`` and an ``args`` of the preset's settings.

What runs, per task. The authors' model (their classes, their initialisation) and their
``RMSprop`` with their projector closure, and the preset's model and optimizer, composed by Hydra
from ``conf/`` with ``experiment=<preset>`` and built by ``hydra.utils.instantiate`` as
``train.py`` builds them. Both are built in float64 (their complex frequency matrices, which their
layer makes ``complex64``, are cast to ``complex128``); the authors' initial weights are copied
into ours; both get the same batches; both rank-k samplers are replaced by one deterministic
sampler (``--sampler``): ``topk``, the exact top-k right singular vectors ``v`` of the update
``G`` (``a = G v``, ``b = v``, a full SVD), or ``sketch``, the LSI sketch with one fixed real
Gaussian ``R`` shared by every matrix of a shape (``v`` spans ``Gᴴ R``; continuous in ``G``, cheap,
and it keeps the conjugate pairs of the CIFAR frequencies paired). The default is ``topk`` for
the recurrent tasks and ``sketch`` for CIFAR10, where an SVD of every frequency's matrix costs far
more than the step. No random draw is left, so any difference is arithmetic or code.

Tasks (``--tasks``): ``pmnist_d`` (``experiment=pmnist``, their ``permuted_mnist.py --permute``),
``pmnist_t`` (``experiment=pmnist optim=projunn_t``, ``--projector projUNNT``), ``copy``
(``experiment=copy_T1000``), ``adding`` (``experiment=adding_T200``), ``cifar_t`` and ``cifar_d``
(``experiment=cifar10_projunn_t`` / ``_d`` with ``optim.base=AuthorsRMSprop``, their
``convolutional_experiment.py --dataset CIFAR10 --unitary``). Sizes: the preset's hidden sizes and
learning rates; batch ``--batch`` (default 16; 8 for CIFAR10), sequence lengths ``--seq-len``
(pMNIST, default 784), ``--copy-T`` (default 1000), ``--adding-T`` (default 200); CIFAR10 on
Gaussian images of side ``--image-size`` (default 16, every kernel half as wide as on CIFAR10's
32 × 32: the same code paths, a quarter of the work and memory; each float64 model takes ~2 GB
at 32) with random labels; pMNIST on the first MNIST training images when ``--data-root``
holds them (else uniform pixels on 20 % of the positions, said in the output). The learning-rate
schedules are left out: none of them changes a rate within the first few hundred steps.

The authors' side runs in variants, each its own import of their package, changed at run time
(never a file): ``written`` (their code as it is: their ``dim2_eig`` casts to the module global
``default_complex_dtype = complex64``, so their 2 × 2 eigen-solve is float32-accurate); ``c128``
(that global set to ``complex128``); ``c128-nostab`` (and projUNN-D's ``stable_adder`` 1e-8 set
to 0); ``matched`` (every documented difference removed as well: their modReLU without its
``1e-6``; on our side the CIFAR10 channel growth without our 1/sqrt(copies) scaling); on CIFAR10
only ``written``, ``matched`` and ``matched-eps0`` (RMSprop's ``eps`` set to 0 on both sides as well:
our free edge-column bins take the sum of the two conjugate bins' gradients, ``2g``, so their step
``2g / (sqrt(4v) + eps)`` is theirs with ``eps/2``), each of their steps there taking seconds; and ``lsi``, their code
with their own random LSI sketch, whose weights are not compared (other draws) but measured: how
far they leave the Hermitian symmetry of a real convolution, and the isometry defect
``|‖conv(x)‖/‖x‖ − 1|`` of one of their layers. The chaos control: after step 0 the closest variant
``written`` (``matched`` on CIFAR10, where it is the one that still differs) is copied and moved
by its own step-0 difference from ours, parameter by parameter (the unitary matrices by
an exact unitary step that keeps the conjugate pairs paired); it then runs beside, and the growth
of its distance to the original is set against the growth of ours.

Output, per task and step: the loss of each side on the step's batch before the update, their
difference, the largest difference of the outputs (logits), the largest weight difference after
the update over all weights and over the unitary matrices alone, both sides' unitarity error
``max ‖WᴴW − I‖_F``, then the largest weight difference (all / unitary) of ours against each other
variant, and of the chaos control against its original. Then their own numerical error (their
code against itself: float32 against complex128 eigen-solve, with against without the
stabiliser) and how much their LSI's ``eps`` would have shrunk the steps the deterministic sampler
replaced. For CIFAR10 the weights are compared on the authors' layout (a matrix per ``rfft2``
bin), and the table adds our preset's default RMSprop against ``AuthorsRMSprop``, the authors'
departure from the Hermitian symmetry of a real convolution (largest ``‖K − K_sym‖_F`` over the
bins, ``K_sym`` the matrices our layout would hold) for ``written`` and ``lsi``, and the
isometry defects. A verdict line closes each task. ``--json OUT`` writes every number.

Without a usable ``--authors`` the script exits with status 2 and one line saying what it needs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .authors import NEEDS, PMNIST_COMMIT, SEQUENCE_COMMIT, NeedsAuthors, extract, import_package, script_definitions

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("pmnist_d", "pmnist_t", "copy", "adding", "cifar_t", "cifar_d")


def _modrelu_without_eps(self, inputs: Tensor) -> Tensor:
    """Their ``modrelu.forward`` (``layers.py:217-222@437eb05``) without the ``1e-6`` added to ``|z|``."""
    return torch.sgn(inputs) * nn.functional.relu(torch.abs(inputs) + self.b)


class Variant:
    """One version of the authors' side: which run-time changes their package gets."""

    def __init__(
        self,
        name: str,
        c128: bool = False,
        nostab: bool = False,
        modrelu: bool = False,
        their_lsi: bool = False,
        eps0: bool = False,
    ) -> None:
        self.name, self.c128, self.nostab, self.modrelu = name, c128, nostab, modrelu
        self.their_lsi, self.eps0 = their_lsi, eps0

    def apply(self, package: types.ModuleType) -> None:
        if self.c128:
            package.utils.default_complex_dtype = torch.complex128
        if self.nostab:
            package.utils.projUNN_D = functools.partial(package.utils.projUNN_D, stable_adder=0.0)
        if self.modrelu and hasattr(package.layers, "modrelu"):
            package.layers.modrelu.forward = _modrelu_without_eps


# --------------------------------------------------------------------------------------------
# Deterministic rank-k samplers, shared by both sides
# --------------------------------------------------------------------------------------------


def top_k(G: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Exact rank-k truncation ``G v vᴴ``: ``v`` (``(..., cols, k)``) the top-k right singular vectors of
    ``G`` (``(..., rows, cols)``); returns ``(a, b) = (G v, v)``, the form of LSI's result."""
    v = torch.linalg.svd(G, full_matrices=False)[2][..., :k, :].mH
    return G @ v, v


@functools.cache
def _sketch(rows: int, k: int, dtype: torch.dtype) -> Tensor:
    return torch.randn(rows, k, generator=torch.Generator().manual_seed(rows * 1000 + k), dtype=dtype)


def fixed_sketch(G: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """LSI with a fixed sketch: ``v`` an orthonormal basis of ``Gᴴ R`` for one real Gaussian ``R``
    (``rows × k``, a function of ``rows`` and ``k`` only, shared by every matrix of the batch);
    returns ``(G v, v)``. Exact when ``rank(G) <= k``; real for real ``G``; ``conj(G)`` gives
    ``conj`` of the result."""
    R = _sketch(G.shape[-2], k, G.real.dtype).to(G.device)
    x = G.mH @ R.to(G.dtype)
    v = x / torch.linalg.vector_norm(x, dim=-2, keepdim=True) if k == 1 else torch.linalg.qr(x)[0]
    return G @ v, v


SAMPLERS = {"topk": top_k, "sketch": fixed_sketch}
LSI_SHRINK: list[float] = []  # what their LSI's eps would have taken off each step the sampler replaced


def lsi_shrink(A: Tensor, k: int, eps: float = 1e-6) -> float:
    """``1 − (σ / (σ + eps))²``, largest over the batch: how much the authors' ``LSI_approximation``
    (``utils.py:63-70``) shrinks the step ``A v vᴴ`` by dividing its ``v`` by ``σ + eps`` instead of
    ``σ``, ``σ`` the top singular value of their scaled sketch ``sqrt(n/k) Rᴴ A`` (here with ``R`` the
    fixed sketch, orthonormalised)."""
    n = A.shape[-1]
    R = torch.linalg.qr(_sketch(A.shape[-2], k, A.real.dtype))[0].to(A.dtype)
    sigma = torch.linalg.matrix_norm(math.sqrt(n / k) * (R.mH @ A), ord=2)
    return (1 - (sigma / (sigma + eps)) ** 2).max().item()


# --------------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------------


def to_double(model: nn.Module) -> nn.Module:
    """float → float64 and complex → complex128, in place (``Module.double`` skips complex
    parameters; ``Module.to(float64)`` would drop their imaginary parts)."""
    model.double()
    for p in model.parameters():
        if p.is_complex():
            p.data = p.data.to(torch.complex128)
    return model


class Side:
    """A model, its optimizer and its loss, stepped on a batch: returns (loss, outputs)."""

    def __init__(self, name: str, model: nn.Module, optimizer, loss: Callable) -> None:
        self.name, self.model, self.optimizer, self.loss = name, model, optimizer, loss

    def step(self, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
        output = self.model(x)
        loss = self.loss(output, y)
        self.model.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item(), output.detach()


def rnn_names(pmnist: bool) -> dict[str, str]:
    """Our parameter names → theirs (``layers.py:172-200``, ``proj_net``)."""
    names = {
        "rnn.weight_ih": "rnn_layer.input_kernel.weight",
        "rnn.weight_hh": "rnn_layer.recurrent_kernel.weight",
        "readout.weight": "output_layer.weight",
        "readout.bias": "output_layer.bias",
    }
    if pmnist:
        names["rnn.activation.bias"] = "rnn_layer.nonlinearity.b"
    return names


# CIFAR10: their frequency matrices are a free complex matrix per rfft2 bin, (H·W_f, C, C) with
# bin u·W_f + v; ours the free ones, (F_c, C, C), and the self-conjugate ones, (F_r, C, C), real
# (projunn/conv.py, Note [Hermitian symmetry of a real convolution]; the layout is _real_layout's).


def _layout(H: int, W: int) -> tuple[int, Tensor, int, int]:
    from projunn.conv import _real_layout

    return _real_layout(H, W)


def grid_from_factors(free: Tensor, real: Tensor, H: int, W: int) -> Tensor:
    """Our stored matrices on the authors' layout ``(H·W_f, C, C)``, the redundant edge bins the
    conjugates of their partners."""
    n_int, edges, F_c, _ = _layout(H, W)
    Wf = W // 2 + 1
    edge = torch.cat([free[n_int:], real.to(free.dtype), free[n_int:].conj()])
    columns = free.new_empty(Wf * H, *free.shape[1:])  # bin v·H + u
    columns[H : H + n_int] = free[:n_int]
    columns[edges] = edge
    return columns.unflatten(0, (Wf, H)).transpose(0, 1).reshape(H * Wf, *free.shape[1:])


def factors_from_grid(grid: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    """The authors' matrices at our free bins and (real part) at our self-conjugate bins."""
    n_int, edges, F_c, F_r = _layout(H, W)
    Wf, F_e = W // 2 + 1, F_c - n_int
    columns = grid.unflatten(0, (H, Wf)).transpose(0, 1).reshape(Wf * H, *grid.shape[1:])
    free = torch.cat([columns[H : H + n_int], columns[edges[:F_e]]])
    return free, columns[edges[F_e : F_e + F_r]].real


def conv_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from projunn.conv import OrthogonalConv2d

    for name, module in model.named_modules():
        if isinstance(module, OrthogonalConv2d) or type(module).__name__ == "FullWidthConv2d":
            yield name, module


def their_conv_size(layer: nn.Module) -> tuple[int, int]:
    return tuple(layer.input_size)


def comparable_weights(model: nn.Module, ours: bool, names: dict[str, str] | None) -> dict[str, Tensor]:
    """Every trainable weight, keyed by the authors' name, in the authors' layout."""
    found = {}
    convs = dict(conv_layers(model)) if names is None else {}
    skip = {f"{c}.{p}" for c in convs for p in ("weight", "weight_real")}
    for name, p in model.named_parameters():
        if name in skip:
            continue
        found[names[name] if (ours and names) else name] = p.detach()
    for name, layer in convs.items():
        if ours:
            found[f"{name}.weight"] = grid_from_factors(
                layer.weight.detach(), layer.weight_real.detach(), *layer.image_size
            )
        else:
            found[f"{name}.weight"] = layer.weight.detach()
    return found


def unitary_keys(task: str) -> set[str]:
    return set() if task.startswith("cifar") else {"rnn_layer.recurrent_kernel.weight"}


def copy_into_ours(theirs: nn.Module, ours: nn.Module, names: dict[str, str] | None) -> None:
    """Our model takes the authors' weights (and BatchNorm statistics)."""
    source = dict(theirs.named_parameters())
    with torch.no_grad():
        if names is not None:
            for mine, their in names.items():
                ours.get_parameter(mine).copy_(source[their])
            return
        their_convs = dict(conv_layers(theirs))
        for name, layer in conv_layers(ours):
            free, real = factors_from_grid(their_convs[name].weight, *layer.image_size)
            layer.weight.copy_(free)
            layer.weight_real.copy_(real)
        skip = {f"{c}.{p}" for c in their_convs for p in ("weight", "weight_real")}
        for name, p in ours.named_parameters():
            if name not in skip:
                p.copy_(source[name])
        their_buffers = dict(theirs.named_buffers())
        for name, b in ours.named_buffers():
            if name in their_buffers:
                b.copy_(their_buffers[name])


def hermitian_error(grid: Tensor, H: int, W: int) -> float:
    """How far the authors' matrices leave the symmetry of a real convolution: the largest
    ``‖K − K_sym‖_F`` over the bins, ``K_sym`` the matrices our layout would hold."""
    symmetric = grid_from_factors(*factors_from_grid(grid, H, W), H, W)
    return torch.linalg.matrix_norm(grid - symmetric).max().item()


def unitarity(model: nn.Module, ours: bool, task: str, estimate: bool = False) -> float:
    """``max ‖WᴴW − I‖_F`` over the unitary matrices; ``estimate``: its O(n²) estimate from 4 Gaussian
    probes (``projunn.linalg.estimate_unitarity_error``), for the CIFAR10 frequency matrices, whose
    exact figure costs more than the step."""
    import projunn
    from projunn.linalg import estimate_unitarity_error

    if ours:
        mats = [p for _, p in projunn.named_unitary_parameters(model)]
    elif task.startswith("cifar"):
        mats = [layer.weight for _, layer in conv_layers(model)]
    else:
        mats = [model.rnn_layer.recurrent_kernel.weight]
    measure = (lambda m: estimate_unitarity_error(m, torch.Generator().manual_seed(0))) if estimate else None
    return max((measure or projunn.unitarity_error)(m.detach()).max().item() for m in mats)


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


SPECS = {
    # task: (authors' commit, script, their script's args, our overrides)
    "pmnist_d": (PMNIST_COMMIT, "permuted_mnist.py", {"rank": 1, "projector": "projUNND"}, ["experiment=pmnist"]),
    "pmnist_t": (
        PMNIST_COMMIT,
        "permuted_mnist.py",
        {"rank": 1, "projector": "projUNNT"},
        ["experiment=pmnist", "optim=projunn_t"],
    ),
    "copy": (SEQUENCE_COMMIT, "copy_task.py", {"rank": 1, "projector": "projUNNT"}, ["experiment=copy_T1000"]),
    "adding": (SEQUENCE_COMMIT, "adding_task.py", {"rank": 1, "projector": "projUNNT"}, ["experiment=adding_T200"]),
    "cifar_t": (
        PMNIST_COMMIT,
        "convolutional_experiment.py",
        {"rank": 1, "projector": "projUNNT", "lr_divider": 10.0},
        ["experiment=cifar10_projunn_t", "optim.base=AuthorsRMSprop"],
    ),
    "cifar_d": (
        PMNIST_COMMIT,
        "convolutional_experiment.py",
        {"rank": 1, "projector": "projUNND", "lr_divider": 10.0},
        ["experiment=cifar10_projunn_d", "optim.base=AuthorsRMSprop"],
    ),
}
LR = {"pmnist_d": 1e-3, "pmnist_t": 1e-3, "copy": 7e-4, "adding": 1e-3, "cifar_t": 1e-3, "cifar_d": 1e-3}


def their_loss(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    if task == "copy":  # copy_task.py:221,236
        return lambda out, y: F.cross_entropy(out.reshape(-1, 9), y.reshape(-1))
    if task == "adding":  # adding_task.py:213
        return F.mse_loss
    return F.cross_entropy  # permuted_mnist.py:102, convolutional_experiment.py:120-127


def variants_for(task: str) -> list[Variant]:
    """The authors' variants run for ``task`` (the module docstring); on CIFAR10 ``c128`` and
    ``c128-nostab`` are left out for time (each authors' step there takes seconds), and their own
    random LSI runs beside (``lsi``), for how far its weights leave the symmetry of a real convolution."""
    pmnist, direct = task.startswith("pmnist"), task.endswith("_d")
    if task.startswith("cifar"):
        return [
            Variant("written"),
            Variant("matched", c128=True, nostab=direct),
            Variant("matched-eps0", c128=True, nostab=direct, eps0=True),
            Variant("lsi", their_lsi=True),
        ]
    found = [Variant("written"), Variant("c128", c128=True)]
    if direct:
        found.append(Variant("c128-nostab", c128=True, nostab=True))
    if pmnist:
        found.append(Variant("matched", c128=True, nostab=direct, modrelu=True))
    return found


def batches(task: str, args: argparse.Namespace) -> tuple[list[tuple[Tensor, Tensor]], str]:
    """The steps' batches (float64 inputs) and a line saying what they are."""
    g = torch.Generator().manual_seed(args.seed)
    B, n = args.batch_eff, args.steps_eff
    if task.startswith("pmnist"):
        from tasks.mnist import SequentialMNIST, _files_present

        root = Path(args.data_root)
        data = SequentialMNIST(permute=True, data_root=str(root), download=False)
        if _files_present(root.resolve()):
            images, labels = data.load(train=True)
            x = data.to_inputs(images[: B * n])[:, : args.seq_len].double()
            what = f"the first {B * n} MNIST training images, permuted, first {args.seq_len} of 784 steps"
            return [(x[i * B : (i + 1) * B], labels[i * B : (i + 1) * B]) for i in range(n)], what
        out = []
        for _ in range(n):
            pixels = torch.rand(B, args.seq_len, 1, generator=g, dtype=torch.float64)
            pixels *= torch.rand(B, args.seq_len, 1, generator=g, dtype=torch.float64) < 0.2
            out.append((pixels, torch.randint(0, 10, (B,), generator=g)))
        return out, f"no MNIST in {root}: uniform pixels on 20 % of {args.seq_len} steps, random labels"
    if task in ("copy", "adding"):
        from tasks.adding import Adding
        from tasks.copy_memory import CopyMemory

        source = CopyMemory(T=args.copy_T, batch_size=B) if task == "copy" else Adding(T=args.adding_T, batch_size=B)
        out = [source.make_batch(g) for _ in range(n)]
        what = f"our {type(source).__name__}(T={source.T}) batches"
        return [(x.double(), y.double() if task == "adding" else y) for x, y in out], what
    s = args.image_size
    out = [
        (torch.randn(B, 3, s, s, generator=g, dtype=torch.float64), torch.randint(0, 10, (B,), generator=g))
        for _ in range(n)
    ]
    return out, f"Gaussian images {s}x{s}, random labels"


def build_theirs(task: str, folder: Path, variant: Variant, args: argparse.Namespace, tag: str) -> nn.Module:
    commit, script, their_args, _ = SPECS[task]
    package = import_package(folder, f"_authors_{commit}_{tag}")
    variant.apply(package)
    sampler = SAMPLERS[args.sampler_eff]
    if variant.their_lsi:  # their random sketch, drawn from torch's global generator, seeded here
        sampler = package.utils.LSI_approximation
    else:
        chosen = sampler

        def sampler(A: Tensor, k: int, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
            LSI_SHRINK.append(lsi_shrink(A, k, eps))
            return chosen(A, k)

        package.utils.LSI_approximation = sampler
    namespace = {
        "torch": torch,
        "nn": nn,
        "F": F,
        "projunn": package,
        "args": argparse.Namespace(**their_args),
        "sampler": lambda A, k: package.utils.LSI_approximation(A, k),  # copy_task.py:173-174, adding_task.py:169-170
        "lr_divider": 32.0,  # copy_task.py:21,167 / adding_task.py: --lr_divider 32
    }
    torch.manual_seed(args.seed)
    if task.startswith("cifar"):
        model = package.models.ResNet9(3, num_classes=10, image_length=args.image_size, unitary=True)
    else:
        script_definitions(folder / script, ("projector", "proj_net"), namespace)
        sizes = {"pmnist_d": (1, 170, 10), "pmnist_t": (1, 170, 10), "copy": (10, 190, 9), "adding": (2, 170, 1)}
        model = namespace["proj_net"](*sizes[task])
    if task.startswith("cifar"):
        script_definitions(folder / script, ("projector",), namespace)
    to_double(model)
    optimizer = package.optimizers.RMSprop(model.parameters(), projector=namespace["projector"], lr=LR[task])
    if variant.eps0:
        optimizer.param_groups[0]["eps"] = 0.0
    model.lockstep_optimizer = optimizer
    return model


def build_ours(
    task: str, theirs: nn.Module, args: argparse.Namespace, authors_growth: bool, extra: tuple = (), eps0: bool = False
):
    from hydra.utils import instantiate

    _, _, _, overrides = SPECS[task]
    overrides = overrides + [f"seed={args.seed}", *extra]
    cfg = compose(overrides)
    task_module = instantiate(cfg.task)
    kwargs = dict(task_module.model_kwargs)
    if task.startswith("cifar"):
        kwargs["image_size"] = args.image_size
    torch.manual_seed(args.seed)
    model = instantiate(cfg.model, **kwargs)
    to_double(model)
    names = None if task.startswith("cifar") else rnn_names(task.startswith("pmnist"))
    copy_into_ours(theirs, model, names)
    if authors_growth:
        for _, layer in conv_layers(model):
            layer._repeat_scale.fill_(1.0)
    # The deterministic sampler goes in through the optimizer's own argument, so that ProjUNN checks it.
    optimizer = instantiate(cfg.optim)(model, sampler=SAMPLERS[args.sampler_eff], **({"eps": 0.0} if eps0 else {}))
    return model, optimizer, task_module, names, cfg


# --------------------------------------------------------------------------------------------
# Perturbation (the chaos control)
# --------------------------------------------------------------------------------------------


def perturb(model: nn.Module, sizes: dict[str, float], task: str, seed: int) -> float:
    """Move each of the authors' weights by about ``sizes[name]`` (largest entry) in a random
    direction, the unitary matrices by an exact unitary (projUNN-T) step that respects their
    layout; returns the largest change made."""
    import projunn

    g = torch.Generator().manual_seed(seed + 1)
    largest = 0.0
    convs = {f"{n}.weight": layer for n, layer in conv_layers(model)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            size = sizes.get(name, 0.0)
            if size == 0.0:
                continue
            before = p.detach().clone()
            if name in convs or name in unitary_keys(task):
                if name in convs:
                    H, W = their_conv_size(convs[name])
                    free, real = factors_from_grid(p, H, W)
                    a_f = torch.randn(free.shape[:-1] + (1,), generator=g, dtype=free.dtype)
                    a_r = torch.randn(real.shape[:-1] + (1,), generator=g, dtype=real.dtype)
                    b_f = torch.randn(free.shape[:-1] + (1,), generator=g, dtype=free.dtype)
                    b_r = torch.randn(real.shape[:-1] + (1,), generator=g, dtype=real.dtype)
                    a, b = grid_from_factors(a_f, a_r, H, W), grid_from_factors(b_f, b_r, H, W)
                else:
                    a = torch.randn(p.shape[-1], 1, generator=g, dtype=p.dtype)
                    b = torch.randn(p.shape[-1], 1, generator=g, dtype=p.dtype)
                scale = size / (a.abs().amax() * b.abs().amax()).item()
                moved = projunn.projunn_t(p, a * scale, b)
                scale *= size / (moved - p).abs().max().item()  # a small step's size is linear in its scale
                p.copy_(projunn.projunn_t(p, a * scale, b))
            else:
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                p.add_(noise * (size / noise.abs().amax()))
            largest = max(largest, (p - before).abs().max().item())
    return largest


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def max_diff(a: dict[str, Tensor], b: dict[str, Tensor], keys: set[str] | None = None) -> float:
    keys = a.keys() if keys is None else keys
    return max(((a[k] - b[k]).abs().max().item() for k in keys), default=0.0)


def per_param_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, float]:
    return {k: (a[k] - b[k]).abs().max().item() for k in a}


def deepcopy_side(side: Side, name: str) -> Side:
    """An independent copy of one of the authors' sides (model and optimizer state), made mid-run."""
    model, optimizer = copy.deepcopy((side.model, side.optimizer))
    optimizer.projector = side.optimizer.projector  # (torch.optim pickles groups and state only)
    for mine, theirs in zip(model.parameters(), side.model.parameters()):
        if hasattr(theirs, "needs_projection"):  # (deepcopy drops a Parameter's attributes)
            mine.needs_projection = True
    return Side(name, model, optimizer, side.loss)


def bin_classes(H: int, W: int) -> dict[str, Tensor]:
    """Indices, in the authors' bin order ``u·W_f + v``, of the interior bins, the edge-column bins
    that pair with another (free and redundant) and the self-conjugate ones."""
    n_int, edges, F_c, F_r = _layout(H, W)
    Wf, F_e = W // 2 + 1, F_c - n_int
    column_major = torch.arange(Wf * H)  # p = v·H + u  →  u·W_f + v
    to_authors = (column_major % H) * Wf + column_major // H
    return {
        "interior": to_authors[H : H + n_int],
        "paired edge": to_authors[torch.cat([edges[:F_e], edges[F_e + F_r :]])],
        "self-conjugate": to_authors[edges[F_e : F_e + F_r]],
    }


def isometry_defect(model: nn.Module, layer_name: str, seed: int) -> float:
    """``max |‖conv(x)‖ / ‖x‖ − 1|`` over 4 Gaussian images, for one convolution that keeps its channels."""
    layer = model.get_submodule(layer_name)
    g = torch.Generator().manual_seed(seed)
    C = layer.out_channels
    H, W = layer.image_size if hasattr(layer, "image_size") else their_conv_size(layer)
    x = torch.randn(4, C, H, W, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
    ratio = y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    return (ratio - 1).abs().max().item()


def run_task(task: str, folders: dict[str, Path], args: argparse.Namespace) -> dict:
    cifar = task.startswith("cifar")
    args.batch_eff = args.batch or (8 if cifar else 16)
    args.sampler_eff = args.sampler or ("sketch" if cifar else "topk")
    args.steps_eff = args.steps or (3 if cifar else 10)
    commit = SPECS[task][0]
    data, what = batches(task, args)
    LSI_SHRINK.clear()
    names = None if cifar else rnn_names(task.startswith("pmnist"))
    variants = variants_for(task)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # both sides' initialisers then draw in float64
    try:
        theirs = {v.name: build_theirs(task, folders[commit], v, args, f"{task}_{v.name}") for v in variants}
        reference = theirs["written"]
        for model in theirs.values():  # every variant starts from the same weights
            model.load_state_dict(reference.state_dict())
        ours = {"ours": build_ours(task, reference, args, authors_growth=False)}
        if cifar:
            ours["ours:matched"] = build_ours(task, reference, args, authors_growth=True)
            ours["ours:matched-eps0"] = build_ours(task, reference, args, authors_growth=True, eps0=True)
            ours["ours:RMSprop"] = build_ours(task, reference, args, False, ("optim.base=RMSprop",))
    finally:
        torch.set_default_dtype(default_dtype)
    task_module, cfg = ours["ours"][2], ours["ours"][4]
    objective = lambda out, y: task_module.objective(out, y)[0]
    sides = {f"authors:{k}": Side(k, m, m.lockstep_optimizer, their_loss(task)) for k, m in theirs.items()}
    sides.update({key: Side(key, built[0], built[1], objective) for key, built in ours.items()})
    counterpart = {name: (f"ours:{name}" if (cifar and name.startswith("matched")) else "ours") for name in theirs}
    compared = [v.name for v in variants if v.name not in ("written", "lsi")]

    def weights(key: str) -> dict[str, Tensor]:
        return comparable_weights(sides[key].model, key.startswith("ours"), names)

    unitary = {f"{n}.weight" for n, _ in conv_layers(reference)} if cifar else unitary_keys(task)
    print(f"\n## {task}: experiment overrides {' '.join(SPECS[task][3])}; authors {commit} {SPECS[task][1]}")
    print(
        f"batch {args.batch_eff}, {args.steps_eff} steps, float64, sampler {args.sampler_eff}; data: {what}; "
        f"model {cfg.model._target_}{' image ' + str(args.image_size) if cifar else ''}"
    )
    columns = ["step", "loss authors", "loss ours", "|Δloss|", "max|Δout|", "max|ΔW|", "max|ΔW| unitary"]
    columns += ["unit. authors", "unit. ours"]
    columns += [f"ΔW vs {name} (all / unitary)" for name in compared] + ["chaos ΔW"]
    if cifar:
        columns += ["ΔW ours:RMSprop", "herm. authors", "herm. their LSI", "isometry defect their LSI / ours"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    rows, chaos = [], None
    start = time.perf_counter()
    for step, (x, y) in enumerate(data):
        results = {key: side.step(x, y) for key, side in sides.items()}
        W = {key: weights(key) for key in sides if key != "authors:lsi"}
        loss_a, out_a = results["authors:written"]
        loss_b, out_b = results["ours"]
        row = {
            "step": step,
            "loss_authors": loss_a,
            "loss_ours": loss_b,
            "dloss": abs(loss_a - loss_b),
            "dout": (out_a - out_b).abs().max().item(),
            "dW": max_diff(W["authors:written"], W["ours"]),
            "dW_unitary": max_diff(W["authors:written"], W["ours"], unitary),
            "unit_authors": unitarity(sides["authors:written"].model, False, task, estimate=cifar),
            "unit_ours": unitarity(sides["ours"].model, True, task, estimate=cifar),
            "loss": {key: r[0] for key, r in results.items()},
        }
        for name in compared:
            row[f"dW_{name}"] = max_diff(W[f"authors:{name}"], W[counterpart[name]])
            row[f"dW_{name}_unitary"] = max_diff(W[f"authors:{name}"], W[counterpart[name]], unitary)
            row[f"dout_{name}"] = (results[f"authors:{name}"][1] - results[counterpart[name]][1]).abs().max().item()
        # Their own numerical error: their code against itself, float32 against complex128 2 × 2 eigen-solve,
        # and (projUNN-D) with against without the 1e-8 stabiliser.
        if "c128" in theirs:
            row["own_eig32"] = max_diff(W["authors:written"], W["authors:c128"], unitary)
        if "c128-nostab" in theirs:
            row["own_stabiliser"] = max_diff(W["authors:c128"], W["authors:c128-nostab"], unitary)
        if chaos is None:
            # The chaos control: the variant whose separation from ours is in question, copied now and
            # moved by its own step-0 difference from ours.
            target = "matched" if cifar else "written"
            sizes = per_param_diff(W[f"authors:{target}"], W[counterpart[target]])
            row["per_param"] = {
                name: per_param_diff(W[f"authors:{name}"], W[counterpart[name]]) for name in theirs if name != "lsi"
            }
            top = sorted(sizes.items(), key=lambda kv: -kv[1])[:4]
            print(
                f"largest step-0 differences, {target} vs {counterpart[target]}: "
                + ", ".join(f"{k} {v:.1e}" for k, v in top)
            )
            if cifar:
                classes = {c: 0.0 for c in ("interior", "paired edge", "self-conjugate")}
                for name, layer in conv_layers(reference):
                    key = f"{name}.weight"
                    for c, idx in bin_classes(*their_conv_size(layer)).items():
                        d = (W["authors:matched"][key][idx] - W["ours:matched"][key][idx]).abs().max().item()
                        classes[c] = max(classes[c], d)
                row["matched_by_bin"] = classes
                print(
                    "step-0 unitary difference, matched, by bin: "
                    + ", ".join(f"{c} {d:.1e}" for c, d in classes.items())
                )
            sides["authors:perturbed"] = deepcopy_side(sides[f"authors:{target}"], "perturbed")
            chaos = {"target": target, "size": perturb(sides["authors:perturbed"].model, sizes, task, args.seed)}
            W["authors:perturbed"] = weights("authors:perturbed")
        row["dW_chaos"] = max_diff(W[f"authors:{chaos['target']}"], W["authors:perturbed"])
        row["unit"] = {key: unitarity(side.model, key.startswith("ours"), task, cifar) for key, side in sides.items()}
        if cifar:
            row["dW_ours_rmsprop"] = max_diff(W["ours:RMSprop"], W["ours"])
            row["hermitian_authors"] = max(
                hermitian_error(layer.weight.detach(), *their_conv_size(layer)) for _, layer in conv_layers(reference)
            )
            row["hermitian_their_lsi"] = max(
                hermitian_error(layer.weight.detach(), *their_conv_size(layer))
                for _, layer in conv_layers(sides["authors:lsi"].model)
            )
            row["isometry_their_lsi"] = isometry_defect(sides["authors:lsi"].model, "res1.0.0", args.seed)
            row["isometry_ours"] = isometry_defect(sides["ours"].model, "res1.0.0", args.seed)
        rows.append(row)
        cells = [str(step), f"{loss_a:.10f}", f"{loss_b:.10f}"]
        cells += [f"{row[k]:.2e}" for k in ("dloss", "dout", "dW", "dW_unitary", "unit_authors", "unit_ours")]
        cells += [f"{row[f'dW_{name}']:.2e} / {row[f'dW_{name}_unitary']:.2e}" for name in compared]
        cells.append(f"{row['dW_chaos']:.2e}")
        if cifar:
            cells += [f"{row[k]:.2e}" for k in ("dW_ours_rmsprop", "hermitian_authors", "hermitian_their_lsi")]
            cells.append(f"{row['isometry_their_lsi']:.1e} / {row['isometry_ours']:.1e}")
        print("| " + " | ".join(cells) + " |", flush=True)
    seconds = time.perf_counter() - start
    verdict = summarise(rows, compared, chaos)
    print(f"chaos control: authors:{chaos['target']} copied after step 0 and moved by {chaos['size']:.2e}")
    own = [
        f"{label} {rows[0][key]:.1e} after step 0, {rows[-1][key]:.1e} after the last"
        for key, label in (("own_eig32", "float32 eigen-solve"), ("own_stabiliser", "1e-8 stabiliser"))
        if key in rows[0]
    ]
    if own:
        print(
            "their own numerical error in the unitary matrix (max|ΔW| of their code against itself): " + "; ".join(own)
        )
    shrink = max(LSI_SHRINK, default=0.0)
    print(f"their LSI's eps (1e-6) would have shrunk a step by up to {shrink:.1e} (relative)")
    print("unitarity error after the last step: " + ", ".join(f"{k} {v:.1e}" for k, v in rows[-1]["unit"].items()))
    print(f"verdict {task}: {verdict} ({seconds:.0f} s)")
    return {
        "task": task,
        "data": what,
        "batch": args.batch_eff,
        "steps": args.steps_eff,
        "sampler": args.sampler_eff,
        "rows": rows,
        "verdict": verdict,
        "variants": compared,
        "chaos": chaos,
        "lsi_shrink": shrink,
    }


def summarise(rows: list[dict], compared: list[str], chaos: dict) -> str:
    first, last = rows[0], rows[-1]
    parts = [f"forward at step 0 differs by {first['dout']:.1e} (loss {first['dloss']:.1e})"]
    parts.append(f"first update by {first['dW']:.1e} (unitary {first['dW_unitary']:.1e})")
    if compared:
        closest = compared[-1]
        worst = max(r[f"dW_{closest}"] for r in rows)
        parts.append(
            f"against {closest}: forward {first[f'dout_{closest}']:.1e}, {first[f'dW_{closest}']:.1e} after the "
            f"first update, ≤ {worst:.1e} over all steps"
        )
    target = chaos["target"]
    observed = [r["dW"] if target == "written" else r[f"dW_{target}"] for r in rows]
    growth_ours = observed[-1] / max(observed[0], 1e-300)
    growth_chaos = last["dW_chaos"] / max(chaos["size"], 1e-300)
    parts.append(
        f"over {len(rows)} steps ours vs {target} went {observed[0]:.1e} → {observed[-1]:.1e} (×{growth_ours:.2g}), "
        f"{target} vs itself moved by {chaos['size']:.1e} → {last['dW_chaos']:.1e} (×{growth_chaos:.2g})"
    )
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors", type=Path, help="a git checkout of facebookresearch/projUNN")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--steps", type=int, default=None, help="default 10 (3 for CIFAR10)")
    parser.add_argument("--batch", type=int, default=None, help="default 16 (8 for CIFAR10)")
    parser.add_argument("--seq-len", type=int, default=784, help="pMNIST steps per sequence")
    parser.add_argument("--copy-T", type=int, default=1000)
    parser.add_argument("--adding-T", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=16, help="CIFAR10 image side, a multiple of 4 (paper: 32)")
    parser.add_argument("--sampler", choices=tuple(SAMPLERS), default=None, help="default topk (sketch for CIFAR10)")
    parser.add_argument("--data-root", default=str(ROOT / "data"), help="folder holding MNIST/raw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lockstep-") as tmp:
        try:
            folders = extract(args.authors, Path(tmp))
        except NeedsAuthors as error:
            print(f"lockstep: {NEEDS}; {error}", file=sys.stderr)
            return 2
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        # Their projUNN-D casts its complex 2 × 2 eigenvalues back to a real W's dtype (utils.py:225).
        warnings.filterwarnings("ignore", message="Casting complex values to real discards")
        results = []
        for task in args.tasks:
            results.append(run_task(task, folders, args))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "tasks": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

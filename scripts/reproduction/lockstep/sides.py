"""The two sides of a lockstep run, built in float64 (or ``--dtype float32``) from one set of weights:
the authors' model and RMSprop with their projector closure (their package, imported per variant),
and the preset's model and optimizer composed by Hydra from ``conf/`` as ``train.py`` builds them.
Also their weights in one layout, their unitarity, and the chaos control's perturbed copy."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import projunn
from training.build import build, compose
from training.init_noise import unitary_step_of_size

from ..authors import import_package, script_definitions
from .layout import conv_layers, from_authors, image_size, to_authors
from .samplers import SAMPLERS, lsi_shrink
from .specs import LockstepTask, Settings, Variant

RNN_UNITARY = "rnn_layer.recurrent_kernel.weight"


def to_precision(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """float → ``dtype`` (float64 or float32) and complex → its complex counterpart, in place
    (``Module.double``/``float`` skip complex parameters; ``Module.to(dtype)`` would drop their
    imaginary parts)."""
    model.double() if dtype == torch.float64 else model.float()
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    for p in model.parameters():
        if p.is_complex():
            p.data = p.data.to(complex_dtype)
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

    def copy(self, name: str) -> Side:
        """An independent copy of one of the authors' sides (model and optimizer state), made mid-run."""
        model, optimizer = copy.deepcopy((self.model, self.optimizer))
        optimizer.projector = self.optimizer.projector  # (torch.optim pickles groups and state only)
        for mine, theirs in zip(model.parameters(), self.model.parameters()):
            if hasattr(theirs, "needs_projection"):  # (deepcopy drops a Parameter's attributes)
                mine.needs_projection = True
        return Side(name, model, optimizer, self.loss)


def build_theirs(task: LockstepTask, folder: Path, variant: Variant, settings: Settings, shrinks: list[float]) -> Side:
    """The authors' side; the deterministic sampler appends to ``shrinks`` how much their LSI's ``eps``
    would have shrunk each step it replaces."""
    package = import_package(folder, f"_authors_{task.commit}_{task.name}_{variant.name}")
    variant.apply(package)
    if not variant.their_lsi:  # (their own random sketch draws from torch's global generator, seeded here)
        chosen = SAMPLERS[settings.sampler]

        def sampler(A: Tensor, k: int, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
            shrinks.append(lsi_shrink(A, k, eps))
            return chosen(A, k)

        package.utils.LSI_approximation = sampler
    namespace = {
        "torch": torch,
        "nn": nn,
        "F": F,
        "projunn": package,
        "args": argparse.Namespace(**task.their_args),
        "sampler": lambda A, k: package.utils.LSI_approximation(A, k),  # copy_task.py:173-174, adding_task.py:169-170
        "lr_divider": 32.0,  # copy_task.py:21,167 / adding_task.py: --lr_divider 32
    }
    torch.manual_seed(settings.seed)
    if task.cifar:
        model = package.models.ResNet9(3, num_classes=10, image_length=settings.image_size, unitary=task.unitary)
        script_definitions(folder / task.script, ("projector",), namespace)
    else:
        script_definitions(folder / task.script, ("projector", "proj_net"), namespace)
        model = namespace["proj_net"](*task.sizes)
    to_precision(model, settings.dtype)
    optimizer = package.optimizers.RMSprop(model.parameters(), projector=namespace["projector"], lr=task.lr)
    if variant.eps0:
        optimizer.param_groups[0]["eps"] = 0.0
    return Side(variant.name, model, optimizer, task.loss)


def build_ours(
    task: LockstepTask,
    theirs: nn.Module,
    settings: Settings,
    authors_growth: bool = False,
    extra: tuple[str, ...] = (),
    eps0: bool = False,
):
    """The preset's side, from the authors' weights: ``(Side, the task object, the composed config)``,
    built as ``train.py`` builds it (``training.build``); ``authors_growth``: CIFAR10's channel growth
    without our 1/sqrt(copies)."""
    cfg = compose([*task.overrides, f"seed={settings.seed}", *extra])
    torch.manual_seed(settings.seed)
    built = build(cfg, **({"image_size": settings.image_size} if task.cifar else {}))
    task_module, model = built.task, to_precision(built.model, settings.dtype)
    copy_into_ours(theirs, model, task.names())
    if authors_growth:
        for _, layer in conv_layers(model):
            layer.repeat_scale.fill_(1.0)
    # The deterministic sampler goes in through the optimizer's own argument, so that ProjUNN checks it.
    kwargs = {"sampler": SAMPLERS[settings.sampler]} if task.unitary else {}
    optimizer = built.make_optimizer(model, **kwargs, **({"eps": 0.0} if eps0 else {}))
    side = Side("ours", model, optimizer, lambda out, y: task_module.objective(out, y)[0])
    return side, task_module, cfg


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
            free, real = from_authors(their_convs[name].weight, layer.image_size)
            if free is not None:
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


def comparable_weights(model: nn.Module, ours: bool, names: dict[str, str] | None) -> dict[str, Tensor]:
    """Every trainable weight, keyed by the authors' name, in the authors' layout."""
    found = {}
    convs = dict(conv_layers(model)) if names is None else {}
    skip = {f"{c}.{p}" for c in convs for p in ("weight", "weight_real")}
    for name, p in model.named_parameters():
        if name not in skip:
            found[names[name] if (ours and names) else name] = p.detach()
    for name, layer in convs.items():
        if ours:
            weight = None if layer.weight is None else layer.weight.detach()
            found[f"{name}.weight"] = to_authors(weight, layer.weight_real.detach(), layer.image_size)
        else:
            found[f"{name}.weight"] = layer.weight.detach()
    return found


def unitary_names(task: LockstepTask, theirs: nn.Module) -> set[str]:
    """The authors' names of the unitary matrices."""
    if not task.unitary:
        return set()
    return {f"{n}.weight" for n, _ in conv_layers(theirs)} if task.cifar else {RNN_UNITARY}


def unitarity(model: nn.Module, ours: bool, task: LockstepTask) -> float:
    """``max ‖WᴴW − I‖_F`` over the unitary matrices; on CIFAR10 its O(n²) estimate from 4 Gaussian
    probes (``projunn.linalg.estimate_unitarity_error``), whose exact figure costs more than the step."""
    from projunn.linalg import estimate_unitarity_error

    if ours:
        mats = [p for _, p in projunn.named_unitary_parameters(model)]
    elif task.cifar:
        mats = [layer.weight for _, layer in conv_layers(model)]
    else:
        mats = [model.get_parameter(RNN_UNITARY)]
    measure = (lambda m: estimate_unitarity_error(m, torch.Generator().manual_seed(0))) if task.cifar else None
    return max(((measure or projunn.unitarity_error)(m.detach()).max().item() for m in mats), default=0.0)


def perturb(model: nn.Module, sizes: dict[str, float], task: LockstepTask, seed: int) -> float:
    """Move each of the authors' weights by about ``sizes[name]`` (largest entry) in a random
    direction, the unitary matrices by an exact unitary (projUNN-T) step that respects their
    layout; returns the largest change made."""
    g = torch.Generator().manual_seed(seed + 1)
    largest = 0.0
    convs = {f"{n}.weight": layer for n, layer in conv_layers(model)}
    unitary = unitary_names(task, model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            size = sizes.get(name, 0.0)
            if size == 0.0:
                continue
            before = p.detach().clone()
            if name in unitary:
                if name in convs:
                    hw = image_size(convs[name])
                    free, real = from_authors(p, hw)

                    def draw(t: Tensor | None) -> Tensor | None:
                        return None if t is None else torch.randn(t.shape[:-1] + (1,), generator=g, dtype=t.dtype)

                    a_f, a_r, b_f, b_r = draw(free), draw(real), draw(free), draw(real)
                    a, b = to_authors(a_f, a_r, hw), to_authors(b_f, b_r, hw)
                else:
                    a = torch.randn(p.shape[-1], 1, generator=g, dtype=p.dtype)
                    b = torch.randn(p.shape[-1], 1, generator=g, dtype=p.dtype)
                p.copy_(unitary_step_of_size(p, a, b, size))
            else:
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                p.add_(noise * (size / noise.abs().amax()))
            largest = max(largest, (p - before).abs().max().item())
    return largest

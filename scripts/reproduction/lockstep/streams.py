"""The batches both sides of a lockstep step on (``batches``): Gaussian images, MNIST or our own copy and
adding batches, or CIFAR10's real training batches as the preset's run or the authors' script draws
them (``--stream``; docs/reproduction.md, "Each code on the other's data stream"), and its test set."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import torch
from torch import Tensor

from .specs import LockstepTask, Settings

STREAMS = ("gaussian", "preset", "authors")
Batches = list[tuple[Tensor, Tensor]]


def _preset_task(task: LockstepTask, settings: Settings):
    from hydra.utils import instantiate

    from training.build import compose

    overrides = [*task.overrides, f"seed={settings.seed}", f"task.batch_size={settings.batch}"]
    module = instantiate(compose([*overrides, f"data_root={settings.data_root}"]).task)
    module.setup("fit")
    return module


def preset_stream(task: LockstepTask, settings: Settings) -> tuple[Batches, str]:
    """The first ``settings.steps`` training batches of the preset's first epoch."""
    module = _preset_task(task, settings)
    batches = list(islice(iter(module.train_dataloader()), settings.steps))
    fingerprint = module.data_fingerprint["train"]
    return batches, (
        f"the preset's stream: {' '.join(task.overrides)} seed={settings.seed}, its first {len(batches)} "
        f"batches of {settings.batch} (CIFAR10 training set {fingerprint})"
    )


def authors_stream(task: LockstepTask, settings: Settings, package) -> tuple[Batches, str]:
    """The first ``settings.steps`` batches their script draws at seed ``settings.seed`` (without
    ``--unitary``: ``Settings.resolve`` refuses the others)."""
    import torchvision
    from torchvision import transforms

    stats = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))  # convolutional_experiment.py:24
    train_tfms = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(*stats, inplace=True),
        ]
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # their script's initialiser draws in float32
    try:
        torch.manual_seed(settings.seed)
        train = torchvision.datasets.CIFAR10(str(settings.data_root), download=False, train=True, transform=train_tfms)
        package.models.ResNet9(3, num_classes=10, image_length=32, unitary=False)  # their draws before the loader
        loader = torch.utils.data.DataLoader(train, batch_size=settings.batch, shuffle=True, drop_last=True)
        batches = list(islice(iter(loader), settings.steps))
    finally:
        torch.set_default_dtype(default_dtype)
    return batches, (
        f"the authors' stream: their convolutional_experiment.py's loader after torch.manual_seed({settings.seed}) "
        f"and their ResNet9's initialisation, its first {len(batches)} batches of {settings.batch}"
    )


def test_set(task: LockstepTask, settings: Settings) -> Batches:
    """All of CIFAR10's test images, in the preset's test batches."""
    return list(_preset_task(task, settings).test_dataloader())


def batches(task: LockstepTask, settings: Settings, folder: Path) -> tuple[list[tuple[Tensor, Tensor]], str]:
    """The steps' batches (inputs in ``settings.dtype``) and a line saying what they are; ``folder``
    holds the authors' code at the task's commit (their stream)."""
    if settings.stream != "gaussian":
        from ..authors import import_package

        if settings.stream == "preset":
            found, what = preset_stream(task, settings)
        else:
            found, what = authors_stream(task, settings, import_package(folder, f"_authors_stream_{task.name}"))
        return [(x.to(settings.dtype), y) for x, y in found], what
    g = torch.Generator().manual_seed(settings.seed)
    B, n, T = settings.batch, settings.steps, settings.seq_len
    if task.name.startswith("pmnist"):
        from tasks.mnist import SequentialMNIST, files_present

        root = settings.data_root
        data = SequentialMNIST(permute=True, data_root=str(root), download=False)
        if files_present(root.resolve()):
            images, labels = data.load(train=True)
            x = data.to_inputs(images[: B * n])[:, :T].to(settings.dtype)
            what = f"the first {B * n} MNIST training images, permuted, first {T} of 784 steps"
            return [(x[i * B : (i + 1) * B], labels[i * B : (i + 1) * B]) for i in range(n)], what
        out = []
        for _ in range(n):
            pixels = torch.rand(B, T, 1, generator=g, dtype=torch.float64)
            pixels *= torch.rand(B, T, 1, generator=g, dtype=torch.float64) < 0.2
            pixels = pixels.to(settings.dtype)
            out.append((pixels, torch.randint(0, 10, (B,), generator=g)))
        return out, f"no MNIST in {root}: uniform pixels on 20 % of {T} steps, random labels"
    if not task.cifar:
        from tasks.adding import Adding
        from tasks.copy_memory import CopyMemory

        adding = task.name == "adding"
        source = Adding(T=settings.adding_T, batch_size=B) if adding else CopyMemory(T=settings.copy_T, batch_size=B)
        out = [source.make_batch(g) for _ in range(n)]
        what = f"our {type(source).__name__}(T={source.T}) batches"
        return [(x.to(settings.dtype), y.to(settings.dtype) if adding else y) for x, y in out], what
    s = settings.image_size
    out = [
        (
            torch.randn(B, 3, s, s, generator=g, dtype=torch.float64).to(settings.dtype),
            torch.randint(0, 10, (B,), generator=g),
        )
        for _ in range(n)
    ]
    return out, f"Gaussian images {s}x{s}, random labels"

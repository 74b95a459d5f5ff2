"""CIFAR10 image classification, for the orthogonal-convolution ResNet9 of the projUNN paper.

The images are read once through ``torchvision.datasets.CIFAR10`` (downloaded into ``data_root``
when missing) and kept in memory as one uint8 tensor; augmentation (a random 32×32 crop of the
image padded by 4 pixels by reflection, a horizontal flip with probability 1/2) and normalisation
are done per batch, vectorised, so the CPU cores work on the model rather than on decoding. The
normalisation constants and the reflect padding are the projUNN authors'
(``convolutional_experiment.py``; their standard deviations, 0.2023/0.1994/0.2010, are the ones
common in CIFAR code, not the pixel statistics 0.247/0.243/0.261). By default 10 % of the training
images (chosen by a fixed seed, the same for every run) form the validation set; the paper presets
train on all 50,000 and evaluate the test set after every epoch (``val_fraction: 0``,
``test_every_epoch: true``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from projunn.checks import positive_int

from .data import (
    EvaluatedSplits,
    classification,
    stable_seed,
    validation_split,
)

MEAN = (0.4914, 0.4822, 0.4465)  # the projUNN authors' constants (convolutional_experiment.py)
STD = (0.2023, 0.1994, 0.2010)
SPLIT_SEED = 20221  # fixes the train/validation split, independently of the run's seed


def load_cifar10(root: str | Path, train: bool) -> tuple[Tensor, Tensor]:
    """CIFAR10 as ``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` from ``root``, downloading it when missing."""
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    try:
        dataset = CIFAR10(str(root), train=train, download=not (root / CIFAR10.base_folder).is_dir())
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a corrupt archive a RuntimeError
        raise FileNotFoundError(
            f"CIFAR10 is not in {root / CIFAR10.base_folder} (expected data_batch_1..5 and test_batch, "
            f"torchvision's layout) and could not be downloaded ({error}); download "
            f"{CIFAR10.url} and extract it into {root}, or point data_root at a folder that has it"
        ) from None
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(dataset.targets, dtype=torch.long)


class ImageBatches(Dataset):
    """Whole batches ``images[idx], labels[idx]``, normalised and, for training, augmented with a
    generator seeded by the batch's indices (so a resumed run augments exactly as before)."""

    def __init__(self, images: Tensor, labels: Tensor, augment: bool, seed: int) -> None:
        self.images, self.labels, self.augment, self.seed = images, labels, augment, seed
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        x = self.images[idx].float().div_(255)
        if self.augment:
            key = hashlib.blake2b(idx.numpy().tobytes(), digest_size=8).hexdigest()
            x = random_crop_flip(x, torch.Generator().manual_seed(stable_seed(self.seed, "augment", key)))
        return (x - self.mean) / self.std, self.labels[idx]


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Each image of ``x`` (B, C, H, W): a random H×W crop of it padded by ``pad`` pixels of reflection
    (torchvision's ``RandomCrop(padding=pad, padding_mode="reflect")``), flipped left-right with probability 1/2."""
    B, _, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    top = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    rows = (top[:, None] + torch.arange(H))[:, None, :, None]
    cols = (left[:, None] + torch.arange(W))[:, None, None, :]
    flip = torch.rand(B, generator=generator) < 0.5
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(B)[:, None, None, None]
    channels = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, channels, rows, cols]


class CIFAR10Task(EvaluatedSplits):
    """CIFAR10: inputs ``(B, 3, 32, 32)`` normalised, targets ``(B,)``; cross-entropy and accuracy.

    Args:
        data_root: folder holding (or to hold) ``cifar-10-batches-py``.
        batch_size: training batch size (the last partial batch of an epoch is dropped) and evaluation batch size.
        val_fraction: part of the training images held out for validation (0: train on all 50,000).
        augment: random crop and flip of the training images.
        test_every_epoch: evaluate the test set at every validation, as ``test/*``.
        seed: the run's seed (training order, augmentation).
    """

    def __init__(
        self,
        data_root: str = "data",
        batch_size: int = 256,
        val_fraction: float = 0.1,
        augment: bool = True,
        test_every_epoch: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.data_root = data_root
        self.batch_size = self.eval_batch_size = positive_int("batch size", batch_size)
        validation_split(50000, val_fraction, SPLIT_SEED)  # checks the fraction before any data is read
        self.val_fraction, self.split_seed, self.augment, self.seed = val_fraction, SPLIT_SEED, augment, seed
        self.test_every_epoch = bool(test_every_epoch)
        self.splits: dict[str, ImageBatches] = {}

    @property
    def model_kwargs(self) -> dict:
        return {"in_channels": 3, "num_classes": 10, "image_size": 32}

    def prepare_data(self) -> None:
        load_cifar10(self.data_root, train=True)
        load_cifar10(self.data_root, train=False)

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        return load_cifar10(self.data_root, train=train)

    def dataset(self, images: Tensor, labels: Tensor, split: str) -> ImageBatches:
        return ImageBatches(images, labels, self.augment and split == "train", self.seed)

    objective = staticmethod(classification)

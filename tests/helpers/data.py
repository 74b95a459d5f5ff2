"""Stand-in datasets: MNIST's IDX files and a CIFAR10 loader of random images."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

MNIST_TRAIN, MNIST_TEST = 40, 13  # images in the training and test files of conftest's ``mnist`` fixture


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (big-endian header: magic 0x08 = unsigned byte, number of dimensions, sizes)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = MNIST_TRAIN, n_test: int = MNIST_TEST, seed: int = 0) -> dict:
    """Random images in torchvision's raw MNIST layout under ``root`` (``root/MNIST/raw``); returns the
    ``{"train": (images, labels), "t10k": ...}`` arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 7 % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


def fake_cifar(n_train: int = 120, n_test: int = 40):
    """A stand-in for ``tasks.cifar10.load_cifar10``: random uint8 images, each carrying its index
    in two pixels (to follow images through the split), labels ``index % 10``."""

    def load(root, train):
        n = n_train if train else n_test
        g = torch.Generator().manual_seed(1 if train else 2)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        images[:, 0, 0, 0] = torch.arange(n) % 256  # an id, to follow images through the split
        images[:, 0, 0, 1] = torch.arange(n) // 256
        return images, torch.arange(n) % 10

    return load

"""Sequential and permuted MNIST (Le et al. 2015; Arjovsky et al. 2016), as in the projUNN paper's Table 2.

Each 28×28 image becomes a sequence of 784 steps of one pixel, read row by row (sequential
MNIST) or in the order of one fixed permutation (permuted MNIST), the one the field uses since
scoRNN: ``numpy.random.RandomState(92916).permutation(784)``, applied as
``pixels[:, permutation]`` to train, validation and test alike. The class is read from the
last step (``readout="last"``).

Data. ``torchvision.datasets.MNIST`` reads ``<data_root>/MNIST/raw/{train,t10k}-{images-idx3,
labels-idx1}-ubyte`` (or its older ``processed/`` files); with ``download=True`` missing files are
fetched once, and a failed download (no network) becomes one ``FileNotFoundError`` that names
the folder and the files. Pixels are scaled to [0, 1], then standardised with the MNIST
training set's mean 0.1307 and standard deviation 0.3081 if ``standardize`` (zero mean, unit
variance). The default keeps them in [0, 1], as the projUNN and expRNN scripts do
(``transforms.ToTensor()`` alone): a blank pixel is then 0, where standardised it is −0.42,
which a near-isometric recurrence sums over the hundreds of blank steps (the hidden state
starts ~3× larger and the initial loss at 34.7 instead of ln 10).

Splits. By default the validation set is 10 % of the 60 000 training images (6 000), drawn with
a fixed seed (``split_seed``, independent of the run's ``seed``, so every run, whatever its seed,
trains and validates on the same images); the other 54 000 are the training set. The 10 000
test images are evaluated after fitting and, with ``test_every_epoch``, after every epoch. The
paper presets train on all 60 000 (``val_fraction: 0``) and evaluate the test set every epoch, as
the projUNN and expRNN scripts do; ``split_seed: null`` holds out the *first* images instead
(scoRNN's TensorFlow reader: the first 5 000).

Speed. The whole dataset lives in memory as one float tensor ``(N, 784, 1)``; a training batch
is one index operation ``x[idx]`` (``InMemoryBatches``), so the data path costs nothing next to
the 784-step recurrence and the CPU cores go to the model (no worker processes, no per-image
decoding).
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from projunn.checks import positive_int

from .data import (
    EvaluatedSplits,
    classification,
    validation_split,
)
from .lipschitz import lipschitz_margin_classification

PIXELS = 28 * 28
CLASSES = 10
MEAN, STD = 0.1307, 0.3081  # of the MNIST training images, pixels in [0, 1]
PERMUTATION_SEED = 92916  # scoRNN's, used by expRNN and projUNN
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DOWNLOAD_TIMEOUT_S = 30.0


def pixel_permutation() -> Tensor:
    """The fixed pixel order of permuted MNIST: ``numpy.random.RandomState(92916).permutation(784)``."""
    return torch.from_numpy(np.random.RandomState(PERMUTATION_SEED).permutation(PIXELS))


class InMemoryBatches(Dataset):
    """Whole batches of in-memory tensors: ``dataset[idx] = (inputs[idx], targets[idx])`` for a tensor
    (or list) of indices ``idx``."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"inputs and targets differ in length: {len(inputs)} and {len(targets)}")
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: Tensor | list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(index)
        return self.inputs[index], self.targets[index]


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision opens its URLs without a timeout: bound each connection attempt while downloading."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def files_present(root: Path) -> bool:
    """The files ``torchvision.datasets.MNIST`` reads: the four raw IDX files, or its legacy ``processed/*.pt``."""
    raw, processed = root / "MNIST" / "raw", root / "MNIST" / "processed"
    return all((raw / name).is_file() for name in RAW_FILES) or all(
        (processed / name).is_file() for name in ("training.pt", "test.pt")
    )


def ensure_mnist(root: str | Path, download: bool) -> Path:
    """Check that MNIST is in ``root`` (downloading it first when ``download`` and it is not);
    return the absolute root, or raise ``FileNotFoundError`` saying which files to put where."""
    root = Path(root).expanduser().resolve()
    if files_present(root):
        return root
    reason = "download=false"
    if download:
        from torchvision.datasets import MNIST

        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                MNIST(str(root), train=True, download=True)  # fetches all four files
        except (RuntimeError, OSError) as error:  # no network, a mirror down, a bad checksum
            lines = str(error).strip().splitlines() or [type(error).__name__]
            reason = f"download failed: {lines[-1].strip()}"
        if files_present(root):
            return root
    raw = root / "MNIST" / "raw"
    raise FileNotFoundError(
        f"MNIST not found in {raw} ({reason}): expected the files {', '.join(RAW_FILES)}. "
        f"Run once with internet access (task.download=true), or download the four .gz files from {MIRROR}, "
        f"gunzip them into {raw}, or point data_root= at a folder that holds MNIST/raw"
    )


def load_mnist(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    """``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)``, read by ``torchvision.datasets.MNIST``."""
    from torchvision.datasets import MNIST

    dataset = MNIST(str(root), train=train, download=False)
    return dataset.data, dataset.targets.long()


class SequentialMNIST(EvaluatedSplits):
    """Pixel-by-pixel MNIST: inputs ``(B, 784, 1)``, labels ``(B,)`` in ``0..9``.

    Args:
        permute: shuffle the pixels by the fixed permutation (permuted MNIST) instead of reading
            them row by row (sequential MNIST).
        standardize: standardise the [0, 1] pixels with the MNIST mean and std (see the module docstring).
        data_root: folder holding ``MNIST/raw`` (see the module docstring).
        download: fetch missing files (needs internet access).
        batch_size: training batch size (the last partial batch of an epoch is dropped; the
            order is reshuffled every epoch from ``(seed, epoch)``).
        eval_batch_size: batch size of validation and test (every image is evaluated).
        val_fraction, split_seed: the validation split (see the module docstring); ``val_fraction = 0``
            trains on every training image.
        test_every_epoch: evaluate the test set at every validation (after every epoch in the
            presets), logged as ``test/*``, with the best accuracy so far as ``test/acc_best``.
        seed: the run's seed (training order).
    """

    baseline = math.log(CLASSES)  # cross-entropy of a uniform guess

    def __init__(
        self,
        permute: bool = True,
        standardize: bool = False,
        data_root: str = "data",
        download: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 500,
        val_fraction: float = 0.1,
        split_seed: int | None = 5544,
        test_every_epoch: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.permute, self.standardize = bool(permute), bool(standardize)
        self.data_root, self.download = data_root, bool(download)
        self.batch_size = positive_int("batch size", batch_size)
        self.eval_batch_size = positive_int("eval batch size", eval_batch_size)
        validation_split(60000, val_fraction, split_seed)  # checks the fraction before any data is read
        self.val_fraction, self.split_seed, self.seed = val_fraction, split_seed, seed
        self.test_every_epoch = bool(test_every_epoch)
        self.splits: dict[str, InMemoryBatches] = {}

    @property
    def model_kwargs(self) -> dict:
        return {"input_size": 1, "output_size": CLASSES, "readout": "last"}

    def to_inputs(self, images: Tensor) -> Tensor:
        """uint8 images ``(N, 28, 28)`` → pixel sequences ``(N, 784, 1)``, standardised and permuted if asked."""
        pixels = images.reshape(len(images), PIXELS).float() / 255.0
        if self.standardize:
            pixels = (pixels - MEAN) / STD
        if self.permute:
            pixels = pixels[:, pixel_permutation()]
        return pixels.unsqueeze(-1).contiguous()

    def prepare_data(self) -> None:
        ensure_mnist(self.data_root, self.download)

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        return load_mnist(ensure_mnist(self.data_root, download=False), train=train)

    def dataset(self, images: Tensor, labels: Tensor, split: str) -> InMemoryBatches:
        return InMemoryBatches(self.to_inputs(images), labels)

    objective = staticmethod(classification)


class MNISTImages(SequentialMNIST):
    """MNIST as images ``(B, 1, 28, 28)`` (the paper's depth study with a deep CNN, the 1-Lipschitz
    MLP): the same files, validation split and normalisation as ``SequentialMNIST``; no permutation.

    The objective is the cross-entropy and accuracy, unless ``certified_radii``, ``margin`` or
    ``temperature`` are set, for a 1-Lipschitz model (``model=orthogonal_mlp``; the numbers mean
    nothing for another): then it is ``tasks.lipschitz.lipschitz_margin_classification``, which adds
    ``cert_acc_<ε>`` for each radius ``ε`` in ``certified_radii`` (``{val,test}/cert_acc_1.58``),
    measured in the space of the inputs: pixels in [0, 1] with ``standardize=False``, in units of
    the MNIST standard deviation (0.3081 of a pixel) otherwise.
    """

    def __init__(
        self,
        standardize: bool = True,
        certified_radii: Sequence[float] = (),
        margin: float = 0.0,
        temperature: float = 1.0,
        **kwargs: object,
    ) -> None:
        super().__init__(permute=False, standardize=standardize, **kwargs)
        self.certified_radii = tuple(float(r) for r in certified_radii)
        if not all(r >= 0 for r in self.certified_radii):
            raise ValueError(f"certified_radii must be >= 0, got {list(certified_radii)}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.margin, self.temperature = float(margin), float(temperature)

    def objective(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.certified_radii and self.margin == 0 and self.temperature == 1:
            return classification(logits, targets)
        return lipschitz_margin_classification(logits, targets, self.certified_radii, self.margin, self.temperature)

    @property
    def model_kwargs(self) -> dict:
        return {"in_channels": 1, "num_classes": CLASSES, "image_size": 28}

    def to_inputs(self, images: Tensor) -> Tensor:
        """uint8 images ``(N, 28, 28)`` → ``(N, 1, 28, 28)`` in [0, 1], standardised if asked."""
        pixels = images.float().unsqueeze(1) / 255.0
        return (pixels - MEAN) / STD if self.standardize else pixels

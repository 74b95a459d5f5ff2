"""The task interface (``Task``), data orders that restart exactly mid-epoch, and the bases of the
generated-data and the dataset tasks.

Every batch is a pure function of ``(seed, epoch, position)`` (and the process's rank in a
distributed run), so a run resumed from a checkpoint sees the same data as one that never
stopped: Lightning saves each loader's ``state_dict`` in the checkpoint and restores it before
iterating (the position recorded is the number of batches already trained, read from the fit
loop's own progress, not the loader's read-ahead).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from projunn.checks import positive_int


@runtime_checkable
class Task(Protocol):
    """What ``train.py`` and its ``TrainingModule`` (``training.lightning_module``) read of a task, besides
    the data loaders of the ``LightningDataModule`` that every task is (``train_dataloader``, ``val_dataloader``,
    ``test_dataloader``). ``GeneratedTask`` and ``EvaluatedSplits`` implement the loaders;
    docs/extending.md walks through a new task.

    * ``model_kwargs``: the keyword arguments that fit a model to the task, passed to the model's
      config (``input_size``, ``output_size``, ``readout`` for a sequence model; checked against the
      model by ``training.schema.check_model_fits_task``).
    * ``objective(prediction, targets)``: the loss and a dict of further metrics (``"acc"``, ...),
      each logged as ``<stage>/<name>``.
    * ``baseline``: the loss of the best input-blind prediction (logged as ``train/baseline``, drawn
      on the curves), or ``None``.
    * ``eval_stages``: the stages the validation loop evaluates, ``("val",)`` or with ``"test"``.
    """

    baseline: float | None

    @property
    def model_kwargs(self) -> dict[str, Any]: ...

    @property
    def eval_stages(self) -> tuple[str, ...]: ...

    def objective(self, prediction: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]: ...

    def train_dataloader(self) -> Any: ...

    def val_dataloader(self) -> Any: ...

    def test_dataloader(self) -> Any: ...


def missing_members(task: object) -> list[str]:
    """The members of ``Task`` that ``task`` lacks (empty: it is a task)."""
    members = ["model_kwargs", "eval_stages", "objective", "baseline"]
    members += ["train_dataloader", "val_dataloader", "test_dataloader"]
    return [name for name in members if not hasattr(task, name)]


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text, the same in every process and Python session."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableOrder(Sampler):
    """The items of one epoch, in an order fixed by ``(seed, epoch)``, split across ranks.

    Lightning calls ``set_epoch`` at every epoch start; ``skip`` (set when a checkpoint is
    restored) drops the batches of the current epoch that were already trained.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_items(self, epoch: int) -> list[Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        rank, world = _rank_world()
        return len(self.epoch_items(self.epoch)[rank::world])

    def __iter__(self) -> Iterator[Any]:
        rank, world = _rank_world()
        items = self.epoch_items(self.epoch)[rank::world]
        start, self.skip = self.skip, 0
        return iter(items[start:])


class StreamOrder(ResumableOrder):
    """Batch numbers ``epoch · L + i`` for ``i < L``: every batch of generated data is new."""

    def __init__(self, batches_per_epoch: int, seed: int) -> None:
        super().__init__(seed)
        self.batches_per_epoch = batches_per_epoch

    def epoch_items(self, epoch: int) -> list[int]:
        _, world = _rank_world()
        first = epoch * self.batches_per_epoch * world
        return list(range(first, first + self.batches_per_epoch * world))


class ShuffledBatches(ResumableOrder):
    """Batches of indices into a dataset of ``num_items``, reshuffled every epoch (last partial batch dropped)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(seed)
        if num_items < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the dataset ({num_items} items)")
        self.num_items, self.batch_size, self.shuffle = num_items, batch_size, shuffle

    def epoch_items(self, epoch: int) -> list[Tensor]:
        if self.shuffle:
            order = torch.randperm(
                self.num_items, generator=torch.Generator().manual_seed(stable_seed(self.seed, epoch))
            )
        else:
            order = torch.arange(self.num_items)
        usable = self.num_items // self.batch_size * self.batch_size
        return list(order[:usable].view(-1, self.batch_size))


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over whole batches (``batch_size=None``) that Lightning can restart mid-epoch.

    ``progress()`` returns the number of batches of the current epoch already trained; it is
    what ``state_dict`` records (the loader itself reads ahead of training).
    """

    def __init__(self, dataset: Dataset, order: ResumableOrder, progress: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, sampler=order, **kwargs)
        self.order = order
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.order.epoch, "position": self.progress()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.order.set_epoch(state["epoch"])
        self.order.skip = state["position"]


def trained_batches(datamodule: L.LightningDataModule) -> Callable[[], int]:
    """The fit loop's count of batches trained in the current epoch (0 before fitting)."""

    def progress() -> int:
        trainer = datamodule.trainer
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    return progress


class GeneratedBatches(Dataset):
    """Batch number ``g`` of a stream: ``make_batch(generator)`` with a generator seeded by
    ``(seed, stream, g, rank)``."""

    def __init__(
        self,
        make_batch: Callable[[torch.Generator], tuple[Tensor, Tensor]],
        seed: int,
        stream: str,
        length: int | None = None,
    ) -> None:
        self.make_batch, self.seed, self.stream, self.length = make_batch, seed, stream, length

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("a generated training stream has no length")
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rank, _ = _rank_world()
        generator = torch.Generator().manual_seed(stable_seed(self.seed, self.stream, index, rank))
        return self.make_batch(generator)


class GeneratedTask(L.LightningDataModule):
    """Base of the tasks whose data is generated on the fly, batch by batch (copy, adding).

    Subclasses define ``make_batch(generator) -> (inputs, targets)``, ``objective`` and the
    model interface (``model_kwargs``), and may set ``baseline`` (``Task``). Training batches are
    never repeated; the validation and test sets are fixed sets of ``eval_batches`` batches each.
    """

    baseline: float | None = None
    eval_stages: tuple[str, ...] = ("val",)

    def __init__(self, batch_size: int, steps_per_epoch: int, eval_batches: int, seed: int) -> None:
        super().__init__()
        self.batch_size = positive_int("batch size", batch_size)
        self.steps_per_epoch = positive_int("steps_per_epoch", steps_per_epoch)
        self.eval_batches = positive_int("eval_batches", eval_batches)
        self.seed = seed

    def make_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def train_dataloader(self) -> ResumableLoader:
        dataset = GeneratedBatches(self.make_batch, self.seed, "train")
        return ResumableLoader(dataset, StreamOrder(self.steps_per_epoch, self.seed), trained_batches(self))

    def _fixed(self, stream: str) -> DataLoader:
        dataset = GeneratedBatches(self.make_batch, self.seed, stream, self.eval_batches)
        return DataLoader(dataset, batch_size=None, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._fixed("val")

    def test_dataloader(self) -> DataLoader:
        return self._fixed("test")


def fingerprint(images: Tensor, labels: Tensor) -> str:
    """The first 16 hex digits of the sha256 of a data set's arrays as read (images, then labels): two
    runs read the same data exactly when their fingerprints are equal (summary.json keeps them)."""
    digest = hashlib.sha256(images.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def validation_split(num_items: int, fraction: float, seed: int | None) -> tuple[Tensor, Tensor]:
    """``(train, val)`` sorted indices into ``range(num_items)``: ``round(fraction · num_items)`` items for
    validation, drawn by a generator seeded with ``seed`` (``None``: the first ones, as TensorFlow's
    MNIST reader holds out the first 5,000), the rest for training. ``fraction = 0``: no validation."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction!r}")
    num_val = round(fraction * num_items)
    if fraction and not 0 < num_val < num_items:
        raise ValueError(f"a validation fraction of {fraction} of {num_items} training items leaves an empty split")
    if seed is None:
        order = torch.arange(num_items)
    else:
        order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[num_val:].sort().values, order[:num_val].sort().values


class EvaluatedSplits(L.LightningDataModule):
    """Base of the dataset tasks (MNIST, CIFAR10): the images held in memory as ``splits["train"]``,
    ``["val"]`` (the part ``val_fraction`` of the training images that ``split_seed`` picks, possibly
    empty) and ``["test"]``; a subclass says how to ``load`` the images and wrap them (``dataset``).

    The validation loop evaluates the ``eval_stages``: ``"val"`` when there is a validation set and
    ``"test"`` when ``test_every_epoch`` (the paper's scripts train on every training image and report
    the test accuracy after each epoch); the module logs each under its own prefix."""

    baseline: float | None = None
    splits: dict[str, Dataset]
    data_fingerprint: dict[str, str]  # of the training and the test set as read (``fingerprint``), after setup
    val_fraction: float
    split_seed: int | None
    test_every_epoch: bool
    batch_size: int
    eval_batch_size: int
    seed: int

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of the training or the test set."""
        raise NotImplementedError

    def dataset(self, images: Tensor, labels: Tensor, split: str) -> Dataset:
        """The dataset of one split, indexed by whole batches of indices."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = self.load(train=True)
        test = self.load(train=False)
        self.data_fingerprint = {"train": fingerprint(images, labels), "test": fingerprint(*test)}
        train, val = validation_split(len(labels), self.val_fraction, self.split_seed)
        self.splits = {
            "train": self.dataset(images[train], labels[train], "train"),
            "val": self.dataset(images[val], labels[val], "val"),
            "test": self.dataset(*test, "test"),
        }

    def train_dataloader(self) -> ResumableLoader:
        dataset = self.splits["train"]
        return ResumableLoader(
            dataset, ShuffledBatches(len(dataset), self.batch_size, self.seed), trained_batches(self)
        )

    def eval_loader(self, split: str) -> DataLoader:
        return in_order(self.splits[split], self.eval_batch_size)

    @property
    def eval_stages(self) -> tuple[str, ...]:
        return ("val",) * (self.val_fraction > 0) + ("test",) * self.test_every_epoch

    def val_dataloader(self) -> list[DataLoader]:
        return [self.eval_loader(stage) for stage in self.eval_stages]

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")


def in_order(dataset: Dataset, batch_size: int) -> DataLoader:
    """Every item once, in order, in whole batches (``dataset[index_tensor]``): validation and test."""
    return DataLoader(dataset, batch_size=None, sampler=list(torch.arange(len(dataset)).split(batch_size)))


def classification(logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy and accuracy of ``logits (B, classes)`` against ``targets (B,)``."""
    loss = F.cross_entropy(logits, targets)
    return loss, {"acc": (logits.argmax(-1) == targets).float().mean()}

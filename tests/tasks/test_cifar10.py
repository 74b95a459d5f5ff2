"""The CIFAR10 task on generated stand-in images (torchvision checks the real files' md5, so the
loader is replaced; its own missing-data path is checked against an empty folder)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tasks.cifar10 as cifar
from tasks.data import fingerprint
from tests.helpers.data import fake_cifar
from tests.helpers.records import read_metrics
from tests.helpers.runs import FAST
from train import train
from training.record import SUMMARY


def image_ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist())


def test_split_is_disjoint_fixed_and_independent_of_the_run_seed(monkeypatch):
    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    splits = []
    for seed in (0, 1):
        task = cifar.CIFAR10Task(batch_size=8, seed=seed)
        task.setup()
        splits.append({k: image_ids(v.images) for k, v in task.splits.items() if k != "test"})
    assert splits[0] == splits[1]
    train, val = splits[0]["train"], splits[0]["val"]
    assert len(val) == 12 and len(train) == 108 and not train & val


def test_all_training_images_and_the_test_set_every_epoch(monkeypatch):
    # The paper presets: no validation split, the test set evaluated by the validation loop.
    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    task = cifar.CIFAR10Task(batch_size=8, val_fraction=0, test_every_epoch=True)
    task.setup()
    assert image_ids(task.splits["train"].images) == set(range(120)) and len(task.splits["val"]) == 0
    assert task.eval_stages == ("test",)
    (loader,) = task.val_dataloader()
    assert image_ids(
        torch.cat([x for x, _ in loader])
        .mul(torch.tensor(cifar.STD).view(1, 3, 1, 1))
        .add(torch.tensor(cifar.MEAN).view(1, 3, 1, 1))
        .mul(255)
        .round()
    ) == set(range(40))  # every test image
    with pytest.raises(ValueError, match=r"validation fraction must be in \[0, 1\), got 1"):
        cifar.CIFAR10Task(val_fraction=1)


def test_random_crop_flip_is_a_crop_of_the_reflect_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 6, 6, generator=g)
    out = cifar.random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert out.shape == x.shape
    # torchvision's RandomCrop(padding=2, padding_mode="reflect"): the border mirrored, edge not repeated
    reflect = [abs(i) if i < 6 else 2 * 5 - i for i in range(-2, 8)]  # 2 1 | 0 1 2 3 4 5 | 4 3
    padded = x[..., reflect, :][..., reflect]
    for i in range(16):
        candidates = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    again = cifar.random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert torch.equal(out, again)


def test_training_batches_are_augmented_reproducibly_and_eval_batches_not(monkeypatch):
    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    task = cifar.CIFAR10Task(batch_size=8)
    task.setup()
    a, b = next(iter(task.train_dataloader())), next(iter(task.train_dataloader()))
    assert torch.equal(a[0], b[0]) and a[0].shape == (8, 3, 32, 32)
    (val_loader,) = task.val_dataloader()
    x, y = next(iter(val_loader))
    images, labels = task.splits["val"].images, task.splits["val"].labels
    expected = (images[:8].float() / 255 - torch.tensor(cifar.MEAN).view(1, 3, 1, 1)) / torch.tensor(cifar.STD).view(
        1, 3, 1, 1
    )
    assert torch.allclose(x, expected) and torch.equal(y, labels[:8])


def test_missing_data_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR10 is not in .*cifar-10-batches-py.*download"):
        cifar.load_cifar10(tmp_path, train=True)


RUNS = [
    ("experiment=cifar10_projunn_t",),
    ("experiment=cifar10_projunn_d",),
    ("experiment=cifar10_projunn_t", "optim.base=AuthorsRMSprop"),  # the authors' RMSprop, for exact replication
    ("experiment=cifar10_cayley",),
    ("experiment=cifar10_resnet9",),
    ("task=cifar10",),  # no model given: the task's default, the orthogonal ResNet9 with projUNN-T
]


@pytest.mark.integration
@pytest.mark.parametrize("overrides", RUNS, ids=[" ".join(r) for r in RUNS])
def test_cifar10_runs_train_on_cifar_shaped_data(compose_cfg, tmp_path, monkeypatch, overrides):
    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    cfg = compose_cfg(*overrides, "model.channels=[4,8,8]", "task.batch_size=16", "unitarity_every=1", *FAST)
    assert math.isfinite(train(cfg))
    rows = read_metrics(tmp_path)
    evaluated = [r for r in rows if r.get("test/acc")]
    assert len(evaluated) == (2 if cfg.task.test_every_epoch else 1)  # (the validation loop's, then the final test)
    assert bool([r for r in rows if r.get("val/acc")]) == (cfg.task.val_fraction > 0)
    errors = [float(r["unitarity/max_error"]) for r in rows if r.get("unitarity/max_error")]
    assert len(errors) == (3 if cfg.model.orthogonal else 0)
    (sitting,) = json.loads((tmp_path / SUMMARY).read_text())["sittings"]
    assert sitting["data"] == {split: fingerprint(*fake_cifar()(None, split == "train")) for split in ("train", "test")}
    assert max(errors, default=0) < 1e-5  # projUNN-T/D and the Cayley map keep every frequency's matrix unitary


def test_the_data_fingerprint_names_the_arrays_read(monkeypatch):
    """Two loads of the same files give one fingerprint; one pixel changed gives another."""
    images, labels = fake_cifar()(None, True)
    assert fingerprint(images, labels) == fingerprint(images.clone(), labels.clone())
    changed = images.clone()
    changed[7, 1, 2, 3] ^= 1
    assert fingerprint(changed, labels) != fingerprint(images, labels)
    assert fingerprint(images, (labels + 1) % 10) != fingerprint(images, labels)

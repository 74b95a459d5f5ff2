"""The CIFAR10 task on generated stand-in images (torchvision checks the real files' md5, so the
loader is replaced; its own missing-data path is checked against an empty folder)."""
from __future__ import annotations

import math

import pytest
import torch

import projunn
import tasks.cifar10 as cifar
from conftest import FAST
from train import train


def fake_cifar(n_train: int = 120, n_test: int = 40):
    def load(root, train):
        n = n_train if train else n_test
        g = torch.Generator().manual_seed(1 if train else 2)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        images[:, 0, 0, 0] = torch.arange(n) % 256  # an id, to follow images through the split
        images[:, 0, 0, 1] = torch.arange(n) // 256
        return images, torch.arange(n) % 10

    return load


def image_ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist())


def test_split_is_disjoint_fixed_and_independent_of_the_run_seed(monkeypatch):
    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    splits = []
    for seed in (0, 1):
        task = cifar.CIFAR10Task(batch_size=8, seed=seed)
        task.setup()
        splits.append({k: image_ids(v[0]) for k, v in task._splits.items() if k != "test"})
    assert splits[0] == splits[1]
    train, val = splits[0]["train"], splits[0]["val"]
    assert len(val) == 12 and len(train) == 108 and not train & val


def test_random_crop_flip_is_a_crop_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 6, 6, generator=g)
    out = cifar.random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
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
    (x, y), = [next(iter(task.val_dataloader()))]
    images, labels = task._splits["val"]
    expected = (images[:8].float() / 255 - torch.tensor(cifar.MEAN).view(1, 3, 1, 1)) / torch.tensor(cifar.STD).view(1, 3, 1, 1)
    assert torch.allclose(x, expected) and torch.equal(y, labels[:8])


def test_missing_data_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR10 is not in .*cifar-10-batches-py.*download"):
        cifar.load_cifar10(tmp_path, train=True)


@pytest.mark.parametrize("optim", ["projunn_t", "projunn_d"])
def test_orthogonal_resnet9_trains_on_cifar_shaped_data(compose_cfg, tmp_path, monkeypatch, optim):
    monkeypatch.setattr(cifar, "load_cifar10", fake_cifar())
    cfg = compose_cfg(
        "task=cifar10", "model=orthogonal_resnet9", f"optim={optim}", "model.channels=[4,4,8,8]", "model.init=identity",
        "task.batch_size=16", *FAST,
    )
    metric = train(cfg)
    assert math.isfinite(metric)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    unitary = [v for k, v in state.items() if k.endswith(("weight", "weight_real")) and v.ndim == 3]
    assert unitary and max(projunn.unitarity_error(W).max().item() for W in unitary) < 1e-5

"""Sequential / permuted MNIST on tiny generated IDX files: the fixed permutation, the split, the
loaders, a few composed training steps per preset, and the missing-data error."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

import projunn
from tasks.data import ResumableLoader, validation_split
from tasks.mnist import MEAN, RAW_FILES, STD, SequentialMNIST, ensure_mnist, pixel_permutation
from tests.helpers import ROOT
from tests.helpers.data import MNIST_TRAIN
from tests.helpers.records import read_metrics
from tests.helpers.runs import FAST
from train import train


def expected_sequences(images: np.ndarray, permute: bool, standardize: bool = True) -> torch.Tensor:
    """The reference: pixels in [0, 1], standardised, in the field's fixed order, one per step."""
    pixels = images.reshape(len(images), 784).astype(np.float64) / 255.0
    if standardize:
        pixels = (pixels - MEAN) / STD
    if permute:
        pixels = pixels[:, np.random.RandomState(92916).permutation(784)]
    return torch.from_numpy(pixels).float().unsqueeze(-1)


def ready(root, **kwargs) -> SequentialMNIST:
    task = SequentialMNIST(data_root=str(root), download=False, **kwargs)
    task.prepare_data()
    task.setup("fit")
    return task


def test_permutation_is_the_fixed_one():
    perm = pixel_permutation()
    assert perm.tolist()[:10] == [319, 576, 323, 107, 355, 716, 197, 20, 625, 60]
    assert torch.equal(perm.sort().values, torch.arange(784))
    assert torch.equal(perm, pixel_permutation())


@pytest.mark.parametrize(
    "permute,standardize", [(True, True), (False, True), (True, False)], ids=["pmnist", "smnist", "pmnist-unit-range"]
)
def test_every_split_holds_the_images_in_the_same_pixel_order(mnist, permute, standardize):
    root, arrays = mnist
    task = ready(root, permute=permute, standardize=standardize, val_fraction=0.25, split_seed=3)
    train_idx, val_idx = validation_split(MNIST_TRAIN, 0.25, 3)
    images, labels = arrays["train"]
    reference = expected_sequences(images, permute, standardize)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        assert torch.allclose(task.splits[split].inputs, reference[idx], atol=1e-6), split
        assert task.splits[split].targets.tolist() == labels[idx.numpy()].tolist()
    test_images, test_labels = arrays["t10k"]
    assert torch.allclose(task.splits["test"].inputs, expected_sequences(test_images, permute, standardize), atol=1e-6)
    assert task.splits["test"].targets.tolist() == test_labels.tolist()


def test_permuted_is_sequential_reordered(mnist):
    root, _ = mnist
    sequential, permuted = ready(root, permute=False), ready(root, permute=True)
    for split in ("train", "val", "test"):
        assert torch.equal(permuted.splits[split].inputs, sequential.splits[split].inputs[:, pixel_permutation()])


def test_validation_split_is_disjoint_deterministic_and_ten_percent():
    train_idx, val_idx = validation_split(60000, 0.1, 5544)
    assert len(val_idx) == 6000 and len(train_idx) == 54000
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert torch.equal(torch.cat([train_idx, val_idx]).sort().values, torch.arange(60000))
    again_train, again_val = validation_split(60000, 0.1, 5544)
    assert torch.equal(train_idx, again_train) and torch.equal(val_idx, again_val)
    assert not torch.equal(val_idx, validation_split(60000, 0.1, 5545)[1])


def test_split_variants_of_the_baselines():
    # val_fraction 0: every image trains (projUNN, expRNN); split_seed None: the first ones are held
    # out, as TensorFlow's MNIST reader that scoRNN uses holds out the first 5,000.
    train_idx, val_idx = validation_split(60000, 0, 5544)
    assert torch.equal(train_idx, torch.arange(60000)) and len(val_idx) == 0
    train_idx, val_idx = validation_split(60000, 5000 / 60000, None)
    assert torch.equal(val_idx, torch.arange(5000)) and torch.equal(train_idx, torch.arange(5000, 60000))
    for fraction in (-0.1, 1, 1.5):
        with pytest.raises(ValueError, match=rf"validation fraction must be in \[0, 1\), got {fraction}"):
            validation_split(60000, fraction, 0)


def test_all_images_train_and_the_test_set_is_evaluated_every_epoch(mnist):
    root, arrays = mnist
    task = ready(root, val_fraction=0, test_every_epoch=True, batch_size=8)
    assert len(task.splits["train"]) == MNIST_TRAIN and len(task.splits["val"]) == 0
    assert task.eval_stages == ("test",)
    (loader,) = task.val_dataloader()
    assert torch.equal(torch.cat([x for x, _ in loader]), task.splits["test"].inputs)
    assert ready(root).eval_stages == ("val",) and ready(root, test_every_epoch=True).eval_stages == ("val", "test")


def test_split_does_not_depend_on_the_run_seed(mnist):
    root, _ = mnist
    a, b = ready(root, seed=0, batch_size=8), ready(root, seed=1, batch_size=8)
    assert torch.equal(a.splits["val"].inputs, b.splits["val"].inputs)
    assert torch.equal(a.splits["train"].inputs, b.splits["train"].inputs)
    first = lambda task: next(iter(task.train_dataloader()))[1]
    assert not torch.equal(first(a), first(b))  # the run seed changes the training order only


def test_loaders(mnist):
    root, _ = mnist
    task = ready(root, batch_size=8, eval_batch_size=5)
    loader = task.train_dataloader()
    assert isinstance(loader, ResumableLoader) and loader.num_workers == 0
    batches = list(loader)
    assert len(batches) == 36 // 8
    for x, y in batches:
        assert x.shape == (8, 784, 1) and x.dtype == torch.float32 and y.shape == (8,) and y.dtype == torch.int64
    (val_loader,) = task.val_dataloader()
    for split, loader in (("val", val_loader), ("test", task.test_dataloader())):
        x = torch.cat([x for x, _ in loader])
        assert torch.equal(x, task.splits[split].inputs)  # every image once, in order (last batch partial)
    assert task.model_kwargs == {"input_size": 1, "output_size": 10, "readout": "last"}


def test_objective_accuracy():
    task = SequentialMNIST()
    logits = torch.tensor([[0.0, 5.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    loss, metrics = task.objective(logits, torch.tensor([1, 0, 0, 0]))
    assert metrics["acc"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0, 0, 0])).item())
    assert task.baseline == pytest.approx(math.log(10))


PRESETS = [
    ("experiment=pmnist",),
    ("experiment=pmnist", "optim=projunn_t", "task=smnist"),
    ("experiment=pmnist_exprnn",),
    ("experiment=pmnist_scornn", "optim.negative_ones=1"),  # (17 at the preset's n = 170)
    ("experiment=pmnist_lstm",),
]


@pytest.mark.integration
@pytest.mark.parametrize("overrides", PRESETS, ids=[" ".join(p) for p in PRESETS])
def test_presets_train_a_few_steps(compose_cfg, tmp_path, mnist, overrides):
    root, _ = mnist
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_cfg(
        *overrides,
        f"data_root={root}",
        "model.hidden_size=8",
        "task.batch_size=4",
        "task.eval_batch_size=3",
        *FAST,
        run_dir=run_dir,
    )
    metric = train(cfg)
    assert metric is not None and math.isfinite(metric)
    assert cfg.task.permute == ("task=smnist" not in overrides)
    rows = read_metrics(run_dir)
    columns = set(rows[0])
    assert {"train/loss", "train/acc", "test/acc", "test/acc_best", "time/step_s", "time/update_s"} <= columns
    assert ("val/acc" in columns) == ("experiment=pmnist_scornn" in overrides)  # scoRNN holds out 5,000 images
    tested = [r for r in rows if r.get("test/acc_best")]
    # the test set after training's validation
    assert len(tested) == 1 and tested[0]["test/acc_best"] == tested[0]["test/acc"]
    assert len([r for r in rows if r.get("train/loss")]) == 3
    if "experiment=pmnist_lstm" not in overrides:
        errors = [float(r["unitarity/max_error"]) for r in rows if r.get("unitarity/max_error")]
        assert len(errors) == 3 and max(errors) < 1e-5


def test_table2_grid_is_one_multirun(compose_cfg):
    """experiment=pmnist_table2 sweeps the 40 projUNN points (projector × n × k); each builds its optimizer."""
    cfg = compose_cfg("experiment=pmnist_table2")
    parser = OverridesParser.create()
    params = {
        key: list(parser.parse_override(f"{key}={value}").sweep_string_iterator())
        for key, value in cfg.hydra.sweeper.params.items()
    }
    assert params == {
        "optim": ["projunn_t", "projunn_d"],
        "model.hidden_size": ["116", "170", "360", "512"],
        "k": ["1", "2", "4", "8", "16"],
    }
    for optim in params["optim"]:
        cfg = compose_cfg("experiment=pmnist_table2", f"optim={optim}")
        assert cfg.trainer.max_epochs == 100 and cfg.task.permute
        for n, k in itertools.product(params["model.hidden_size"], params["k"]):
            cfg.model.hidden_size, cfg.k = int(n), int(k)
            model = instantiate(cfg.model, input_size=1, output_size=10, readout="last")
            optimizer = instantiate(cfg.optim)(model)
            assert isinstance(optimizer, projunn.ProjUNN) and model.rnn.weight_hh.shape == (int(n), int(n))
            assert optimizer.param_groups[-1]["rank"] == int(k)


def test_missing_data_without_download_names_the_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ensure_mnist(tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and all(name in message for name in RAW_FILES)
    assert "\n" not in message


def test_failed_download_becomes_the_clear_error(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def offline(self):
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n"
            "<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(FileNotFoundError, match=r"download failed: <urlopen error \[Errno -2\]"):
        ensure_mnist(tmp_path, download=True)


def test_present_files_are_not_downloaded(mnist, monkeypatch):
    from torchvision.datasets import MNIST

    def no_network(self):
        raise AssertionError("tried to download files that are present")

    monkeypatch.setattr(MNIST, "download", no_network)
    root, _ = mnist
    assert ensure_mnist(root, download=True) == root.resolve()


@pytest.mark.integration
def test_command_line_missing_data_is_one_error_line(tmp_path):
    """``python train.py task=pmnist data_root=<empty>``: the download fails at once (a proxy on a closed
    port stands for "no internet"), and the user sees one line naming the folder and the files."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proxy = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "http_proxy": proxy,
        "https_proxy": proxy,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "no_proxy": "",
        "NO_PROXY": "",
    }
    command = [
        sys.executable,
        "train.py",
        "task=pmnist",
        f"data_root={empty}",
        "logger=csv",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    line = errors[0]
    assert str(empty.resolve() / "MNIST" / "raw") in line
    assert all(name in line for name in RAW_FILES)
    assert "download failed" in line and "task.download=true" in line
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("orthogonal,optim", [(True, "projunn_t"), (False, "rmsprop")], ids=["orthogonal", "plain"])
def test_depth_study_cnn_trains_on_mnist_images(compose_cfg, tmp_path, mnist, orthogonal, optim):
    root, _ = mnist
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_cfg(
        "experiment=mnist_depth100",
        f"optim={optim}",
        f"model.orthogonal={orthogonal}",
        "model.depth=3",
        "model.channels=4",
        f"data_root={root}",
        "task.batch_size=4",
        "task.eval_batch_size=3",
        *FAST,
        run_dir=run_dir,
    )
    metric = train(cfg)
    assert metric is not None and math.isfinite(metric)
    rows = read_metrics(run_dir)
    assert len([r for r in rows if r.get("train/loss")]) == 3
    if orthogonal:
        state = torch.load(run_dir / "last.ckpt", weights_only=False)["state_dict"]
        unitary = [v for k, v in state.items() if k.endswith(("weight", "weight_real")) and v.ndim == 3]
        assert len(unitary) >= 3 and max(projunn.unitarity_error(W).max().item() for W in unitary) < 1e-5

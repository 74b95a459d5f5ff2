"""scripts/reproduction/lockstep: its one-line refusal without the authors' code, its deterministic samplers and
its map between the authors' frequency layout and ours. The comparison itself needs a checkout of
facebookresearch/projUNN: ``LOCKSTEP_AUTHORS=<checkout> pytest -m slow tests/scripts/test_lockstep.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import projunn
from scripts.reproduction import authors
from scripts.reproduction.lockstep import layout, samplers
from tests.helpers import ROOT
from tests.helpers.runs import ONE_THREAD


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scripts.reproduction.lockstep", *args]
    return subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=timeout)


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "facebookresearch/projUNN" in lines[0] and "437eb05" in lines[0] and "5285b00" in lines[0]
    return lines[0]


@pytest.mark.integration
def test_without_the_authors_code_it_says_what_it_needs_in_one_line(tmp_path):
    assert "no --authors given" in refusal(run())
    assert "is not a git checkout" in refusal(run("--authors", str(tmp_path)))


@pytest.mark.integration
def test_each_unusable_checkout_is_named(tmp_path):
    def reason(path: Path | None) -> str:
        with pytest.raises(authors.NeedsAuthors) as error:
            authors.extract(path, tmp_path / "out")
        return str(error.value)

    assert reason(tmp_path / "missing") == f"{tmp_path / 'missing'} does not exist"
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    assert reason(other) == f"{other} has no commit 437eb05 (not the authors' repository, or a shallow clone)"


@pytest.mark.parametrize("sampler", ["topk", "sketch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_deterministic_samplers_reproduce_a_rank_k_input(sampler, dtype):
    g = torch.Generator().manual_seed(0)
    X, Y = (torch.randn(5, 30, 3, dtype=dtype, generator=g) for _ in range(2))
    G = X @ Y.mH  # a batch of rank-3 matrices
    a, b = samplers.SAMPLERS[sampler](G, 3)
    assert a.dtype == b.dtype == dtype and a.shape == b.shape == (5, 30, 3)
    assert torch.allclose(a @ b.mH, G, atol=1e-12 * G.abs().max())
    again = samplers.SAMPLERS[sampler](G, 3)
    assert torch.equal((a @ b.mH), (again[0] @ again[1].mH))  # no random draw


def test_top_k_is_the_best_rank_k_approximation():
    G = torch.randn(40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = samplers.top_k(G, 4)
    tail = torch.linalg.svdvals(G)[4:]  # Eckart–Young: the error of the best rank-4 approximation
    assert torch.allclose(torch.linalg.matrix_norm(G - a @ b.mH), tail.square().sum().sqrt())


def test_fixed_sketch_keeps_conjugate_pairs_paired():
    """The same real sketch for every matrix: ``conj(G)`` is approximated by ``conj`` of ``G``'s
    approximation, so the authors' paired frequencies stay paired under it (their LSI draws a complex sketch)."""
    G = torch.randn(2, 16, 16, dtype=torch.complex128, generator=torch.Generator().manual_seed(2))
    G[1] = G[0].conj()
    a, b = samplers.fixed_sketch(G, 1)
    step = a @ b.mH
    assert torch.allclose(step[1], step[0].conj(), atol=1e-14)
    real = samplers.fixed_sketch(G.real.contiguous(), 1)
    assert not real[0].is_complex()


@pytest.mark.parametrize("size", [(4, 4), (8, 8), (6, 5), (16, 16)])
def test_authors_layout_of_our_matrices_is_our_layers_kernel(size):
    """``to_authors`` puts our stored matrices where the authors' layer keeps its own (a matrix per
    ``rfft2`` bin, bin ``u·W_f + v``): there our layer's own ``kernel()`` has them; and back."""
    H, W = size
    layer = projunn.OrthogonalConv2d(3, 3, size, init="haar", dtype=torch.float64)
    grid = layout.to_authors(layer.weight.detach(), layer.weight_real.detach(), size)
    assert torch.equal(grid, layer.kernel().detach().reshape(H * (W // 2 + 1), 3, 3))
    free, real = layout.from_authors(grid, size)
    assert torch.equal(free, layer.weight.detach()) and torch.equal(real, layer.weight_real.detach())
    classes = layout.bin_classes(H, W)
    assert sorted(torch.cat(list(classes.values())).tolist()) == list(range(H * (W // 2 + 1)))
    assert len(classes["self-conjugate"]) == layer.num_real
    assert len(classes["paired edge"]) == 2 * (layer.num_complex - H * ((W - 1) // 2))
    assert layout.hermitian_error(grid, size) == 0.0
    grid[classes["paired edge"][0]] *= 1j  # one bin no longer the conjugate of its partner
    assert layout.hermitian_error(grid, size) > 1


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LOCKSTEP_AUTHORS"), reason="LOCKSTEP_AUTHORS=<checkout of projUNN> not set")
def test_copy_and_adding_agree_with_the_authors_code_to_rounding(tmp_path):
    """With the authors' 2 × 2 eigen-solve in complex128, their copy and adding steps and ours agree to rounding."""
    import json

    out = tmp_path / "lockstep.json"
    args = ["--authors", os.environ["LOCKSTEP_AUTHORS"], "--tasks", "copy", "adding", "--steps", "3"]
    result = run(*args, "--copy-T", "20", "--adding-T", "20", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for task in json.loads(Path(out).read_text())["tasks"]:
        assert all(row["dW_c128"] < 1e-13 for row in task["rows"])
        assert task["rows"][0]["dout"] < 1e-13


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LOCKSTEP_AUTHORS"), reason="LOCKSTEP_AUTHORS=<checkout of projUNN> not set")
def test_the_unconstrained_resnet9_is_the_authors_to_the_bit(tmp_path):
    """Their script without ``--unitary`` and ``experiment=cifar10_resnet9``: the same weights, the same
    steps and the same evaluation pass, bit for bit."""
    import json

    out = tmp_path / "lockstep.json"
    args = ["--authors", os.environ["LOCKSTEP_AUTHORS"], "--tasks", "cifar_resnet9", "--steps", "2", "--batch", "4"]
    result = run(*args, "--image-size", "8", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (task,) = json.loads(out.read_text())["tasks"]
    assert all(row["dout"] == 0.0 and row["dW"] == 0.0 and row["dloss"] == 0.0 for row in task["rows"])
    assert task["evaluation"]["dout"] == 0.0
    assert "bitwise equal" in task["verdict"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--tasks", "cifar_t", "--stream", "authors"], "--stream authors: cifar_t runs their script with --unitary"),
        (["--tasks", "cifar_resnet9", "--stream", "preset", "--image-size", "16"], "images are 32 × 32"),
        (["--tasks", "copy", "--stream", "preset"], "a CIFAR10 stream, for the CIFAR10 tasks"),
    ],
)
def test_a_real_stream_is_refused_where_it_is_not_defined(args, expected, capsys):
    from scripts.reproduction.lockstep.__main__ import main

    try:
        status = main(args)  # refused before the authors' code is looked for
    except SystemExit as exit:  # argparse's error
        status = exit.code
    assert status == 2 and expected in capsys.readouterr().err


def write_cifar_batches(root: Path, n_train: int = 40, n_test: int = 16) -> None:
    """Random images in torchvision's ``cifar-10-batches-py`` layout (five training pickles, a test one)."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    parts = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in parts:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LOCKSTEP_AUTHORS"), reason="LOCKSTEP_AUTHORS=<checkout of projUNN> not set")
def test_on_either_codes_stream_the_unconstrained_resnet9_is_the_authors_to_the_bit(tmp_path):
    """``--stream preset`` and ``--stream authors`` in float32: both sides step on one code's real batches
    and agree to the bit, and both are evaluated on the whole test set; the two streams differ."""
    import json

    write_cifar_batches(tmp_path)
    site = tmp_path / "site"  # random images, not CIFAR10: torchvision's md5 checks would refuse them
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import torchvision.datasets.cifar as c\n"
        "c.CIFAR10._check_integrity = lambda self: True\n"
        "c.check_integrity = lambda *a, **k: True\n"
    )
    env = {**ONE_THREAD, "PYTHONPATH": str(site)}
    first_losses = {}
    for stream in ("preset", "authors"):
        out = tmp_path / f"{stream}.json"
        args = ["--authors", os.environ["LOCKSTEP_AUTHORS"], "--tasks", "cifar_resnet9", "--stream", stream]
        args += ["--dtype", "float32", "--steps", "2", "--batch", "4", "--data-root", str(tmp_path), "--json", str(out)]
        command = [sys.executable, "-m", "scripts.reproduction.lockstep", *args]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        (task,) = json.loads(out.read_text())["tasks"]
        assert task["stream"] == stream and task["dtype"] == "float32" and stream in task["data"]
        assert all(row["dout"] == 0.0 and row["dW"] == 0.0 and row["dloss"] == 0.0 for row in task["rows"])
        evaluation = task["evaluation"]
        assert evaluation["images"] == 16 and evaluation["dout"] == 0.0
        assert evaluation["accuracy_authors"] == evaluation["accuracy_ours"]
        first_losses[stream] = task["rows"][0]["loss_ours"]
    assert first_losses["preset"] != first_losses["authors"]

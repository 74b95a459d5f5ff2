"""The scripts run one way, ``python -m scripts.GROUP.NAME``, and are listed by ``python -m scripts``; the
benchmarks run at tiny sizes and print the tables README and scripts/bench/device_check.sh rely on (their
numbers are timings: parsed, never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.records import tables
from tests.helpers.runs import ONE_THREAD

pytestmark = pytest.mark.integration  # every test here runs train.py or a script


def run(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


HELP_ALL = """
import runpy, sys
for name in sys.argv[1:]:
    sys.argv = [name, "--help"]
    try:
        runpy.run_module(name, run_name="__main__")
    except SystemExit as exit:
        assert exit.code in (0, None), (name, exit.code)
    print("ran", name)
"""


DEVICE_CHECK = ROOT / "scripts" / "bench" / "device_check.sh"


def test_every_script_runs_as_a_module_and_is_listed():
    """Each module and command package of scripts/ (one with a ``__main__.py``) takes ``--help`` as ``python -m
    scripts.GROUP.NAME`` (exit 0; one process for all), ``python -m scripts`` lists it under its group, none
    imports a sibling by bare name, and every ``python -m scripts...`` that README and docs/ give names one of
    them (``scripts.GROUP.NAME`` is a placeholder)."""
    scripts = ROOT / "scripts"
    packages = sorted(p.parent for p in scripts.rglob("__main__.py") if p.parent != scripts)
    modules = [
        p
        for p in scripts.rglob("*.py")
        if p.stem not in ("__init__", "__main__") and not any(package in p.parents for package in packages)
    ]
    names = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in modules + packages)
    assert {"scripts.results.report", "scripts.reproduction.lockstep", "scripts.bench.harness"} <= set(names)
    *_, shared = blocks = run("-m", "scripts").split("\n\n")  # a block a group, then those shared by them
    assert shared.startswith("shared by them:")
    for name in names:
        group = name.split(".")[1] if name.count(".") == 2 else None
        block = next((b for b in blocks if b.startswith(f"{group}/ ")), "")
        assert re.search(rf"^  {re.escape(name)} ", block + "\n" + shared, re.M), name
    for source in scripts.rglob("*.py"):
        siblings = [p.stem for p in source.parent.glob("*.py")] + [p.name for p in source.parent.glob("*/")]
        assert not re.search(rf"^\s*(from|import) ({'|'.join(siblings)})\b", source.read_text(), re.M), source
    ran = [line for line in run("-c", HELP_ALL, *names).splitlines() if line.startswith("ran ")]
    assert ran == [f"ran {name}" for name in names]
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), DEVICE_CHECK]
    documented = {m for page in pages for m in re.findall(r"-m\s+(scripts(?:\.[a-z_]\w*)+)", page.read_text())}
    assert documented and documented <= set(names), documented - set(names)


def test_bench_update(tmp_path):
    (table,) = tables(
        run(
            "-m",
            "scripts.bench.update",
            *"--sizes 16 32 --reps 2 --budget 0.05 --out".split(),
            str(tmp_path / "bench_update.md"),
        )
    )
    assert table[0][0] == "n" and [row[0] for row in table[1:]] == ["16", "32"]
    assert all(float(cell) > 0 for row in table[1:] for cell in row[1:6])
    assert tables((tmp_path / "bench_update.md").read_text()) == [table]  # --out: what was printed
    assert (tmp_path / "bench_update.png").stat().st_size > 0  # and the plot beside it


def test_bench_update_against_another_checkout(tmp_path):
    """--against: the projUNN steps of another checkout (here this one again), side by side."""
    out = run(
        "-m",
        "scripts.bench.update",
        *"--sizes 16 --reps 2 --budget 0.05".split(),
        "--against",
        str(ROOT),
    )
    main, versus = tables(out)
    assert [row[0] for row in versus[1:]] == ["16"] and len(versus[0]) == 7
    assert all(float(cell) > 0 for cell in versus[1][1:])
    missing = subprocess.run(
        [sys.executable, "-m", "scripts.bench.update", "--against", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "no projunn/__init__.py" in missing.stderr


def test_bench_rnn_tables_every_task_against_nn_rnn_and_the_floor():
    found = tables(run("-m", "scripts.bench.rnn", "--T", "12", "--hidden", "8", "--batch", "4", "--reps", "2"))
    assert len(found) == 3  # pMNIST, copy and adding sizes
    for table in found:
        names = [row[0] for row in table[1:]]
        assert names == [
            "nn.RNN(relu) + RMSprop",
            "UnitaryRNN (default) + projUNN-T k=1",
            "UnitaryRNN, PyTorch loop + projUNN-T k=1",
            "UnitaryRNN, step loop + projUNN-T k=1",
            "expRNN (the layer's default)",
            "floor: the recurrence's matrix products",
            "floor: all the step's matrix products",
        ]
        # each ratio column against its own reference
        assert table[1][4] == "1.00" and table[-2][5] == "1.00" and table[-1][6] == "1.00"
        assert all(float(row[3]) > 0 and float(row[5]) > 0 and float(row[6]) > 0 for row in table[1:])
        # (no comparison of two timings: at these sizes a loaded machine inverts microseconds; CI failed on it)


def test_bench_rnn_profiles_the_default_path_the_pytorch_loop_and_the_step_loop():
    out = run("-m", "scripts.bench.rnn", "--task", "pmnist", "--T", "12", "--hidden", "8", "--batch", "4", "--profile")
    assert out.count("operators by self time") == 3 and "_Recurrence" in out and "aten::mm" in out


def test_bench_conv_depth_study():
    (table,) = tables(
        run("-m", "scripts.bench.conv", "--skip-resnet", "--depth", "3", "--channels", "4", "--deep-batch", "2")
    )
    assert [row[:2] for row in table[1:]] == [
        ["orthogonal full-width", "maxmin"],
        ["orthogonal full-width", "relu"],
        ["nn.Conv2d 3×3, default init", "relu"],
        ["nn.Conv2d 3×3, default init", "maxmin"],
    ]
    assert abs(float(table[1][4]) - 1) < 1e-4  # the orthogonal MaxMin stack is an isometry


def test_bench_conv_layers_pairs_each_orthogonal_convolution_with_the_3x3_in_its_place():
    out = run("-m", "scripts.bench.conv", "--layers", "--skip-resnet", "--skip-deep", "--batch", "2", "--reps", "1")
    (table,) = tables(out)
    *layers, total = table[1:]
    assert [row[0] for row in layers] == [
        "1: 3→64 at 32×32",
        "2: 64→128 at 32×32",
        *["3: 128→128 at 16×16", "4: 128→128 at 16×16", "5: 128→256 at 16×16"],
        *[f"{i}: 256→256 at 8×8" for i in (6, 7, 8)],
    ]
    for _, orthogonal, ordinary, ratio, *_ in layers:  # the ratio of the times, each rounded to ±0.5 ms
        o, c = float(orthogonal), float(ordinary)
        assert (o - 0.5) / (c + 0.5) - 0.005 <= float(ratio) <= (o + 0.5) / max(c - 0.5, 1e-9) + 0.005
    assert total[0] == "all"
    for column in (1, 2):  # the sum of the unrounded times: within the rounding of eight rows
        assert abs(int(total[column]) - sum(int(row[column]) for row in layers)) <= 4
    assert re.search(r"2048×2048×2048 float32 product .*: \d+ GFLOP/s", out)


def test_every_benchmark_takes_a_device_and_device_check_runs_them():
    script = DEVICE_CHECK.read_text()
    for name in ("update", "rnn", "conv", "stiefel"):
        command = f"-m scripts.bench.{name}"
        assert "--device" in run(*command.split(), "--help")
        assert f"{command} --device cuda" in script
    assert "tests/library tests/training/test_devices.py" in script
    assert subprocess.run(["bash", "-n", str(DEVICE_CHECK)]).returncode == 0


def test_bench_stiefel_quick(tmp_path):
    """--quick: every method (those whose package is absent reported, not failed) at two tiny shapes;
    the table is written to --out and the plot beside it."""
    out = run("-m", "scripts.bench.stiefel", "--quick", "--out", str(tmp_path / "bench_stiefel.md"))
    (table,) = tables(out)
    assert table[0][:5] == ["(n, p)", "method", "ms per step", "/ RMSprop", "/ projUNN-T"]
    rows = {(row[0], row[1]): row for row in table[1:]}
    methods = ["RMSprop", "projUNN-T k=1", "projUNN-D k=1", "torch orthogonal", "geotorch"]
    methods += ["geoopt canonical", "geoopt euclidean", "POGO"]
    assert set(rows) == {(shape, method) for shape in ("(64, 8)", "(32, 32)") for method in methods}
    for (shape, method), row in rows.items():
        if row[2] == "—":  # an optional peer that is not installed
            assert method in ("geotorch", "geoopt canonical", "geoopt euclidean", "POGO") and "not installed" in row[5]
            continue
        assert float(row[2]) > 0 and float(row[4 if method == "projUNN-T k=1" else 2]) > 0
        if method != "RMSprop":  # the constrained methods stay on the manifold over the 10 steps
            assert float(row[5].split()[0]) < 1e-4, (shape, method, row[5])
    assert float(rows[("(64, 8)", "RMSprop")][5]) > 1e-3  # the unconstrained floor leaves it
    assert (tmp_path / "bench_stiefel.png").stat().st_size > 0
    assert (tmp_path / "bench_stiefel.md").read_text().count("| (64, 8) |") == len(methods)

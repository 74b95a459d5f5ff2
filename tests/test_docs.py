"""README.md and the manual in docs/ stay true: their Python examples run, their train.py commands
compose, and each one runs in reduced form (a few steps at tiny sizes; a sweep over its first two
points, through the launcher it names), except what needs a GPU or a SLURM cluster."""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
import zipfile

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT
from tests.helpers.runs import run_sweep
from train import train
from training.record import METRICS, SUMMARY

# docs/extending.md adds a task to a copy of the repository: tests/test_extending.py runs its examples there.
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "extending.md")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_run(page):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    if page.name == "README.md":
        assert blocks, "README has no Python example"
    for block in blocks:
        exec(compile(block, str(page.relative_to(ROOT)), "exec"), {"__name__": "__readme__"})


def placeholder_choice(word: str) -> bool:
    """``experiment=<preset>``: a config group's option left to the reader, so no command to run."""
    key, _, value = word.partition("=")
    return value.startswith("<") and (ROOT / "conf" / key).is_dir()


def train_commands() -> list[list[str]]:
    """Every ``python train.py ...`` of the pages, up to the end of its line (a comment, a backtick)."""
    commands = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            if "python train.py" in line:
                command = line.split("python train.py", 1)[1].split("#", 1)[0].split("`", 1)[0]
                words = shlex.split(command)
                if words and not any(placeholder_choice(w) for w in words):
                    commands.append(words)
    return commands


TINY = [
    "logger=csv",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "checkpoint_every=1",
    "diagnostics_every=1",
]
NOT_A_SETTING = (
    "data_root=",
    "hydra.run.dir=",
    "hydra.sweep.dir=",
    "trainer.enable_progress_bar=",
    "trainer.max_epochs=",
    "trainer.max_steps=",
)
SIZES = ("model.hidden_size=", "task.T=")  # replaced by tiny ones


def reduced(words: list[str], cfg, data_root) -> list[str] | None:
    """``words`` at tiny sizes: sweeps cut to their first two points, ``<data>`` the given MNIST
    root; None for a command this machine cannot run (a GPU, SLURM, CIFAR10's files)."""
    if "trainer=gpu" in words or "hydra/launcher=slurm" in words or "cifar10" in cfg.task._target_:
        return None
    out = []
    for word in words:
        key, _, value = word.partition("=")
        if word.startswith(NOT_A_SETTING + SIZES) or "<" in value or word in ("-m", "--multirun"):
            continue
        if key == "hydra.sweeper.n_trials":  # a search (hydra/sweeper=optuna_study): two trials
            value = "2"
        out.append(f"{key}={','.join(value.split(',')[:2])}" if "(" not in value else word)
    out += [*TINY, f"data_root={data_root}"]
    if "T" in cfg.task:
        out.append("task.T=5")
    if cfg.task.get("batch_size"):
        out += ["task.batch_size=4"] + (["task.eval_batch_size=3"] if "eval_batch_size" in cfg.task else [])
    if "hidden_size" in cfg.model:
        out.append("model.hidden_size=16")  # k goes up to 16 in the commands
    if "depth" in cfg.model:
        out += ["model.depth=3", "model.channels=4"]
    if cfg.optim.get("negative_ones"):
        out.append("optim.negative_ones=1")  # scoRNN's D at the tiny size
    sweeper = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    for key, value in sweeper.items():  # a preset's own grid: its first two points (the command line's values win)
        if not any(w.startswith(f"{key}=") for w in out):
            out.append(f"{key}={','.join(str(value).split(',')[:2])}")
    return out


def settings(words: list[str]) -> str:
    """A command without what does not change what it runs (where the data and the run go, its length)."""
    return " ".join(w for w in words if not w.startswith(NOT_A_SETTING))


COMMANDS = sorted({settings(words): " ".join(words) for words in train_commands()}.values())


@pytest.mark.integration
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "default")
def test_train_commands_run_reduced(compose_cfg, tmp_path, mnist, command):
    """One run in process (what ``python train.py ...`` calls); a sweep as a real multirun
    through its launcher, with one run directory and metrics.csv per point."""
    words = shlex.split(command)
    multirun = "-m" in words or "--multirun" in words
    first = [
        f"{w.partition('=')[0]}={w.partition('=')[2].split(',')[0]}"
        for w in words
        if w not in ("-m", "--multirun") and not w.startswith(("hydra/", "hydra.")) and "<" not in w
    ]
    cfg = compose_cfg(*first)  # every command composes, what this machine can run or not
    assert cfg.task and cfg.model and cfg.optim
    root, _ = mnist
    args = reduced(words, cfg, root)
    if args is None:
        pytest.skip(
            "needs a GPU, a SLURM cluster or CIFAR10's files "
            "(tests/tasks/test_cifar10.py runs the presets on generated images)"
        )
    if multirun:
        result = run_sweep(*args, sweep_dir=tmp_path / "sweep")
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        train(compose_cfg(*[a for a in args if not a.startswith("hydra/")], run_dir=run_dir))
    runs = sorted(p.parent for p in tmp_path.glob(f"**/{METRICS}"))
    jobs = math.prod(len(w.partition("=")[2].split(",")) for w in args) if multirun else 1
    if "hydra/sweeper=optuna_study" in args:  # a search: its trials, not a grid
        jobs = int(next(w for w in args if w.startswith("hydra.sweeper.n_trials=")).partition("=")[2])
    assert len(runs) == jobs, runs
    for run in runs:
        rows = (run / METRICS).read_text().splitlines()
        assert rows[0].startswith("step,") and len(rows) >= 3  # the header and at least two steps


# ---------------------------------------------------------------------------------------------
# published numbers have their records in git (docs/reliability.md, "Run records")
# ---------------------------------------------------------------------------------------------
def tracked() -> set[str]:
    listed = subprocess.run(["git", "ls-files", "outputs"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(listed.stdout.split())


ABSOLUTE = re.compile(r"(?<![\w.<>/-])/(?:work|tmp|root|home|Users|mnt|srv|var|opt|private)/")


def test_no_record_in_git_names_a_path_of_the_machine_that_made_it():
    """What git holds under outputs/ names places relative to the repository or by a placeholder
    (``training.record.portable``; scripts.results.record writes records so)."""
    named = []
    for name in sorted(tracked()):
        path = ROOT / name
        if path.suffix == ".png" or path.is_symlink() or not path.is_file():
            continue
        if path.suffix == ".ckpt":  # a zip: its pickle (the tensors' bytes are not text)
            with zipfile.ZipFile(path) as archive:
                text = "".join(archive.read(n).decode("latin-1") for n in archive.namelist() if n.endswith(".pkl"))
        else:
            text = path.read_text(errors="replace")
        named += [f"{name}: {m.group(0)}" for m in ABSOLUTE.finditer(text)]
    assert not named, named[:10]


# where a command of the pages writes, not a record they cite
WRITES_ONLY = {"outputs/runs/", "outputs/sweeps/", "outputs/search/copy_T1000_unitary_lr"}


def test_every_run_directory_the_pages_name_is_held_by_git():
    held = tracked()
    named = {m.rstrip(".,);:`'") for page in PAGES for m in re.findall(r"outputs/[\w./=,+-]+", page.read_text())}
    missing = []
    for path in sorted(named - WRITES_ONLY):
        if path.endswith((".md", ".png", ".csv", ".json", ".jsonl")):
            ok = path in held
        else:  # a run directory, a folder of them or of figures and tables: held, every run with its record
            records = {p for p in held if p.startswith(path)}
            runs = {p.removesuffix(METRICS) for p in records if p.endswith(METRICS)}
            ok = bool(records) and all({r + SUMMARY, r + ".hydra/config.yaml"} <= records for r in runs)
        if not ok:
            missing.append(path)
    assert not missing, f"named in README/docs but without a record in git: {missing}"


def test_no_command_names_a_path_outside_the_repository():
    for page in PAGES:
        for line in page.read_text().splitlines():
            for command in re.findall(r"`(python[^`]*)`", line) + ([line] if line.startswith("python ") else []):
                assert "../" not in command and not re.search(r"=/|\s/[a-z]", command), f"{page.name}: {command}"


def test_the_report_tables_are_what_their_records_say():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.results.report", "--check", "README.md", "docs/results.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_the_reproduction_tables_are_their_contracts(tmp_path):
    """docs/reproduction.md shows each docs/pins/<preset>.yaml, and the lockstep run recorded in
    outputs/readme/lockstep/, as they are; an edited table is stale."""
    check = [sys.executable, "-m", "scripts.results.report", "--check", "docs/reproduction.md"]
    result = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    page = (ROOT / "docs" / "reproduction.md").read_text()
    assert page.count("<!-- report:pins-") == len(list((ROOT / "docs" / "pins").glob("*.yaml")))
    assert page.count("<!-- report:lockstep-") == 7
    stale = tmp_path / "reproduction.md"
    stale.write_text(page.replace("| `task.batch_size=128` | same |", "| `task.batch_size=64` | same |", 1))
    result = subprocess.run([*check[:-1], str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "(pins-pmnist)" in result.stderr

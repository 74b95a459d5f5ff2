"""docs/reproduction.md is the contract of the paper presets: every `key=value` and `group=option`
pinned in its tables is what the preset composes to, every setting a preset file sets is pinned
there, and every row names its source. A changed preset, or a changed table, fails here."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import ROOT
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

DOC = ROOT / "docs" / "reproduction.md"
GROUPS = {"task", "model", "optim", "scheduler", "trainer", "logger"}
PIN = re.compile(r"^([a-z_][\w.]*)=(\S+)$")
# a study without a table, a sweep of pmnist, and an experiment that is not the paper's (issue 21)
NOT_PAPER_TABLES = {"mnist_depth100", "pmnist_table2", "mnist_lipschitz"}


def sections() -> dict[str, dict]:
    """``{preset: {"base": preset | None, "rows": [[cells]]}}`` from the ``Preset:`` lines and their tables."""
    found: dict[str, dict] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"Preset: `experiment=(\w+)`(?: \(base: `experiment=(\w+)`\))?", line)
        if heading:
            current = found.setdefault(heading[1], {"base": heading[2], "rows": []})
        elif line.startswith("## "):
            current = None  # a new section: its tables belong to its own Preset: line, if any
        elif current is not None and line.startswith("|") and not set(line) <= set("|- "):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells[0] != "setting":
                current["rows"].append(cells)
    return found


def pins(rows: list[list[str]]) -> list[tuple[str, str]]:
    return [m.groups() for row in rows for span in re.findall(r"`([^`]+)`", row[2]) if (m := PIN.match(span))]


def own_settings(preset: str) -> set[str]:
    """What the preset file itself sets: ``group=option`` overrides and flattened keys (not hydra's)."""
    raw = yaml.safe_load((ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text())
    found = set()
    for entry in raw.pop("defaults", []):
        if isinstance(entry, dict):
            ((key, option),) = entry.items()
            if key.startswith("override /"):
                found.add(f"{key.removeprefix('override /')}={option}")
    raw.pop("hydra", None)

    def walk(node, prefix):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{path}.")
            else:
                found.add(path)

    walk(raw, "")
    return found


SECTIONS = sections()


def test_every_paper_preset_has_its_table():
    presets = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert set(SECTIONS) == presets - NOT_PAPER_TABLES
    for name, section in SECTIONS.items():
        assert section["rows"], name
        for row in section["rows"]:
            assert len(row) == 4 and all(row[:2]) and row[3], (name, row)  # setting, source, preset, verdict


def mismatches(compose_cfg, preset: str, *overrides: str) -> list[str]:
    """The pinned keys of ``preset``'s table that the composed config (with ``overrides``) contradicts."""
    cfg = compose_cfg(f"experiment={preset}", *overrides)
    choices = HydraConfig.get().runtime.choices
    wrong = []
    for key, value in pins(SECTIONS[preset]["rows"]):
        expected = yaml.safe_load(value)
        if key in GROUPS and expected is not None:
            if choices[key] != value:
                wrong.append(key)
            continue
        actual = OmegaConf.select(cfg, key, default=KeyError)
        if OmegaConf.is_config(actual):
            actual = OmegaConf.to_container(actual, resolve=True)
        if isinstance(expected, (int, float)) and not isinstance(expected, bool):
            same = (
                isinstance(actual, (int, float))
                and not isinstance(actual, bool)
                and actual == pytest.approx(expected, rel=1e-12)
            )
        else:
            same = actual == expected
        if not same:
            wrong.append(key)
    return wrong


@pytest.mark.parametrize("preset", sorted(SECTIONS))
def test_the_preset_composes_to_its_table(compose_cfg, preset):
    assert pins(SECTIONS[preset]["rows"])
    assert mismatches(compose_cfg, preset) == []


def test_a_changed_preset_fails(compose_cfg):
    assert mismatches(compose_cfg, "pmnist", "scheduler.gamma=0.5") == ["scheduler.gamma"]
    assert mismatches(compose_cfg, "pmnist", "model.init=cayley", "trainer.max_epochs=200") == [
        "trainer.max_epochs",
        "model.init",
    ]
    assert mismatches(compose_cfg, "pmnist", "optim=projunn_t") == ["optim", "optim.projector"]
    assert mismatches(compose_cfg, "cifar10_projunn_t", "model=resnet9") == ["model", "model.orthogonal", "model.init"]


@pytest.mark.parametrize("preset", sorted(SECTIONS))
def test_every_setting_of_the_preset_file_is_pinned(preset):
    pinned = pins(SECTIONS[preset]["rows"])
    keys = {key for key, _ in pinned} | {f"{key}={value}" for key, value in pinned}
    missing = {s for s in own_settings(preset) if s not in keys}
    assert not missing, f"{preset} sets {sorted(missing)} without a row in docs/reproduction.md"


@pytest.mark.parametrize("preset", sorted(SECTIONS))
def test_sources_are_cited_by_line(preset):
    for row in SECTIONS[preset]["rows"]:
        source = row[1]
        assert (
            re.search(r":\d+", source)
            or source in ("none", "—", "(no validation set)", "none, 0, 0")
            or "none" in source
        ), (preset, row[0])


def test_the_tests_the_table_cites_exist():
    cited = set(re.findall(r"`(test_\w+)`", DOC.read_text()))
    defined = {
        m for path in (ROOT / "tests").glob("test_*.py") for m in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    assert cited and cited <= defined, sorted(cited - defined)

"""The reproduction contract of the paper presets, ``docs/pins/<preset>.yaml`` (scripts/reproduction/pins.py): every
`key=value` and `group=option` it pins is what the preset composes to, every setting a preset file sets is
pinned, and every row names its source. A changed preset, or a changed contract, fails here; docs/
reproduction.md shows the files as they are (tests/test_docs.py)."""

from __future__ import annotations

import re

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from scripts.reproduction import pins
from tests.helpers import ROOT

GROUPS = {"task", "model", "optim", "scheduler", "trainer", "logger"}
# a study without a table, a sweep of pmnist, and an experiment that is not the paper's (issue 21)
NOT_PAPER_TABLES = {"mnist_depth100", "pmnist_table2", "mnist_lipschitz"}
CONTRACTS = {preset: pins.load(preset) for preset in pins.presets()}


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


def test_every_paper_preset_has_its_contract():
    presets = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert set(CONTRACTS) == presets - NOT_PAPER_TABLES
    for name, contract in CONTRACTS.items():
        base = contract["base"]
        assert base is None or CONTRACTS[base]["base"] is None, name  # one level of inheritance
        defaults = yaml.safe_load((ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()).get("defaults", [])
        assert base is None or base in defaults, (name, base)  # the preset it inherits rows from is its base


def mismatches(compose_cfg, preset: str, *overrides: str) -> list[str]:
    """The pinned keys of ``preset``'s contract that the composed config (with ``overrides``) contradicts."""
    cfg = compose_cfg(f"experiment={preset}", *overrides)
    choices = HydraConfig.get().runtime.choices
    wrong = []
    for key, value in pins.pins(CONTRACTS[preset]):
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


@pytest.mark.parametrize("preset", sorted(CONTRACTS))
def test_the_preset_composes_to_its_contract(compose_cfg, preset):
    assert pins.pins(CONTRACTS[preset])
    assert mismatches(compose_cfg, preset) == []


def test_a_changed_preset_fails(compose_cfg):
    assert mismatches(compose_cfg, "pmnist", "scheduler.gamma=0.5") == ["scheduler.gamma"]
    assert mismatches(compose_cfg, "pmnist", "model.init=cayley", "trainer.max_epochs=200") == [
        "trainer.max_epochs",
        "model.init",
    ]
    assert mismatches(compose_cfg, "pmnist", "optim=projunn_t") == ["optim", "optim.projector"]
    assert mismatches(compose_cfg, "cifar10_projunn_t", "model=resnet9") == ["model", "model.orthogonal", "model.init"]


@pytest.mark.parametrize("preset", sorted(CONTRACTS))
def test_every_setting_of_the_preset_file_is_pinned(preset):
    pinned = pins.pins(CONTRACTS[preset])
    keys = {key for key, _ in pinned} | {f"{key}={value}" for key, value in pinned}
    missing = {s for s in own_settings(preset) if s not in keys}
    assert not missing, f"{preset} sets {sorted(missing)} without a row in docs/pins/{preset}.yaml"


@pytest.mark.parametrize("preset", sorted(CONTRACTS))
def test_sources_are_cited_by_line(preset):
    for row in CONTRACTS[preset]["rows"]:
        source = row["source"]
        assert re.search(r":\d+", source) or source in ("—", "(no validation set)") or "none" in source, (
            preset,
            row["setting"],
        )


def test_a_malformed_contract_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(pins, "FOLDER", tmp_path)
    with pytest.raises(ValueError, match="no reproduction contract for experiment=nope"):
        pins.load("nope")
    good = {"setting": "batch", "source": "`x.py:1`", "pins": ["task.batch_size=8"], "status": "same"}
    cases = {
        "status is one of": {**good, "status": "close"},
        "give pins .* or preset": {**good, "preset": "in words"},
        "pins are key=value": {**good, "pins": ["batch 8"]},
        "a deviation needs its why": {**good, "status": "deviation"},
        "fields are": {**good, "verdict": "same"},
    }
    for message, row in cases.items():
        (tmp_path / "p.yaml").write_text(yaml.safe_dump({"preset": "p", "base": None, "source": "s", "rows": [row]}))
        with pytest.raises(ValueError, match=message):
            pins.load("p")


def test_the_tests_the_contracts_cite_exist():
    text = (
        "\n".join(path.read_text() for path in pins.FOLDER.glob("*.yaml"))
        + (ROOT / "docs" / "reproduction.md").read_text()
    )
    cited = set(re.findall(r"`(test_\w+)`", text))
    defined = {
        m
        for path in (ROOT / "tests").rglob("test_*.py")
        for m in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    assert cited and cited <= defined, sorted(cited - defined)

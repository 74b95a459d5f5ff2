"""The reproduction contract of the paper presets, as data: ``docs/pins/<preset>.yaml``, one file per
preset, each row a setting that decides the result, what the authors' code and the preset do with it,
and why they differ (the fields: docs/reproduction.md, "Conventions")."""

from __future__ import annotations

import re

import yaml

from .. import ROOT, tables

FOLDER = ROOT / "docs" / "pins"
PIN = re.compile(r"^([a-z_][\w.]*)=(\S+)$")
STATUSES = ("same", "deviation", "choice")
FIELDS = {"setting", "source", "pins", "preset", "status", "why"}


def presets() -> list[str]:
    return sorted(path.stem for path in FOLDER.glob("*.yaml"))


def load(preset: str) -> dict:
    """The contract of ``preset``, checked for its fields; ``ValueError`` names what is wrong."""
    path = FOLDER / f"{preset}.yaml"
    if not path.exists():
        raise ValueError(f"no reproduction contract for experiment={preset} ({path} is missing)")
    data = yaml.safe_load(path.read_text())
    if data.get("preset") != preset or not data.get("source") or not data.get("rows"):
        raise ValueError(f"{path}: needs preset: {preset}, a source header and rows")
    for row in data["rows"]:
        where = f"{path}, row {row.get('setting')!r}"
        if not row.keys() <= FIELDS or not row.get("setting") or not row.get("source"):
            raise ValueError(f"{where}: fields are {sorted(FIELDS)}, with setting and source, got {sorted(row)}")
        if ("pins" in row) == ("preset" in row):
            raise ValueError(f"{where}: give pins (key=value ...) or preset (in words), one of them")
        bad = [pin for pin in row.get("pins", []) if not PIN.match(pin)]
        if bad:
            raise ValueError(f"{where}: pins are key=value, got {bad}")
        if row.get("status") not in STATUSES:
            raise ValueError(f"{where}: status is one of {STATUSES}, got {row.get('status')!r}")
        if row["status"] != "same" and not row.get("why"):
            raise ValueError(f"{where}: a {row['status']} needs its why")
    return data


def pins(data: dict) -> list[tuple[str, str]]:
    """Every ``(key, value)`` pinned in the contract, in order."""
    return [PIN.match(pin).groups() for row in data["rows"] for pin in row.get("pins", [])]


def markdown(data: dict) -> str:
    """The contract as docs/reproduction.md shows it: the preset line and its table."""
    base = f" (base: `experiment={data['base']}`)" if data.get("base") else ""
    lines = [f"Preset: `experiment={data['preset']}`{base}", ""]
    rows = [
        [
            row["setting"],
            row["source"],
            " ".join(f"`{pin}`" for pin in row["pins"]) if "pins" in row else row["preset"],
            row["status"],
            row.get("why", ""),
        ]
        for row in data["rows"]
    ]
    return "\n".join(lines) + "\n" + tables.markdown(["setting", data["source"], "this preset", "status", "why"], rows)

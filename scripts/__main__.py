"""``python -m scripts``: every command of this folder, by group, with the first sentence of its docstring."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
HELPERS = {"__init__", "__main__"}


@dataclass(frozen=True)
class Entry:
    """A module or package of ``scripts/``: ``name`` as ``python -m`` takes it, its ``group`` (the folder
    of commands it lies in, ``""`` for the top), what it is, and whether it is a command."""

    name: str
    group: str
    line: str
    command: bool


def first_sentence(path: Path) -> str:
    source = ast.parse(path.read_text())
    paragraph = (ast.get_docstring(source) or "").split("\n\n")[0].replace("\n", " ")
    return re.split(r"(?<=[.:])\s", paragraph)[0].rstrip(":")


def entries(folder: Path = HERE, group: str = "") -> list[Entry]:
    """Each module and package below ``folder``. A package with a ``__main__.py`` is one command
    (``python -m scripts.GROUP.NAME`` runs it); one without is a group, whose entries are listed; a
    module is a command when it runs as ``__main__``, otherwise it is shared by the commands."""
    found = []
    prefix = ".".join(["scripts", *filter(None, [group])])
    for path in sorted(folder.iterdir()):
        if path.suffix == ".py" and path.stem not in HELPERS:
            command = 'if __name__ == "__main__":' in path.read_text()
            found.append(Entry(f"{prefix}.{path.stem}", group, first_sentence(path), command))
        elif (path / "__init__.py").is_file() and (path / "__main__.py").is_file():
            found.append(Entry(f"{prefix}.{path.name}", group, first_sentence(path / "__init__.py"), True))
        elif (path / "__init__.py").is_file():
            found += entries(path, path.name)
    return found


def main() -> None:
    listed = entries()
    width = max(len(entry.name) for entry in listed)
    print("python -m scripts.GROUP.NAME --help, from the repository root:")
    for group in sorted({entry.group for entry in listed if entry.command}):
        print(f"\n{group}/  {first_sentence(HERE / group / '__init__.py')}")
        for entry in listed:
            if entry.command and entry.group == group:
                print(f"  {entry.name:<{width}}  {entry.line}")
    print("\nshared by them:")
    for entry in listed:
        if not entry.command:
            print(f"  {entry.name:<{width}}  {entry.line}")


if __name__ == "__main__":
    main()

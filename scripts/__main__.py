"""``python -m scripts``: every script of this folder with the first line of its docstring."""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).parent
HELPERS = {"__init__", "__main__"}


def modules() -> dict[str, tuple[str, bool]]:
    """``{name: (first sentence of its docstring, whether it is a command)}`` for each module and
    package of ``scripts/``; a command runs as ``python -m scripts.NAME`` (a package through its
    ``__main__.py``), the others are shared by them."""
    found = {}
    for path in sorted([*HERE.glob("*.py"), *HERE.glob("*/__init__.py")]):
        package = path.parent != HERE
        name = path.parent.name if package else path.stem
        if name in HELPERS:
            continue
        source = path.read_text()
        paragraph = (ast.get_docstring(ast.parse(source)) or "").split("\n\n")[0].replace("\n", " ")
        sentence = re.split(r"(?<=[.:])\s", paragraph)[0].rstrip(":")
        command = (path.parent / "__main__.py").exists() if package else 'if __name__ == "__main__":' in source
        found[name] = sentence, command
    return dict(sorted(found.items()))


if __name__ == "__main__":
    listed = modules()
    width = max(map(len, listed))
    print("python -m scripts.NAME --help, from the repository root:")
    for name, (line, command) in listed.items():
        if command:
            print(f"  {name:<{width}}  {line}")
    print("shared by them:")
    for name, (line, command) in listed.items():
        if not command:
            print(f"  {name:<{width}}  {line}")

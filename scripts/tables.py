"""Markdown tables, the one way scripts/ writes them: ``markdown(header, rows)`` for a whole table,
``head(header)`` and ``row(cells)`` for a table printed a row at a time."""

from __future__ import annotations

from collections.abc import Iterable


def row(cells: Iterable[object]) -> str:
    """``| a | b | c |``."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def head(header: Iterable[object]) -> list[str]:
    """The header line and the separator under it."""
    header = list(header)
    return [row(header), "|" + "---|" * len(header)]


def markdown(header: Iterable[object], rows: Iterable[Iterable[object]]) -> str:
    """The whole table, ending with a newline."""
    return "\n".join([*head(header), *(row(cells) for cells in rows)]) + "\n"

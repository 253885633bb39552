"""Result tables the benchmarks print and write as Markdown."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()


def render_text(table: Table) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h) for i, h in enumerate(table.headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(table.headers, widths, strict=True))
    out = [f"\n{table.title}", line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table.rows]
    out += [f"  {note}" for note in table.notes]
    return "\n".join(out)


def render_markdown(table: Table) -> str:
    out = [
        f"### {table.title}",
        "",
        "| " + " | ".join(table.headers) + " |",
        "|" + "|".join("---" for _ in table.headers) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.notes:
        out += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(out) + "\n"


def command_line(module: str, argv: list[str]) -> str:
    """How a report says it was made: `python -m module args`."""
    return " ".join(["python", "-m", module, *argv])


def progress(message: str) -> None:
    """A progress line on stderr, so the tables on stdout stay clean to pipe."""
    print(f".. {message}", file=sys.stderr, flush=True)

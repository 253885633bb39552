"""`[lines.NAME]` tables: segments whose crossings are counted, per direction; `[lines] reset`.

Like zones, lines are part of the installation, so they come from the config file only. A line is
two points in normalized coordinates of the source frame; `in` is a crossing from its left to its
right, looking from the first point to the second (docs/scene.md draws it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agent.config.keys import finite_float, shown_value
from agent.config.zones import ZONE_NAME_RE, Point, read_labels, unknown_labels

LINE_KEYS = ("points", "labels", "anchor")
ANCHORS = ("bottom_center", "center", "top_center")
RESETS = ("daily", "never")
Anchor = Literal["bottom_center", "center", "top_center"]
Reset = Literal["daily", "never"]
MIN_LENGTH = 0.01  # shorter than this (of the frame) is a slip of the hand, not a line


@dataclass(frozen=True)
class LineConfig:
    """One counting line. points: (x, y) 0..1 of the source frame; labels: () = every label;
    anchor: the point of the box that crosses (where an object stands, by default)."""

    name: str
    points: tuple[Point, Point]
    labels: tuple[str, ...] = ()
    anchor: Anchor = "bottom_center"


@dataclass(frozen=True)
class LinesConfig:
    """Every line, and when the counts start again from zero (local midnight, or never)."""

    lines: tuple[LineConfig, ...] = ()
    reset: Reset = "daily"


def parse_lines(table: object, where: str) -> tuple[LinesConfig, list[str]]:
    """The `[lines]` table: `reset` and the `[lines.NAME]` tables; problems are one line each naming the key."""
    if not isinstance(table, Mapping):
        return LinesConfig(), [f"lines{where} must be a table: [lines.NAME] followed by points = [[x, y], [x, y]]"]
    problems: list[str] = []
    reset = table.get("reset", "daily")
    if reset not in RESETS:
        problems.append(f"lines.reset{where}: {shown_value(reset)} is not allowed; expected one of {', '.join(RESETS)}")
    lines: list[LineConfig] = []
    for name, body in table.items():
        if name == "reset":
            continue
        key = f"lines.{name}"
        if not ZONE_NAME_RE.fullmatch(str(name)):
            problems.append(f"{key}: a line name may hold letters, digits, _ and - only")
        elif not isinstance(body, Mapping):
            problems.append(f"{key}{where} must be a table: [lines.{name}] followed by points = [[x, y], [x, y]]")
        elif (line := _line(str(name), body, where, problems)) is not None:
            lines.append(line)
    return LinesConfig(tuple(lines), "daily" if reset not in RESETS else reset), problems


def unknown_line_labels(lines: Iterable[LineConfig], known: Iterable[str]) -> list[str]:
    """One problem per line label the model does not know."""
    return unknown_labels("lines", lines, known)


def _line(name: str, body: Mapping[str, Any], where: str, problems: list[str]) -> LineConfig | None:
    key = f"lines.{name}"
    before = len(problems)
    for unknown in sorted(set(body) - set(LINE_KEYS)):
        problems.append(f"unknown key {key}.{unknown}{where}; allowed keys: {', '.join(LINE_KEYS)}")
    points = _points(body.get("points"), f"{key}.points", problems)
    labels = read_labels(body, key, problems)
    anchor = body.get("anchor", "bottom_center")
    if anchor not in ANCHORS:
        problems.append(f"{key}.anchor: {shown_value(anchor)} is not allowed; expected one of {', '.join(ANCHORS)}")
    if len(problems) > before or points is None:
        return None
    return LineConfig(name, points, labels, anchor)


def _points(raw: object, key: str, problems: list[str]) -> tuple[Point, Point] | None:
    expected = "expected two [x, y] points, each 0..1 of the source frame"
    if raw is None:
        problems.append(f"{key} is missing; {expected}")
        return None
    if not isinstance(raw, list) or len(raw) != 2:
        problems.append(f"{key}: {shown_value(raw)} is not allowed; {expected}")
        return None
    points: list[Point] = []
    for point in raw:
        x, y = (finite_float(v) for v in point) if isinstance(point, list) and len(point) == 2 else (None, None)
        if x is None or y is None or not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            problems.append(f"{key}: point {shown_value(point)} is not allowed; {expected}")
            return None
        points.append((x, y))
    (x1, y1), (x2, y2) = points
    if ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5 < MIN_LENGTH:
        problems.append(f"{key}: the two points are (nearly) the same; a line needs length ({expected})")
        return None
    return points[0], points[1]

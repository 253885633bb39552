"""`[zones.NAME]` tables: polygons in normalized coordinates of the source frame, checked before anything starts.

Zones are part of the installation (where the camera hangs), so they come from the config file
only: neither the environment nor a remote `set` changes them. Labels are checked against the
model later, once it is loaded (`unknown_zone_labels`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Protocol

from agent.config.keys import finite_float, shown_value

ZONE_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
ZONE_KEYS = ("polygon", "labels", "inertia", "loiter_s")
MAX_POINTS = 64  # more than anyone draws by hand; bounds the per-frame cost of the inside test

Point = tuple[float, float]


@dataclass(frozen=True)
class ZoneConfig:
    """One zone. polygon: (x, y) in 0..1 of the source frame; labels: () = every label.

    inertia: consecutive detector frames inside (or outside) before an object enters (or leaves);
    loiter_s: seconds inside before it counts.
    """

    name: str
    polygon: tuple[Point, ...]
    labels: tuple[str, ...] = ()
    inertia: int = 3
    loiter_s: float = 0.0


def parse_zones(table: object, where: str) -> tuple[tuple[ZoneConfig, ...], list[str]]:
    """The zones of a `[zones]` table and the problems found, each one line naming `zones.NAME.key`."""
    if not isinstance(table, Mapping):
        return (), [f"zones{where} must be tables: [zones.NAME] followed by polygon = [[x, y], ...]"]
    zones: list[ZoneConfig] = []
    problems: list[str] = []
    for name, body in table.items():
        key = f"zones.{name}"
        if not ZONE_NAME_RE.fullmatch(str(name)):
            problems.append(f"{key}: a zone name may hold letters, digits, _ and - only")
            continue
        if not isinstance(body, Mapping):
            problems.append(f"{key}{where} must be a table: [zones.{name}] followed by polygon = [[x, y], ...]")
            continue
        found = _zone(str(name), body, where, problems)
        if found is not None:
            zones.append(found)
    return tuple(zones), problems


def unknown_zone_labels(zones: Iterable[ZoneConfig], known: Iterable[str]) -> list[str]:
    """One problem per zone label the model does not know."""
    return unknown_labels("zones", zones, known)


class Labelled(Protocol):
    name: str
    labels: tuple[str, ...]


def unknown_labels(section: str, items: Iterable[Labelled], known: Iterable[str]) -> list[str]:
    """One problem per label of `[section.NAME]` tables (zones, lines) that the model does not know."""
    names = set(known)
    return [
        f"{section}.{item.name}.labels: {label!r} is not a label of the model (it knows {', '.join(sorted(names))})"
        for item in items
        for label in item.labels
        if label not in names
    ]


def read_labels(body: Mapping[str, Any], key: str, problems: list[str]) -> tuple[str, ...]:
    """`labels` of a `[zones.NAME]` or `[lines.NAME]` table (key: the table's); a problem if not a list of labels."""
    labels = body.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) and label.strip() for label in labels):
        expected = "expected a list of labels, [] = every label"
        problems.append(f"{key}.labels: {shown_value(labels)} is not allowed; {expected}")
        return ()
    return tuple(labels)


def _zone(name: str, body: Mapping[str, Any], where: str, problems: list[str]) -> ZoneConfig | None:
    key = f"zones.{name}"
    before = len(problems)
    for unknown in sorted(set(body) - set(ZONE_KEYS)):
        problems.append(f"unknown key {key}.{unknown}{where}; allowed keys: {', '.join(ZONE_KEYS)}")
    polygon = _polygon(body.get("polygon"), f"{key}.polygon", problems)
    labels = read_labels(body, key, problems)
    inertia = body.get("inertia", 3)
    if isinstance(inertia, bool) or not isinstance(inertia, int) or not 1 <= inertia <= 100:
        problems.append(f"{key}.inertia: {shown_value(inertia)} is not allowed; expected an integer 1..100 (frames)")
    raw_loiter = body.get("loiter_s", 0.0)
    loiter = finite_float(raw_loiter)
    if loiter is None or loiter < 0:
        problems.append(f"{key}.loiter_s: {shown_value(raw_loiter)} is not allowed; expected a number >= 0 (seconds)")
    if len(problems) > before or polygon is None or loiter is None:
        return None
    return ZoneConfig(name, polygon, labels, int(inertia), loiter)


def _polygon(raw: object, key: str, problems: list[str]) -> tuple[Point, ...] | None:
    expected = f"expected 3 to {MAX_POINTS} [x, y] points, each 0..1 of the source frame"
    if raw is None:
        problems.append(f"{key} is missing; {expected}")
        return None
    if not isinstance(raw, list) or not 3 <= len(raw) <= MAX_POINTS:
        problems.append(f"{key}: {shown_value(raw)} is not allowed; {expected}")
        return None
    points: list[Point] = []
    for point in raw:
        x, y = (finite_float(v) for v in point) if isinstance(point, list) and len(point) == 2 else (None, None)
        if x is None or y is None:
            problems.append(f"{key}: point {shown_value(point)} is not allowed; {expected}")
            return None
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            problems.append(f"{key}: point {shown_value(point)} is outside 0..1; {expected}")
            return None
        points.append((x, y))
    if crossing := _self_crossing(points):
        i, j = crossing
        problems.append(
            f"{key}: edge {i + 1} crosses edge {j + 1}; list the corners in order around the zone (no figure 8)"
        )
        return None
    if abs(_area(points)) < 1e-6:
        problems.append(f"{key}: the points enclose no area (all on one line?)")
        return None
    return tuple(points)


def _area(points: list[Point]) -> float:
    """Shoelace formula: signed area, 0 for collinear points."""
    return 0.5 * sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True))


def _self_crossing(points: list[Point]) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges that cross, or None for a simple polygon."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i, j in combinations(range(n), 2):
        if j == i + 1 or (i == 0 and j == n - 1):
            continue  # adjacent edges share a corner
        if _segments_cross(*edges[i], *edges[j]):
            return i, j
    return None


def _segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    def orientation(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def on_segment(p: Point, q: Point, r: Point) -> bool:
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    d1, d2 = orientation(c, d, a), orientation(c, d, b)
    d3, d4 = orientation(a, b, c), orientation(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    # Touching or overlapping counts as crossing: a zone whose edges touch has no clear inside.
    return (
        (d1 == 0 and on_segment(c, d, a))
        or (d2 == 0 and on_segment(c, d, b))
        or (d3 == 0 and on_segment(a, b, c))
        or (d4 == 0 and on_segment(a, b, d))
    )

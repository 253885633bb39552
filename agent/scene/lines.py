"""Line crossings: a tracked object's anchor passing from one side of a segment to the other through it.

Each object remembers, per line, the side it was last seen clearly on (farther than MARGIN from the
line) and where. A crossing is counted when it is next seen clearly on the other side and the path
between the two places passes through the segment itself, not its extension. So a box jittering on
the line counts nothing, an object that goes over and comes back counts one `in` and one `out`, and
a gap the tracker bridges (or frames the motion gate skipped) still counts the crossing once.

`in` is from the left of the line to its right, looking from its first point to its second: in image
coordinates (y down) a line drawn left to right counts objects moving down the image as `in`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agent.config.lines import LineConfig, LinesConfig

Direction = Literal["in", "out"]
DIRECTIONS: tuple[Direction, ...] = ("in", "out")
MARGIN = 0.005  # of the frame: closer to the line than this is on it, neither side


@dataclass(frozen=True)
class LineCrossing:
    """One `cross` event of the `objects` topic, before it gets its seq. ts: the frame's capture time."""

    id: str
    label: str
    line: str
    direction: Direction
    ts: float
    frame: int


@dataclass
class LineCounts:
    """Crossings per line, direction and label since `since` (Unix seconds), as kept across restarts."""

    since: float
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def add(self, crossing: LineCrossing) -> None:
        per_label = self.counts.setdefault(crossing.line, {}).setdefault(crossing.direction, {})
        per_label[crossing.label] = per_label.get(crossing.label, 0) + 1

    def of(self, lines: Sequence[LineConfig]) -> dict[str, dict[str, dict[str, int]]]:
        """Every configured line with both directions, zeros as empty label maps; lines gone from the config
        are left out (their counts stay in the file until the next reset)."""
        return {line.name: {d: dict(self.counts.get(line.name, {}).get(d, {})) for d in DIRECTIONS} for line in lines}


@dataclass
class _Side:
    side: int  # -1 left, +1 right
    point: tuple[float, float]


class LineCounter:
    """Feed it the confirmed tracks of every detector frame; `forget` the ids of tracks that ended."""

    def __init__(self, config: LinesConfig, counts: LineCounts) -> None:
        self.lines = config.lines
        self.reset = config.reset
        self.counts = counts
        self._sides: dict[tuple[str, str], _Side] = {}  # (object id, line) -> last clear side

    def update(
        self,
        ids: Sequence[str],
        labels: Sequence[str],
        boxes_xyxy: np.ndarray,
        frame_hw: tuple[int, int],
        ts: float,
        frame: int,
    ) -> list[LineCrossing]:
        """Crossings in this frame. boxes: (N, 4) source pixels of the tracked objects."""
        crossings: list[LineCrossing] = []
        if not self.lines:
            return crossings
        self.reset_if_due(ts)
        h, w = frame_hw
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4) / np.array([w, h, w, h], np.float64)
        for object_id, label, box in zip(ids, labels, boxes, strict=True):
            for line in self.lines:
                if line.labels and label not in line.labels:
                    continue
                point = _anchor(box, line.anchor)
                side = _side(line, point)
                if side == 0:
                    continue  # on the line: wait until it is clearly on one side
                key = (object_id, line.name)
                last = self._sides.get(key)
                self._sides[key] = _Side(side, point)
                if last is None or last.side == side or not _through(line, last.point, point):
                    continue
                crossing = LineCrossing(object_id, label, line.name, "in" if side > 0 else "out", ts, frame)
                self.counts.add(crossing)
                crossings.append(crossing)
        return crossings

    def forget(self, ids: Sequence[str]) -> None:
        gone = set(ids)
        for key in [key for key in self._sides if key[0] in gone]:
            del self._sides[key]

    def reset_if_due(self, now: float) -> bool:
        """`reset = "daily"`: counts start from zero at the first local midnight after `since`. True if reset."""
        if self.reset != "daily" or not self.lines:
            return False
        midnight = local_midnight(now)
        if self.counts.since >= midnight:
            return False
        self.counts = LineCounts(since=midnight)
        return True

    def snapshot(self) -> Mapping[str, Mapping[str, Mapping[str, int]]]:
        return self.counts.of(self.lines)


def local_midnight(now: float) -> float:
    """The Unix time of the last local midnight at or before `now`."""
    local = dt.datetime.fromtimestamp(now).astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _anchor(box: np.ndarray, anchor: str) -> tuple[float, float]:
    x = float(box[0] + box[2]) / 2
    if anchor == "center":
        return x, float(box[1] + box[3]) / 2
    return x, float(box[1] if anchor == "top_center" else box[3])


def _cross(a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _side(line: LineConfig, point: tuple[float, float]) -> int:
    """-1 left of the line, +1 right of it (looking from its first point to its second), 0 on it."""
    a, b = line.points
    length = ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
    distance = _cross(a, b, point) / length  # signed; y grows downwards, so right is positive
    if abs(distance) < MARGIN:
        return 0
    return 1 if distance > 0 else -1


def _through(line: LineConfig, p: tuple[float, float], q: tuple[float, float]) -> bool:
    """The path p -> q (on opposite sides of the line) meets the segment itself, ends included."""
    a, b = line.points
    d1, d2 = _cross(p, q, a), _cross(p, q, b)
    return (d1 <= 0 <= d2) or (d2 <= 0 <= d1)

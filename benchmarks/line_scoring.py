"""Scoring crossing events against the truth: the true crossings of a known trajectory, and the matching.

The truth follows the rule of docs/scene.md, written here again from the text rather than imported,
so a slip in agent/scene/lines.py shows as a miss instead of moving the truth with it: a crossing is
counted when the anchor point of the true box, last seen clearly on one side of the line (farther
than MARGIN), is next seen clearly on the other, and the path between the two passes through the
segment itself; `in` is from the left to the right looking from the line's first point to its second.
A found crossing matches a true one of the same direction at most `tolerance` frames away, each used once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.scene.lines import MARGIN

Direction = Literal["in", "out"]
Point = tuple[float, float]


@dataclass(frozen=True)
class Crossing:
    """One crossing. frame: video frame index from 0."""

    frame: int
    direction: Direction


@dataclass(frozen=True)
class Score:
    """tp/fp/fn counts; offsets: found frame - true frame of each match."""

    tp: int
    fp: int
    fn: int
    offsets: tuple[int, ...] = ()

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def __add__(self, other: Score) -> Score:
        return Score(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.offsets + other.offsets)


def anchor_point(box_xyxy: Sequence[float], anchor: str) -> Point:
    """The point of a box that crosses: bottom_center (where an object stands), center or top_center."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    y = {"bottom_center": y2, "center": (y1 + y2) / 2, "top_center": y1}[anchor]
    return (x1 + x2) / 2, y


def true_crossings(
    frames: Sequence[int], boxes_xyxy: np.ndarray, line: tuple[Point, Point], frame_hw: tuple[int, int], anchor: str
) -> list[Crossing]:
    """The crossings of one object. frames: (N,) its frames, in order; boxes: (N, 4) pixels; line: 0..1."""
    h, w = frame_hw
    (ax, ay), (bx, by) = line
    length = float(np.hypot(bx - ax, by - ay))
    last: tuple[int, Point] | None = None  # side (+1 right, -1 left) and where it was last clearly seen
    out: list[Crossing] = []
    for frame, box in zip(frames, np.asarray(boxes_xyxy, np.float64).reshape(-1, 4), strict=True):
        px, py = anchor_point(box, anchor)
        point = (px / w, py / h)
        # Signed distance: positive to the right of a->b in image coordinates (y grows downwards).
        distance = ((bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax)) / length
        if abs(distance) < MARGIN:
            continue
        side = 1 if distance > 0 else -1
        if last is not None and last[0] != side and _segments_meet(last[1], point, (ax, ay), (bx, by)):
            out.append(Crossing(int(frame), "in" if side > 0 else "out"))
        last = (side, point)
    return out


def _segments_meet(p: Point, q: Point, a: Point, b: Point) -> bool:
    """p->q meets a->b (touching counts); p and q are known to lie on opposite sides of the line a-b."""
    # Where along a->b the line through p, q cuts it: the segment is hit when that is within [0, 1].
    dx, dy = q[0] - p[0], q[1] - p[1]
    ex, ey = b[0] - a[0], b[1] - a[1]
    denominator = dx * ey - dy * ex
    if denominator == 0:
        return False
    u = (dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / denominator
    return 0.0 <= u <= 1.0


def match(truth: Iterable[Crossing], found: Iterable[Crossing], tolerance: int) -> Score:
    """Pair true and found crossings of the same direction at most `tolerance` frames apart, each at most once,
    as many pairs as possible: per direction, each true crossing in frame order takes the earliest free found one
    in its window (for windows of one width this greedy order is a maximum matching)."""
    truth, found = list(truth), list(found)
    tp, offsets = 0, []
    for direction in ("in", "out"):
        wanted = sorted(c.frame for c in truth if c.direction == direction)
        free = sorted(c.frame for c in found if c.direction == direction)
        for frame in wanted:
            pick = next((f for f in free if abs(f - frame) <= tolerance), None)
            if pick is not None:
                free.remove(pick)
                tp += 1
                offsets.append(pick - frame)
    return Score(tp, len(found) - tp, len(truth) - tp, tuple(offsets))


def ultralytics_direction(line_px: tuple[Point, Point], counted_in: bool) -> Direction:
    """Our direction of a crossing ObjectCounter counted as IN (counted_in) or OUT on a two-point region.

    ObjectCounter ignores which way the line was drawn: on a line more horizontal than vertical IN is moving
    down the image, on a more vertical one moving right. Ours is `in` when that motion goes to the line's right
    looking from its first point to its second, so IN is `in` exactly when that motion points to our right side.
    """
    (ax, ay), (bx, by) = line_px
    vertical = abs(ax - bx) < abs(ay - by)
    their_in = (1.0, 0.0) if vertical else (0.0, 1.0)
    # The normal pointing to our right side (y down): (-(by - ay), bx - ax).
    towards_right = their_in[0] * -(by - ay) + their_in[1] * (bx - ax) > 0
    return "in" if towards_right == counted_in else "out"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"

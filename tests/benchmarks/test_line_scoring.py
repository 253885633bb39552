"""The line benchmark's scoring on literal data: true crossings of a trajectory, the matching, ObjectCounter's
directions. No video, no model."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.line_scoring import Crossing, Score, match, true_crossings, ultralytics_direction

HW = (100, 100)  # pixels = percent of the frame
ACROSS = ((0.2, 0.5), (0.8, 0.5))  # horizontal, drawn left to right


def crossings(points: list[tuple[float, float]], line=ACROSS, anchor: str = "bottom_center") -> list[tuple[int, str]]:
    """(frame, direction) of a 10x10 box whose bottom centre walks `points`, one frame each."""
    boxes = np.array([[x - 5, y - 10, x + 5, y] for x, y in points], np.float32)
    return [(c.frame, c.direction) for c in true_crossings(range(len(points)), boxes, line, HW, anchor)]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(50, 30), (50, 45), (50, 55), (50, 70)], [(2, "in")]),  # moving down the image: in
        ([(50, 70), (50, 30), (50, 70)], [(1, "out"), (2, "in")]),  # up, then back down: one each way
        ([(50, 30), (50, 49.8), (50, 50.3), (50, 49.9), (50, 50.2), (50, 30)], []),  # jitter on the line
        ([(50, 30), (50, 50), (50, 70)], [(2, "in")]),  # counted where it is clearly over, not on the line
        ([(10, 30), (10, 70)], []),  # beside the segment's end, across its extension
        ([(15, 30), (35, 70)], [(1, "in")]),  # diagonally through the segment
    ],
)
def test_true_crossings_of_a_walk(points: list, expected: list) -> None:
    assert crossings(points) == expected


def test_the_line_drawn_the_other_way_and_the_anchor() -> None:
    assert crossings([(50, 30), (50, 70)], line=(ACROSS[1], ACROSS[0])) == [(1, "out")]
    # The box's centre is 5 px above its bottom: at y = 53 the bottom has crossed, the centre has not.
    assert crossings([(50, 30), (50, 53)]) == [(1, "in")]
    assert crossings([(50, 30), (50, 53)], anchor="center") == []


def found(*items: tuple[int, str]) -> list[Crossing]:
    return [Crossing(frame, direction) for frame, direction in items]  # type: ignore[arg-type]


def test_matching_counts_direction_tolerance_and_each_crossing_once() -> None:
    truth = found((10, "in"), (40, "out"), (70, "in"))
    got = found((12, "in"), (13, "in"), (41, "in"), (79, "in"))
    # 12 matches 10; 13 is a second report of it; 41 has the wrong direction; 79 is 9 frames late.
    assert match(truth, got, tolerance=8) == Score(tp=1, fp=3, fn=2, offsets=(2,))
    assert match(truth, got, tolerance=9) == Score(tp=2, fp=2, fn=1, offsets=(2, 9))


def test_matching_finds_the_most_pairs() -> None:
    # The nearest pair first (10 with 13) would leave 14 without a partner; 10 with 5 and 14 with 13 pairs both.
    assert match(found((10, "in"), (14, "in")), found((5, "in"), (13, "in")), tolerance=5).tp == 2


def test_precision_and_recall_are_undefined_without_anything_to_count() -> None:
    assert Score(0, 0, 0).precision is None and Score(0, 0, 0).recall is None
    assert (Score(3, 1, 0).precision, Score(3, 1, 1).recall) == (0.75, 0.75)


@pytest.mark.parametrize(
    ("line", "their_in"),
    [
        (((0, 50), (100, 50)), "in"),  # horizontal left to right: their IN (moving down) is our in
        (((100, 50), (0, 50)), "out"),
        (((50, 0), (50, 100)), "out"),  # vertical drawn downwards: their IN (moving right) is our out
        (((50, 100), (50, 0)), "in"),
        (((20, 90), (60, 10)), "in"),  # more vertical than horizontal, drawn upwards
    ],
)
def test_object_counter_directions_map_to_ours(line, their_in: str) -> None:  # type: ignore[no-untyped-def]
    assert ultralytics_direction(line, counted_in=True) == their_in
    assert ultralytics_direction(line, counted_in=False) == ("out" if their_in == "in" else "in")

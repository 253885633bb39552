"""LineCounter on literal trajectories: direction, jitter, the segment's ends, gaps, labels, anchors, reset."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from agent.config.lines import LineConfig, LinesConfig
from agent.scene.lines import LineCounter, LineCounts, local_midnight

HW = (100, 100)  # pixels = percent of the frame
GATE = LineConfig("gate", ((0.2, 0.5), (0.8, 0.5)))  # horizontal, drawn left to right


def box_at(x: float, y: float) -> list[float]:
    """A 10x10 box whose bottom centre (the default anchor) is at (x, y) pixels."""
    return [x - 5, y - 10, x + 5, y]


def walk(
    points: list[tuple[float, float]],
    lines: tuple[LineConfig, ...] = (GATE,),
    label: str = "person",
    start_ts: float = 1_000.0,
) -> list[tuple[str, str]]:
    """(line, direction) of every crossing one object makes along `points`, one detector frame each;
    a None point is a frame the object was not seen in."""
    counter = LineCounter(LinesConfig(lines, "never"), LineCounts(since=0.0))
    found = []
    for frame, point in enumerate(points):
        if point is None:
            continue
        crossings = counter.update(["a"], [label], np.array([box_at(*point)]), HW, start_ts + frame, frame)
        found += [(c.line, c.direction) for c in crossings]
    return found


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(50, 30), (50, 45), (50, 55), (50, 70)], [("gate", "in")]),  # moving down the image: in
        ([(50, 70), (50, 55), (50, 45), (50, 30)], [("gate", "out")]),
        ([(50, 30), (50, 70), (50, 30)], [("gate", "in"), ("gate", "out")]),  # over and back: one each way
        ([(50, 30), (50, 49.8), (50, 50.2), (50, 49.9), (50, 50.1), (50, 49.7)], []),  # jitter on the line
        ([(50, 30), (50, 70), (50, 50), (50, 70)], [("gate", "in")]),  # onto the line and back: still one
        ([(10, 30), (10, 70)], []),  # beside the segment, across its extension
        ([(90, 30), (90, 70)], []),
        ([(10, 30), (30, 70)], [("gate", "in")]),  # diagonally through the segment
        ([(50, 30), None, None, None, (50, 70)], [("gate", "in")]),  # a gap the tracker bridged
        ([(50, 30), (50, 40), (50, 70), (50, 80), (50, 90)], [("gate", "in")]),  # once per crossing, not per frame
    ],
)
def test_crossings_along_a_walk(points: list, expected: list) -> None:
    assert walk(points) == expected


def test_the_flipped_line_counts_the_other_direction() -> None:
    flipped = LineConfig("back", ((0.8, 0.5), (0.2, 0.5)))
    assert walk([(50, 30), (50, 70)], (GATE, flipped)) == [("gate", "in"), ("back", "out")]


def test_a_vertical_line_drawn_downwards_counts_leftward_motion_as_in() -> None:
    # Looking from (0.5, 0.2) to (0.5, 0.8), i.e. down the image, the left is the image's right.
    down = LineConfig("door", ((0.5, 0.2), (0.5, 0.8)))
    assert walk([(70, 60), (30, 60)], (down,)) == [("door", "in")]


def test_labels_and_anchor() -> None:
    cars = LineConfig("gate", GATE.points, labels=("car",))
    assert walk([(50, 30), (50, 70)], (cars,), label="person") == []
    assert walk([(50, 30), (50, 70)], (cars,), label="car") == [("gate", "in")]
    # The box's top crosses later than its bottom: with the top as anchor, (50, 58) is still above.
    top = LineConfig("gate", GATE.points, anchor="top_center")
    assert walk([(50, 30), (50, 58)], (top,)) == []
    assert walk([(50, 30), (50, 62)], (top,)) == [("gate", "in")]


def test_counts_add_up_per_line_direction_and_label() -> None:
    counter = LineCounter(LinesConfig((GATE,), "never"), LineCounts(since=0.0))
    for n, (label, (y0, y1)) in enumerate([("person", (30, 70)), ("person", (30, 70)), ("car", (70, 30))]):
        oid = f"o{n}"
        counter.update([oid], [label], np.array([box_at(50, y0)]), HW, 1.0, 1)
        counter.update([oid], [label], np.array([box_at(50, y1)]), HW, 2.0, 2)
    assert counter.snapshot() == {"gate": {"in": {"person": 2}, "out": {"car": 1}}}


def test_an_ended_track_forgets_its_side() -> None:
    counter = LineCounter(LinesConfig((GATE,), "never"), LineCounts(since=0.0))
    counter.update(["a"], ["person"], np.array([box_at(50, 30)]), HW, 1.0, 1)
    counter.forget(["a"])
    assert counter.update(["a"], ["person"], np.array([box_at(50, 70)]), HW, 2.0, 2) == []


def test_daily_counts_start_again_at_local_midnight_and_never_ones_do_not() -> None:
    today = dt.datetime(2026, 12, 7, 23, 59, 0).astimezone().timestamp()
    tomorrow = today + 120  # 00:01 the next day
    daily = LineCounter(
        LinesConfig((GATE,), "daily"), LineCounts(since=today - 3600, counts={"gate": {"in": {"a": 3}}})
    )
    assert daily.reset_if_due(today) is False and daily.snapshot()["gate"]["in"] == {"a": 3}
    assert daily.reset_if_due(tomorrow) is True
    assert daily.snapshot()["gate"] == {"in": {}, "out": {}}
    assert daily.counts.since == local_midnight(tomorrow) > today
    never = LineCounter(
        LinesConfig((GATE,), "never"), LineCounts(since=today - 3600, counts={"gate": {"in": {"a": 3}}})
    )
    assert never.reset_if_due(tomorrow) is False and never.snapshot()["gate"]["in"] == {"a": 3}

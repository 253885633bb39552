"""ZoneOccupancy on literal boxes: bottom centre inside, inertia both ways, loitering, label filters, counts."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config.zones import ZoneConfig
from agent.scene.zones import ZoneOccupancy, ZoneUpdate

HW = (100, 200)  # a 200 x 100 frame: x pixels = 200 * x, y pixels = 100 * y
# The lower half of the frame's left half.
YARD = ZoneConfig("yard", ((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)), inertia=1)


def box_standing_at(x: float, y: float, size: float = 10.0) -> list[float]:
    """A box whose bottom centre is at pixel (x, y)."""
    return [x - size / 2, y - size, x + size / 2, y]


def step(occupancy: ZoneOccupancy, objects: dict[str, tuple[str, tuple[float, float]]], ts: float) -> ZoneUpdate:
    ids = list(objects)
    labels = [objects[i][0] for i in ids]
    boxes = np.array([box_standing_at(*objects[i][1]) for i in ids], np.float32).reshape(-1, 4)
    return occupancy.update(ids, labels, boxes, HW, ts)


@pytest.mark.parametrize(
    ("foot", "inside"),
    [
        ((50.0, 75.0), True),  # well inside
        ((50.0, 40.0), False),  # above the zone
        ((150.0, 75.0), False),  # to its right
        ((100.0, 75.0), True),  # on its right edge: the edge counts as inside
        ((99.0, 49.0), False),  # just above its top edge
    ],
)
def test_the_bottom_centre_decides(foot: tuple[float, float], inside: bool) -> None:
    update = step(ZoneOccupancy([YARD]), {"a": ("person", foot)}, 0.0)
    assert update.zones_of["a"] == (("yard",) if inside else ())


def test_a_tall_box_whose_head_is_outside_stands_inside() -> None:
    occupancy = ZoneOccupancy([YARD])
    # Bottom centre at (50, 90), top far above the zone: it stands in the yard.
    update = occupancy.update(["a"], ["person"], np.array([[40, 5, 60, 90]], np.float32), HW, 0.0)
    assert update.zones_of["a"] == ("yard",)


def test_inertia_holds_entering_and_leaving() -> None:
    occupancy = ZoneOccupancy([ZoneConfig("yard", YARD.polygon, inertia=3)])
    inside, outside = ("person", (50.0, 75.0)), ("person", (150.0, 75.0))
    sequence = [outside, inside, inside, inside, outside, inside, outside, outside, outside]
    seen = [step(occupancy, {"a": where}, float(t)).zones_of["a"] for t, where in enumerate(sequence)]
    assert seen == [(), (), (), ("yard",), ("yard",), ("yard",), ("yard",), ("yard",), ()]


def test_loiter_needs_time_inside_and_restarts_after_leaving() -> None:
    occupancy = ZoneOccupancy([ZoneConfig("yard", YARD.polygon, inertia=1, loiter_s=2.0)])
    inside, outside = ("person", (50.0, 75.0)), ("person", (150.0, 75.0))
    timeline = [(0.0, inside), (1.0, inside), (1.5, outside), (2.0, inside), (3.9, inside), (4.0, inside)]
    seen = [step(occupancy, {"a": where}, ts).zones_of["a"] for ts, where in timeline]
    assert seen == [(), (), (), (), (), ("yard",)]


def test_label_filters_and_counts_with_zeros() -> None:
    cars_only = ZoneConfig("drive", YARD.polygon, labels=("car", "truck"), inertia=1)
    anything = ZoneConfig("all", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), inertia=1)
    occupancy = ZoneOccupancy([cars_only, anything])
    assert {k: dict(v) for k, v in occupancy.counts.items()} == {"drive": {"car": 0, "truck": 0}, "all": {}}
    update = step(occupancy, {"p": ("person", (50.0, 75.0)), "c": ("car", (60.0, 80.0))}, 0.0)
    assert update.zones_of == {"p": ("all",), "c": ("drive", "all")}
    assert {k: dict(v) for k, v in update.counts.items()} == {
        "drive": {"car": 1, "truck": 0},
        "all": {"person": 1, "car": 1},
    }
    assert update.changed
    again = step(occupancy, {"p": ("person", (51.0, 75.0)), "c": ("car", (61.0, 80.0))}, 1.0)
    assert not again.changed


def test_entered_remembers_every_zone_in_order_and_forget_updates_counts() -> None:
    left = ZoneConfig("left", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)), inertia=1)
    right = ZoneConfig("right", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), inertia=1)
    occupancy = ZoneOccupancy([left, right])
    step(occupancy, {"a": ("dog", (150.0, 50.0))}, 0.0)
    update = step(occupancy, {"a": ("dog", (40.0, 50.0))}, 1.0)
    assert update.zones_of["a"] == ("left",) and update.entered["a"] == ("right", "left")
    assert occupancy.forget(["a"]) is True
    assert dict(occupancy.counts["left"]) == {} and occupancy.zones_of("a") == ()
    assert occupancy.forget(["a"]) is False


def test_mismatched_lengths_are_a_bug() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        ZoneOccupancy([YARD]).update(["a", "b"], ["x"], np.zeros((2, 4), np.float32), HW, 0.0)


def test_dwell_runs_from_the_first_frame_inside_to_the_last_one_seen_there_over_every_visit() -> None:
    occupancy = ZoneOccupancy([ZoneConfig("yard", YARD.polygon, inertia=2)])
    inside, outside = ("person", (50.0, 75.0)), ("person", (50.0, 20.0))
    timeline = [(0.0, outside), (1.0, inside), (2.0, inside), (3.5, inside)]  # in from 1.0: 2.5 s so far
    for ts, where in timeline:
        update = step(occupancy, {"a": where}, ts)
    assert update.dwell_of["a"] == {"yard": 2.5}
    assert occupancy.longest_dwell() == {"yard": {"person": 2.5}}
    for ts in (4.0, 5.0):  # out (after inertia 2), then back in for a second visit of 1 s
        update = step(occupancy, {"a": outside}, ts)
    assert update.zones_of["a"] == () and update.dwell_of["a"] == {"yard": 2.5}
    assert occupancy.longest_dwell() == {"yard": {}}
    for ts in (6.0, 7.0):
        update = step(occupancy, {"a": inside}, ts)
    assert update.dwell_of["a"] == {"yard": 3.5}


def test_dwell_stops_at_the_last_frame_the_object_was_seen() -> None:
    occupancy = ZoneOccupancy([ZoneConfig("yard", YARD.polygon, inertia=1)])
    box = np.array([box_standing_at(50.0, 75.0)], np.float32)
    occupancy.update(["a"], ["person"], box, HW, 1.0)
    occupancy.update(["a"], ["person"], box, HW, 2.0)
    update = occupancy.update(["a"], ["person"], box, HW, 5.0, seen=[False])  # the tracker's prediction
    assert update.zones_of["a"] == ("yard",) and update.dwell_of["a"] == {"yard": 1.0}

"""The motion benchmark's comparisons on literal `objects` messages: found objects and the stationary one."""

from __future__ import annotations

from benchmarks.fixture.still_video import plan_scene
from benchmarks.motion_compare import compare_objects, stationary_kept

SCENE = plan_scene(seconds=150.0, fps=10.0)  # the still object stands from 23 s to 97 s at (0.35, 0.72)
AT_SPOT = (0.30, 0.67, 0.40, 0.77)
ELSEWHERE = (0.70, 0.10, 0.80, 0.20)


def message(kind: str, oid: str, frame: int, box: tuple = AT_SPOT, label: str = "triangle") -> dict:
    return {"type": kind, "id": oid, "frame": frame, "box": list(box), "label": label, "entered_zones": []}


def test_one_id_through_the_still_stretch_is_kept_whatever_its_label() -> None:
    objects = [message("new", "a", 210, (0.1, 0.67, 0.2, 0.77)), message("update", "a", 340), message("end", "a", 990)]
    kept = stationary_kept(objects, SCENE)
    assert kept.kept and (kept.ids, kept.first_frame, kept.last_frame) == (1, 210, 990)


def test_an_id_that_ends_and_restarts_during_the_stretch_is_not_kept() -> None:
    objects = [message("new", "a", 210), message("end", "a", 500), message("new", "b", 520), message("end", "b", 990)]
    kept = stationary_kept(objects, SCENE)
    assert kept.ids == 2 and not kept.kept


def test_objects_elsewhere_or_outside_the_stretch_do_not_count() -> None:
    objects = [message("new", "x", 400, ELSEWHERE), message("new", "y", 100), message("end", "y", 150)]
    assert stationary_kept(objects, SCENE).ids == 0


def test_a_gated_new_of_the_same_label_within_the_window_is_found() -> None:
    ungated = [message("new", "u1", 100, label="circle"), message("new", "u2", 400, label="star")]
    gated = [message("new", "g1", 102, label="circle"), message("new", "g2", 400, label="circle")]
    found = compare_objects(ungated, gated, fps=10.0, within_s=0.5)
    assert [(f.label, f.gated_frame) for f in found] == [("circle", 102), ("star", None)]

"""Tracker on literal boxes: ids kept while moving, crossing and briefly missed; confirmation; endings."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from agent.pipeline.detections import Detections
from agent.scene.tracker import Tracker, TrackerSettings, iou_matrix, new_track_id

FPS = 10.0


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    """(x1, y1, x2, y2, score, class_id) rows."""
    a = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))


def counter_ids() -> Tracker:
    numbers = itertools.count(1)
    return Tracker(TrackerSettings(), make_id=lambda ts: f"t{next(numbers)}")


def test_one_box_moving_right_keeps_one_id() -> None:
    tracker = counter_ids()
    ids = []
    for i in range(10):
        x = 10 + 8 * i
        ids.append(tracker.update(dets((x, 50, x + 40, 90, 0.9, 0)), i / FPS).track_ids[0])
    assert ids == [None] + ["t1"] * 9, "confirmed on its second frame, then the same id"


def test_two_boxes_crossing_keep_their_ids() -> None:
    tracker = counter_ids()
    seen: dict[str, set[str]] = {"left": set(), "right": set()}
    for i in range(21):
        a = 10 + 10 * i  # left to right
        b = 210 - 10 * i  # right to left, same height: they overlap mid-way
        update = tracker.update(dets((a, 50, a + 40, 90, 0.9, 0), (b, 52, b + 40, 92, 0.85, 0)), i / FPS)
        if i >= 1:
            seen["left"].add(update.track_ids[0])
            seen["right"].add(update.track_ids[1])
    assert len(seen["left"]) == len(seen["right"]) == 1, seen
    assert seen["left"] != seen["right"]


def test_a_short_miss_keeps_the_id_and_a_long_one_ends_the_track() -> None:
    tracker = counter_ids()
    box = (10, 10, 50, 50, 0.9, 0)
    tracker.update(dets(box), 0.0)
    assert tracker.update(dets(box), 0.1).track_ids == ("t1",)
    assert tracker.update(dets(), 0.5).ended == ()
    assert tracker.update(dets(box), 1.5).track_ids == ("t1",), "1.4 s missed < max_lost_s 2 s"
    tracker.update(dets(), 2.0)
    gone = tracker.update(dets(), 3.6)
    assert [t.id for t in gone.ended] == ["t1"] and gone.ended[0].last_seen_ts == 1.5
    assert tracker.update(dets(box), 4.0).track_ids == (None,), "a new track, not yet confirmed"
    assert tracker.update(dets(box), 4.1).track_ids == ("t2",)


def test_a_one_frame_false_positive_never_gets_an_id() -> None:
    tracker = counter_ids()
    assert tracker.update(dets((10, 10, 50, 50, 0.9, 0)), 0.0).started == ()
    update = tracker.update(dets(), 0.1)
    assert update.tracks == () and update.ended == () and tracker.active == 0


def test_a_low_score_detection_continues_a_track_but_never_starts_one() -> None:
    tracker = counter_ids()
    tracker.update(dets((10, 10, 50, 50, 0.9, 0)), 0.0)
    tracker.update(dets((12, 10, 52, 50, 0.9, 0)), 0.1)
    assert tracker.update(dets((14, 10, 54, 50, 0.3, 0)), 0.2).track_ids == ("t1",)
    fresh = counter_ids()
    for i in range(5):
        assert fresh.update(dets((10, 10, 50, 50, 0.3, 0)), i / FPS).track_ids == (None,)


def test_stationary_after_stationary_s_and_not_while_moving() -> None:
    numbers = itertools.count(1)
    tracker = Tracker(TrackerSettings(stationary_s=3.0), make_id=lambda ts: f"t{next(numbers)}")
    states, ids = [], set()
    for i in range(50):  # 5 s at 10 fps: moves fast for 1 s, stops dead, then stands (a little jitter)
        x = 10 + 20 * min(i, 10) + (i % 2)
        update = tracker.update(dets((x, 50, x + 40, 90, 0.9, 0)), i / FPS)
        states.append(bool(update.tracks and update.tracks[0].stationary))
        ids.update(track.id for track in update.tracks)
    assert ids == {"t1"}, "the id changed when the object stopped"
    assert not any(states[:40]) and all(states[40:]), states


def test_a_still_scene_refreshed_every_5_s_keeps_its_track_although_max_lost_s_is_2() -> None:
    tracker = counter_ids()
    box = (10, 10, 50, 50, 0.9, 0)
    tracker.update(dets(box), 0.0)
    tracker.update(dets(box), 0.1)
    # The motion gate skips still frames; the detector runs at each refresh, and once misses it.
    for ts, seen in ((5.1, True), (10.1, False), (15.1, True)):
        update = tracker.update(dets(box) if seen else dets(), ts, still=True)
        assert update.ended == () and [t.id for t in update.tracks] == ["t1"], ts


def test_a_track_missed_on_a_motion_frame_and_then_on_still_checks_ends_after_max_lost_s() -> None:
    tracker = counter_ids()
    box = (10, 10, 50, 50, 0.9, 0)
    tracker.update(dets(box), 0.0)
    tracker.update(dets(box), 0.1)
    missed = tracker.update(dets(), 0.2)  # the object left while motion was seen
    assert missed.ended == () and missed.missing == 1, "one miss on a motion frame is not an end"
    # Nothing moves since: the gate's checks, CHECK_S apart, find nothing. Missed from 0.2 s on, lost
    # since 0.1 s: still open at 2.0 s (1.9 s lost), ended at 2.5 s (2.4 s > max_lost_s 2).
    for ts in (0.5, 1.0, 1.5, 2.0):
        update = tracker.update(dets(), ts, still=True)
        assert update.ended == () and update.missing == 1, ts
    update = tracker.update(dets(), 2.5, still=True)
    assert [t.id for t in update.ended] == ["t1"] and update.tracks == () and update.missing == 0


# A parked object at the refreshes and the gate's checks after a miss, (ts, seen): its track stays open throughout.
FLAKY_REFRESHES = [
    (5.1, False),  # a refresh misses it: the 5 s since the last detector frame do not count
    (5.6, False),
    (6.1, False),
    (6.6, True),  # found again 1.5 s after the first miss: the same track
    (11.6, False),
    (12.1, False),
    (12.6, False),
    (13.1, False),
    (13.6, False),  # missed for 2.0 s: not more than max_lost_s
]


def test_a_flaky_detector_on_still_frames_keeps_a_track_until_max_lost_s_of_misses() -> None:
    tracker = counter_ids()
    box = (10, 10, 50, 50, 0.9, 0)
    tracker.update(dets(box), 0.0)
    tracker.update(dets(box), 0.1)
    for ts, seen in FLAKY_REFRESHES:
        update = tracker.update(dets(box) if seen else dets(), ts, still=True)
        assert update.ended == () and [t.id for t in update.tracks] == ["t1"], ts
    update = tracker.update(dets(), 14.1, still=True)  # 2.5 s of misses
    assert [t.id for t in update.ended] == ["t1"] and update.tracks == ()


def test_the_label_is_the_class_with_the_most_accumulated_score() -> None:
    tracker = counter_ids()
    for i, class_id in enumerate([0, 0, 1, 0, 1]):
        update = tracker.update(dets((10, 10, 50, 50, 0.9 if class_id == 0 else 0.6, class_id)), i / FPS)
    assert update.tracks[0].class_id == 0


def test_close_ends_every_confirmed_track() -> None:
    tracker = counter_ids()
    tracker.update(dets((10, 10, 50, 50, 0.9, 0), (100, 10, 140, 50, 0.9, 1)), 0.0)
    tracker.update(dets((10, 10, 50, 50, 0.9, 0), (100, 10, 140, 50, 0.9, 1)), 0.1)
    assert sorted(t.id for t in tracker.close(1.0)) == ["t1", "t2"] and tracker.active == 0


def test_ids_are_unique_across_instances_and_readable() -> None:
    ids = {new_track_id(1733000000.0) for _ in range(200)}
    assert len(ids) == 200 and all(i.startswith("1733000000.000-") for i in ids)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [((0, 0, 10, 10), (0, 0, 10, 10), 1.0), ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3), ((0, 0, 1, 1), (2, 2, 3, 3), 0.0)],
)
def test_iou(a: tuple, b: tuple, expected: float) -> None:
    assert iou_matrix(np.array([a], np.float32), np.array([b], np.float32))[0, 0] == pytest.approx(expected)


def _ids_per_object(frames: list[list[tuple]], settings: TrackerSettings | None = None) -> list[set]:
    """Run rows of per-frame boxes (one tuple or None per object) and collect each object's confirmed ids."""
    numbers = itertools.count(1)
    tracker = Tracker(settings or TrackerSettings(), make_id=lambda ts: f"t{next(numbers)}")
    seen: list[set] = [set() for _ in frames[0]]
    for i, row in enumerate(frames):
        present = [(k, box) for k, box in enumerate(row) if box is not None]
        update = tracker.update(dets(*(box for _, box in present)), i / FPS)
        for (k, _), track_id in zip(present, update.track_ids, strict=True):
            if track_id is not None:
                seen[k].add(track_id)
    return seen


def _moving(x0: float, dx: float, y: float, score: float = 0.9, size: float = 40) -> Callable[[int], tuple]:
    return lambda i: (x0 + dx * i, y, x0 + dx * i + size, y + size, score, 0)


@pytest.mark.parametrize(
    ("case", "frames"),
    [
        # Head-on at one height, overlapping fully mid-way.
        ("crossing head-on", [[_moving(0, 12, 50)(i), _moving(240, -12, 50)(i)] for i in range(21)]),
        # One object crossing the other's path diagonally, different speeds.
        (
            "crossing diagonally",
            [[_moving(0, 8, 50)(i), (100, 10 + 6 * i, 140, 50 + 6 * i, 0.8, 1)] for i in range(15)],
        ),
        # Two frames without the first object, both moving.
        (
            "missed frames",
            [[None if i in (5, 6) else _moving(0, 6, 20)(i), _moving(200, -4, 120)(i)] for i in range(12)],
        ),
        # The object fades to low scores for a stretch: the second pass keeps it.
        ("low scores rescue", [[_moving(0, 5, 20, 0.9 if i < 3 or i > 8 else 0.3)(i)] for i in range(12)]),
    ],
)
def test_objects_keep_one_id_each(case: str, frames: list[list[tuple]]) -> None:
    seen = _ids_per_object(frames)
    assert all(len(ids) == 1 for ids in seen), (case, seen)
    assert len(set().union(*seen)) == len(seen), (case, "two objects share an id", seen)


def test_a_low_score_detection_keeps_the_track_matched_and_its_box_current() -> None:
    tracker = counter_ids()
    for i in range(3):
        tracker.update(dets((10 + 5 * i, 10, 50 + 5 * i, 50, 0.9, 0)), i / FPS)
    update = tracker.update(dets((25, 10, 65, 50, 0.2, 0)), 0.3)
    assert update.track_ids == ("t1",) and update.tracks[0].last_seen_ts == 0.3
    assert update.tracks[0].box.tolist() == [25, 10, 65, 50] and update.tracks[0].score == pytest.approx(0.2)


def test_a_second_class_box_on_the_same_object_starts_no_track() -> None:
    # Detectors' NMS is per class: one shape seen as both a square and a triangle gives two boxes.
    tracker = counter_ids()
    for i in range(6):
        x = 10 + 4 * i
        update = tracker.update(dets((x, 10, x + 40, 50, 0.9, 0), (x + 1, 11, x + 41, 50, 0.6, 1)), i / FPS)
    assert update.track_ids == ("t1", None) and tracker.active == 1


def test_two_distinct_objects_appearing_side_by_side_get_two_tracks() -> None:
    tracker = counter_ids()
    for i in range(3):
        update = tracker.update(dets((10, 10, 50, 50, 0.9, 0), (40, 10, 80, 50, 0.8, 0)), i / FPS)
    assert update.track_ids == ("t1", "t2")


def test_many_tracks_are_matched_and_reordered_consistently() -> None:
    """Twenty objects on a grid, the detections shuffled every frame, one object dropping out for a while."""
    rng = np.random.default_rng(3)
    tracker = counter_ids()
    grid = [(60 * (k % 5), 60 * (k // 5)) for k in range(20)]
    owner: dict[int, str] = {}
    for i in range(12):
        order = rng.permutation(20)
        rows = [(grid[k][0] + 2 * i, grid[k][1], grid[k][0] + 2 * i + 40, grid[k][1] + 40, 0.9, k % 3) for k in order]
        kept = [j for j, k in enumerate(order) if not (k == 7 and 4 <= i <= 6)]
        update = tracker.update(dets(*(rows[j] for j in kept)), i / FPS)
        for j, track_id in zip(kept, update.track_ids, strict=True):
            if i >= 1:
                assert owner.setdefault(int(order[j]), track_id) == track_id, (i, int(order[j]))
    assert len(set(owner.values())) == 20 and tracker.active == 20


def test_a_track_where_the_detector_did_not_look_is_neither_missed_nor_ended() -> None:
    """With motion regions, a frame may run on crops that leave a tracked object out: that is no evidence it left."""
    tracker = counter_ids()
    box = (10.0, 50.0, 50.0, 90.0, 0.9, 0)
    for i in range(3):
        tracker.update(dets(box), i / FPS)
    elsewhere = lambda boxes: np.zeros(len(boxes), bool)  # noqa: E731 - the crops were all somewhere else
    for i in range(3, 60):  # 5.7 s, well past max_lost_s
        update = tracker.update(Detections.empty(), i / FPS, looked_at=elsewhere)
        assert [t.id for t in update.tracks] == ["t1"] and update.missing == 0 and not update.ended
    there = lambda boxes: np.ones(len(boxes), bool)  # noqa: E731
    ended = [t.id for i in range(60, 90) for t in tracker.update(Detections.empty(), i / FPS, looked_at=there).ended]
    assert ended == ["t1"], "looked at and not found: it ends after max_lost_s as always"
    assert tracker.update(dets(box), 9.0, looked_at=elsewhere).track_ids == (None,)

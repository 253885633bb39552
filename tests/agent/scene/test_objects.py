"""ObjectEvents on literal tracks: new once confirmed, update on what matters, rate-limited score rises, end."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from agent.scene.objects import MIN_UPDATE_S, ObjectEvent, ObjectEvents

NAMES = {0: "person", 1: "car"}
HW = (100, 200)


@dataclass(frozen=True)
class Track:
    id: str
    class_id: int = 0
    box: np.ndarray = field(default_factory=lambda: np.array([20.0, 10.0, 60.0, 90.0], np.float32))
    score: float = 0.8
    top_score: float = 0.8
    start_ts: float = 100.0
    last_seen_ts: float = 100.0
    stationary: bool = False


def run(
    events: ObjectEvents,
    tracks: list[Track],
    ts: float,
    zones: dict[str, tuple[str, ...]] | None = None,
    ended: tuple[Track, ...] | list[Track] = (),
) -> list[ObjectEvent]:
    """One detector frame; every zone an object is in counts as entered too."""
    zones = zones or {}
    return events.update(tracks, list(ended), zones, dict(zones), HW, ts, int(ts))


def test_new_carries_the_normalized_box_and_label() -> None:
    [event] = run(ObjectEvents(NAMES), [Track("a")], 100.0)
    assert (event.type, event.id, event.label) == ("new", "a", "person")
    assert event.box == (0.1, 0.1, 0.3, 0.9)
    assert event.end_ts is None and event.zones == () and event.start_ts == 100.0


def test_updates_come_at_once_for_zones_stationary_and_label_but_not_for_nothing() -> None:
    events = ObjectEvents(NAMES)
    run(events, [Track("a")], 100.0)
    assert run(events, [Track("a")], 100.1) == []
    [zoned] = run(events, [Track("a")], 100.2, {"a": ("yard",)})
    assert zoned.type == "update" and zoned.zones == ("yard",) and zoned.entered_zones == ("yard",)
    [still] = run(events, [Track("a", stationary=True)], 100.3, {"a": ("yard",)})
    assert still.stationary
    [relabelled] = run(events, [Track("a", class_id=1, stationary=True)], 100.4, {"a": ("yard",)})
    assert relabelled.label == "car"


def test_a_rising_top_score_updates_at_most_once_per_interval() -> None:
    events = ObjectEvents(NAMES)
    run(events, [Track("a", top_score=0.6)], 100.0)
    assert run(events, [Track("a", top_score=0.64)], 100.0 + MIN_UPDATE_S) == [], "below SCORE_STEP"
    assert run(events, [Track("a", top_score=0.7)], 100.5) == [], "within MIN_UPDATE_S of the last message"
    [risen] = run(events, [Track("a", top_score=0.7)], 100.0 + MIN_UPDATE_S)
    assert risen.type == "update" and risen.top_score == 0.7


def test_end_for_ended_tracks_with_their_last_seen_time_and_never_for_unknown_ones() -> None:
    events = ObjectEvents(NAMES)
    run(events, [Track("a")], 100.0)
    [end] = run(events, [], 103.0, ended=[Track("a", last_seen_ts=100.5)])
    assert (end.type, end.id, end.end_ts, end.ts) == ("end", "a", 100.5, 103.0)
    assert run(events, [], 104.0, ended=[Track("never-confirmed")]) == []
    assert events.open_ids == []


def test_close_ends_every_open_object() -> None:
    events = ObjectEvents(NAMES)
    run(events, [Track("b", last_seen_ts=101.0), Track("a", last_seen_ts=100.0)], 101.0)
    ended = events.close(200.0, 999)
    assert [(e.type, e.id, e.end_ts, e.ts, e.frame) for e in ended] == [
        ("end", "a", 100.0, 200.0, 999),
        ("end", "b", 101.0, 200.0, 999),
    ]
    assert events.close(201.0, 1000) == []
    # A track seen again after close() is new again.
    assert [e.type for e in run(events, [replace(Track("a"))], 202.0)] == ["new"]

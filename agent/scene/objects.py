"""Per-object events: `new` when a track is confirmed, `update` when what it means changed, `end`.

An `update` goes out at once when the object's zones, its stationary state or its label change,
since automations wait for exactly those; a rising top score alone (by SCORE_STEP or more) is
news too, but at most once per object per MIN_UPDATE_S, so a person walking up to the camera does
not send one message per frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

ObjectEventType = Literal["new", "update", "end"]
SCORE_STEP = 0.05
MIN_UPDATE_S = 1.0


class TrackLike(Protocol):
    """What the events read of a tracked object (the tracker's TrackedObject provides it)."""

    @property
    def id(self) -> str: ...
    @property
    def class_id(self) -> int: ...
    @property
    def box(self) -> np.ndarray: ...
    @property
    def score(self) -> float: ...
    @property
    def top_score(self) -> float: ...
    @property
    def start_ts(self) -> float: ...
    @property
    def last_seen_ts(self) -> float: ...
    @property
    def stationary(self) -> bool: ...


@dataclass(frozen=True)
class ObjectEvent:
    """One message of the `objects` topic, before it gets its seq. box: normalized xyxy of the source frame."""

    type: ObjectEventType
    id: str
    label: str
    score: float
    top_score: float
    box: tuple[float, float, float, float]
    zones: tuple[str, ...]
    entered_zones: tuple[str, ...]
    stationary: bool
    start_ts: float
    end_ts: float | None
    ts: float
    frame: int
    dwell_s: Mapping[str, float] = field(default_factory=dict)  # zone -> seconds stood there so far


@dataclass(frozen=True)
class _Sent:
    """What the last message about an object said."""

    label: str
    zones: tuple[str, ...]
    stationary: bool
    top_score: float
    ts: float


class ObjectEvents:
    """Turns each detector frame's confirmed tracks (and their zones) into `objects` events."""

    def __init__(self, names: Mapping[int, str]) -> None:
        self.names = dict(names)
        self._sent: dict[str, _Sent] = {}
        # The newest state of each open object and when it was last seen, for close().
        self._last: dict[str, tuple[ObjectEvent, float]] = {}

    @property
    def open_ids(self) -> list[str]:
        return sorted(self._sent)

    def update(
        self,
        tracks: Iterable[TrackLike],
        ended: Iterable[TrackLike],
        zones_of: Mapping[str, tuple[str, ...]],
        entered: Mapping[str, tuple[str, ...]],
        frame_hw: tuple[int, int],
        ts: float,
        frame: int,
        dwell_of: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[ObjectEvent]:
        """Events for one detector frame: `tracks` are the confirmed ones still open, `ended` those that ended.
        dwell_of: object id -> zone -> seconds, carried by every event."""
        events: list[ObjectEvent] = []
        dwell_of = dwell_of or {}
        for track in tracks:
            event = self._event("new", track, zones_of, entered, frame_hw, ts, frame, dwell_of)
            previous = self._sent.get(track.id)
            self._last[track.id] = (event, track.last_seen_ts)
            if previous is not None and not self._news(previous, event):
                continue
            events.append(event if previous is None else _retyped(event, "update"))
            self._sent[track.id] = _Sent(event.label, event.zones, event.stationary, event.top_score, ts)
        for track in ended:
            if track.id not in self._sent:
                continue  # ended before it was ever confirmed: nobody heard of it
            event = self._event("end", track, zones_of, entered, frame_hw, ts, frame, dwell_of)
            events.append(_ended(event, track.last_seen_ts))
            self._forget(track.id)
        return events

    def close(self, ts: float, frame: int) -> list[ObjectEvent]:
        """`end` for every open object (a clean stop), as of its last known state."""
        events = [_ended(last, last_seen, ts, frame) for _, (last, last_seen) in sorted(self._last.items())]
        self._sent.clear()
        self._last.clear()
        return events

    def _forget(self, object_id: str) -> None:
        self._sent.pop(object_id, None)
        self._last.pop(object_id, None)

    def _news(self, previous: _Sent, event: ObjectEvent) -> bool:
        if (previous.label, previous.zones, previous.stationary) != (event.label, event.zones, event.stationary):
            return True
        return event.top_score >= previous.top_score + SCORE_STEP and event.ts - previous.ts >= MIN_UPDATE_S

    def _event(
        self,
        kind: ObjectEventType,
        track: TrackLike,
        zones_of: Mapping[str, tuple[str, ...]],
        entered: Mapping[str, tuple[str, ...]],
        frame_hw: tuple[int, int],
        ts: float,
        frame: int,
        dwell_of: Mapping[str, Mapping[str, float]],
    ) -> ObjectEvent:
        h, w = frame_hw
        x1, y1, x2, y2 = (float(v) for v in np.asarray(track.box, np.float64))
        box = (
            round(min(max(x1 / w, 0.0), 1.0), 4),
            round(min(max(y1 / h, 0.0), 1.0), 4),
            round(min(max(x2 / w, 0.0), 1.0), 4),
            round(min(max(y2 / h, 0.0), 1.0), 4),
        )
        return ObjectEvent(
            type=kind,
            id=track.id,
            label=self.names.get(int(track.class_id), str(track.class_id)),
            score=round(float(track.score), 4),
            top_score=round(float(track.top_score), 4),
            box=box,
            zones=tuple(zones_of.get(track.id, ())),
            entered_zones=tuple(entered.get(track.id, ())),
            stationary=bool(track.stationary),
            start_ts=round(float(track.start_ts), 3),
            end_ts=None,
            ts=ts,
            frame=frame,
            dwell_s=dict(dwell_of.get(track.id, {})),
        )


def _retyped(event: ObjectEvent, kind: ObjectEventType) -> ObjectEvent:
    return ObjectEvent(**{**event.__dict__, "type": kind})


def _ended(event: ObjectEvent, end_ts: float, ts: float | None = None, frame: int | None = None) -> ObjectEvent:
    changes: dict[str, object] = {"type": "end", "end_ts": round(end_ts, 3)}
    if ts is not None:
        changes["ts"] = ts
    if frame is not None:
        changes["frame"] = frame
    return ObjectEvent(**{**event.__dict__, **changes})

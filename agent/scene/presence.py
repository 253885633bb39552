"""Presence events: a label appears (start), its count changes (update), it is gone (end)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.pipeline.detections import Detections

EventType = Literal["start", "update", "end"]


@dataclass(frozen=True)
class PresenceEvent:
    """One change of presence. ts: Unix seconds of the frame that caused it."""

    type: EventType
    label: str
    count: int
    max_confidence: float
    ts: float
    frame: int


@dataclass
class _Presence:
    count: int
    max_confidence: float
    last_seen: float


class LabelPresence:
    """Turns per-frame detections into presence events per label.

    A label ends only after `end_after` seconds without it, so one missed
    detection does not produce an end/start pair.
    """

    def __init__(self, names: dict[int, str], end_after: float) -> None:
        self.names = names
        self.end_after = end_after
        self._open: dict[str, _Presence] = {}

    @property
    def open_labels(self) -> list[str]:
        return sorted(self._open)

    @property
    def counts(self) -> dict[str, int]:
        """Label -> count of its last start or update, for every open presence."""
        return {label: self._open[label].count for label in sorted(self._open)}

    def update(self, detections: Detections, ts: float, frame: int) -> list[PresenceEvent]:
        """Events caused by one frame's detections (ts: the frame's capture time, Unix seconds)."""
        events: list[PresenceEvent] = []
        present: dict[str, tuple[int, float]] = {}
        for class_id in np.unique(detections.class_ids):
            mask = detections.class_ids == class_id
            label = self.names.get(int(class_id), str(int(class_id)))
            present[label] = (int(mask.sum()), float(detections.scores[mask].max()))
        for label, (count, confidence) in sorted(present.items()):
            presence = self._open.get(label)
            if presence is None:
                self._open[label] = _Presence(count, confidence, ts)
                events.append(PresenceEvent("start", label, count, round(confidence, 4), ts, frame))
                continue
            presence.last_seen = ts
            presence.max_confidence = max(presence.max_confidence, confidence)
            if count != presence.count:
                presence.count = count
                events.append(PresenceEvent("update", label, count, round(presence.max_confidence, 4), ts, frame))
        events.extend(self.expire(ts, frame, keep=set(present)))
        return events

    def expire(self, now: float, frame: int, keep: set[str] | None = None) -> list[PresenceEvent]:
        """End presences unseen for end_after seconds; call it also when no frames arrive."""
        ended = [
            label
            for label, p in self._open.items()
            if (keep is None or label not in keep) and now - p.last_seen >= self.end_after
        ]
        return [self._end(label, now, frame) for label in sorted(ended)]

    def close(self, now: float, frame: int) -> list[PresenceEvent]:
        """A clean stop ends every open presence, so consumers never keep a stale 'present'."""
        return [self._end(label, now, frame) for label in sorted(self._open)]

    def _end(self, label: str, now: float, frame: int) -> PresenceEvent:
        presence = self._open.pop(label)
        return PresenceEvent("end", label, 0, round(presence.max_confidence, 4), now, frame)

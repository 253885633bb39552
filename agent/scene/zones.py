"""Which zones each tracked object is in, with inertia and loitering, and the per-zone counts.

An object is inside a zone when the bottom centre of its box, where it stands, is inside the
polygon (cv2.pointPolygonTest). It enters after `inertia` consecutive detector frames inside and
`loiter_s` seconds since it first stood there, and leaves after `inertia` consecutive frames
outside, so a box that jitters on the edge does not flap in and out.

Dwell is the time an object stood in a zone while tracked: from the first frame it stood there (not
when inertia and loitering let it in) to the last frame it was seen there, summed over its visits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import cv2
import numpy as np

from agent.config.zones import ZoneConfig


@dataclass(frozen=True)
class ZoneUpdate:
    """zones_of: object id -> zones it is in now; entered: object id -> every zone it entered so far,
    in order; counts: zone -> label -> objects in it (every configured zone; its labels at zero too);
    changed: counts differ from the previous update; dwell_of: object id -> zone -> seconds it stood
    there so far (every zone it entered)."""

    zones_of: Mapping[str, tuple[str, ...]]
    entered: Mapping[str, tuple[str, ...]]
    counts: Mapping[str, Mapping[str, int]]
    changed: bool
    dwell_of: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass
class _Presence:
    """One object against one zone."""

    inside_streak: int = 0
    outside_streak: int = 0
    first_inside_ts: float | None = None
    inside: bool = False
    visit_from: float | None = None  # where the visit in progress began (its first frame inside)
    last_inside_ts: float = 0.0
    dwelt_s: float = 0.0  # visits that ended

    @property
    def dwell_s(self) -> float:
        visiting = self.last_inside_ts - self.visit_from if self.visit_from is not None else 0.0
        return self.dwelt_s + visiting


@dataclass
class _Object:
    label: str
    zones: dict[str, _Presence] = field(default_factory=dict)
    entered: list[str] = field(default_factory=list)


class ZoneOccupancy:
    """Feed it the tracked objects of every detector frame; `forget` those whose track ended."""

    def __init__(self, zones: Sequence[ZoneConfig]) -> None:
        self.zones = tuple(zones)
        self._objects: dict[str, _Object] = {}
        self._polygons: dict[tuple[int, int], list[np.ndarray]] = {}
        self._counts: dict[str, dict[str, int]] = self._zero_counts()

    @property
    def counts(self) -> Mapping[str, Mapping[str, int]]:
        return _frozen_counts(self._counts)

    def update(
        self,
        ids: Sequence[str],
        labels: Sequence[str],
        boxes_xyxy: np.ndarray,
        frame_hw: tuple[int, int],
        ts: float,
        seen: Sequence[bool] | None = None,
    ) -> ZoneUpdate:
        """ids, labels and boxes (N, 4 source pixels) of the objects tracked in this frame. seen: which of them
        the detector found in it (the others' boxes are predictions): dwell runs up to when an object was seen."""
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        if not len(ids) == len(labels) == len(boxes):
            raise ValueError(f"ids, labels and boxes differ in length: {len(ids)}, {len(labels)}, {len(boxes)}")
        polygons = self._pixel_polygons(frame_hw)
        seen = [True] * len(ids) if seen is None else seen
        for object_id, label, box, found in zip(ids, labels, boxes, seen, strict=True):
            state = self._objects.setdefault(object_id, _Object(label))
            state.label = label  # a track's label may settle after a few frames
            foot = (float((box[0] + box[2]) / 2), float(box[3]))
            for zone, polygon in zip(self.zones, polygons, strict=True):
                if zone.labels and label not in zone.labels:
                    state.zones.pop(zone.name, None)
                    continue
                inside = cv2.pointPolygonTest(polygon, foot, False) >= 0
                self._step(state, zone, state.zones.setdefault(zone.name, _Presence()), inside, ts, found)
        changed = self._recount()
        return ZoneUpdate(
            zones_of=MappingProxyType({oid: self._inside(s) for oid, s in self._objects.items()}),
            entered=MappingProxyType({oid: tuple(s.entered) for oid, s in self._objects.items()}),
            counts=self.counts,
            changed=changed,
            dwell_of=MappingProxyType({oid: self._dwell(s) for oid, s in self._objects.items()}),
        )

    def longest_dwell(self) -> dict[str, dict[str, float]]:
        """zone -> label -> the longest dwell (s) among the objects in the zone now (labels with none left out)."""
        longest: dict[str, dict[str, float]] = {zone.name: {} for zone in self.zones}
        for state in self._objects.values():
            for name, presence in state.zones.items():
                if presence.inside:
                    per_label = longest[name]
                    per_label[state.label] = max(per_label.get(state.label, 0.0), round(presence.dwell_s, 1))
        return longest

    def forget(self, ids: Sequence[str]) -> bool:
        """Drop ended objects; True if that changed the counts (publish `zones` again then)."""
        for object_id in ids:
            self._objects.pop(object_id, None)
        return self._recount()

    def _recount(self) -> bool:
        """Count the objects in each zone by label; True if the counts changed."""
        counts = self._zero_counts()
        for state in self._objects.values():
            for name, presence in state.zones.items():
                if presence.inside:
                    counts[name][state.label] = counts[name].get(state.label, 0) + 1
        changed, self._counts = counts != self._counts, counts
        return changed

    def zones_of(self, object_id: str) -> tuple[str, ...]:
        state = self._objects.get(object_id)
        return () if state is None else self._inside(state)

    def entered(self, object_id: str) -> tuple[str, ...]:
        state = self._objects.get(object_id)
        return () if state is None else tuple(state.entered)

    def _step(
        self, state: _Object, zone: ZoneConfig, presence: _Presence, inside: bool, ts: float, seen: bool = True
    ) -> None:
        if inside:
            presence.inside_streak += 1
            presence.outside_streak = 0
            if presence.first_inside_ts is None:
                presence.first_inside_ts = ts
            if presence.inside and seen:
                presence.last_inside_ts = ts
            loitered = ts - presence.first_inside_ts >= zone.loiter_s
            if not presence.inside and presence.inside_streak >= zone.inertia and loitered:
                presence.inside = True
                presence.visit_from, presence.last_inside_ts = presence.first_inside_ts, ts
                if zone.name not in state.entered:
                    state.entered.append(zone.name)
        else:
            presence.outside_streak += 1
            presence.inside_streak = 0
            presence.first_inside_ts = None
            if presence.inside and presence.outside_streak >= zone.inertia:
                presence.inside = False
                presence.dwelt_s, presence.visit_from = presence.dwell_s, None

    def _dwell(self, state: _Object) -> dict[str, float]:
        return {name: round(p.dwell_s, 2) for name, p in state.zones.items() if name in state.entered}

    def _inside(self, state: _Object) -> tuple[str, ...]:
        return tuple(zone.name for zone in self.zones if (p := state.zones.get(zone.name)) is not None and p.inside)

    def _zero_counts(self) -> dict[str, dict[str, int]]:
        return {zone.name: dict.fromkeys(zone.labels, 0) for zone in self.zones}

    def _pixel_polygons(self, frame_hw: tuple[int, int]) -> list[np.ndarray]:
        """The zones in pixels of this frame size, computed once per size."""
        if frame_hw not in self._polygons:
            h, w = frame_hw
            scale = np.array([w, h], np.float32)
            self._polygons[frame_hw] = [
                (np.array(zone.polygon, np.float32) * scale).reshape(-1, 1, 2) for zone in self.zones
            ]
        return self._polygons[frame_hw]


def _frozen_counts(counts: Mapping[str, Mapping[str, int]]) -> Mapping[str, Mapping[str, int]]:
    return MappingProxyType({zone: MappingProxyType(dict(labels)) for zone, labels in counts.items()})

"""What the frame loop asks of the scene: should the detector look at this frame, and what do its
detections mean (track ids, zones, per-object events, the zone counts, which labels are present).

Every agent has a scene: with motion gating and tracking both off it runs the detector on every
frame and keeps only per-label presence, which follows the detections themselves."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from agent.config import AgentConfig, ConfigError
from agent.config.lines import LinesConfig, unknown_line_labels
from agent.config.zones import ZoneConfig, unknown_zone_labels
from agent.pipeline.crops import RegionPlan
from agent.pipeline.detections import Detections
from agent.scene.lines import LineCounter, LineCounts, LineCrossing
from agent.scene.motion import DetectionGate, MotionDetector, MotionSettings
from agent.scene.objects import ObjectEvent, ObjectEvents
from agent.scene.presence import LabelPresence, PresenceEvent
from agent.scene.regions import plan_regions
from agent.scene.tracker import Tracker, TrackerSettings, TrackUpdate
from agent.scene.zones import ZoneOccupancy


@dataclass(frozen=True)
class SceneSettings:
    """motion: None = the detector runs on every frame. tracker: None = no tracking (and no zones).
    end_after: seconds without a label before its presence ends. max_regions: with motion gating, the detector
    runs on up to this many crops around motion and tracked objects (agent/scene/regions.py); 0 = whole frames."""

    motion: MotionSettings | None = field(default_factory=MotionSettings)
    refresh_s: float = 5.0
    idle_s: float = 30.0
    tracker: TrackerSettings | None = field(default_factory=TrackerSettings)
    zones: tuple[ZoneConfig, ...] = ()
    end_after: float = 5.0
    lines: LinesConfig = field(default_factory=LinesConfig)
    max_regions: int = 0

    @classmethod
    def presence_only(cls, end_after: float = 5.0) -> SceneSettings:
        """No motion gating and no tracking: the detector on every frame, per-label presence from its detections."""
        return cls(motion=None, tracker=None, end_after=end_after)

    @property
    def watching(self) -> bool:
        """Motion gating or tracking is on (stats then carry the gate's frame counts)."""
        return self.motion is not None or self.tracker is not None


@dataclass(frozen=True)
class Gate:
    """detect: run the detector on this frame. still: it runs although nothing moved (a refresh).
    motion_ms: what deciding cost (and planning the crops). plan: what the detector looks at."""

    detect: bool
    still: bool
    motion_ms: float
    plan: RegionPlan = field(default_factory=RegionPlan.whole_frame)


@dataclass(frozen=True)
class SceneStep:
    """One detector frame's meaning. track_ids and zones run beside the detections; presence: the
    per-label events (with tracking, a label is present while it has a confirmed track, so one missed
    detection ends nothing); zone_counts: set when they changed."""

    track_ids: tuple[str | None, ...]
    zones: tuple[tuple[str, ...], ...]
    objects: list[ObjectEvent]
    presence: list[PresenceEvent]
    zone_counts: Mapping[str, Mapping[str, int]] | None
    tracking_ms: float
    crossings: list[LineCrossing] = field(default_factory=list)


@dataclass(frozen=True)
class SceneEnd:
    """What closing a scene ends: every open object, then every open presence."""

    objects: list[ObjectEvent]
    presence: list[PresenceEvent]


class Scene:
    """line_counts: the crossings counted so far (kept across restarts by the caller); None = from now on."""

    def __init__(
        self, settings: SceneSettings, names: Mapping[int, str], line_counts: LineCounts | None = None
    ) -> None:
        self.settings = settings
        self.names = dict(names)
        self._motion = MotionDetector(settings.motion) if settings.motion is not None else None
        self.gate_counts = DetectionGate(settings.refresh_s, settings.idle_s)
        self._tracker = Tracker(settings.tracker) if settings.tracker is not None else None
        self.zones = ZoneOccupancy(settings.zones if self._tracker is not None else ())
        self._objects = ObjectEvents(names)
        self._presence = LabelPresence(self.names, settings.end_after)
        lines = settings.lines if self._tracker is not None else LinesConfig()
        self.lines = LineCounter(lines, line_counts or LineCounts(since=time.time()))
        self._last: TrackUpdate | None = None
        self._last_ts = 0.0  # the last detector frame's capture time
        self.crops_run = 0  # crops the detector ran on, and the detector frames that ran on crops
        self.crop_frames = 0

    def renamed(self, names: Mapping[int, str]) -> Scene:
        """A new scene with these settings for a model with other labels (this one is to be closed first);
        the line counts go on."""
        return Scene(self.settings, names, self.lines.counts)

    @property
    def present(self) -> dict[str, int]:
        """Label -> count, for every label present now."""
        return self._presence.counts

    @property
    def frame_counts(self) -> dict[str, int]:
        """For stats: frames the detector ran on and frames the gate skipped; none while nothing is watched."""
        if not self.settings.watching:
            return {}
        counts = {"detected": self.gate_counts.detected, "motion_skipped": self.gate_counts.skipped}
        if self.regions_on:
            counts |= {"regions": self.crops_run, "region_frames": self.crop_frames}
        return counts

    @property
    def regions_on(self) -> bool:
        return self._motion is not None and self.settings.max_regions > 0

    @property
    def tracking(self) -> bool:
        return self._tracker is not None

    @property
    def tracks(self) -> dict[str, int]:
        """For stats: confirmed tracks open, and how many of them stand still."""
        tracks = self._last.tracks if self._last is not None else ()
        return {"active": len(tracks), "stationary": sum(t.stationary for t in tracks)}

    def gate(self, image_bgr: np.ndarray, now_mono: float, input_side: int = 0) -> Gate:
        """input_side: the model's square input in pixels, the least a crop is cut at (with regions on)."""
        if self._motion is None:
            self.gate_counts.detected += 1
            return Gate(True, False, 0.0)
        started = time.perf_counter()
        motion = self._motion.update(image_bgr)
        missing = self._last is not None and self._last.missing > 0
        detect = self.gate_counts.should_detect(now_mono, motion.moving, self.tracks["active"] > 0, missing)
        plan = RegionPlan.whole_frame()
        if detect and self.regions_on and input_side > 0:
            tracks = self._last.tracks if self._last is not None else ()
            tracked = np.array([t.box for t in tracks], np.float32).reshape(-1, 4)
            # On a still frame (a refresh) the whole frame runs, and crops around the tracked objects beside it,
            # which it may see too small to find again. So it does when a crop left out by max_regions has not
            # looked at a tracked object for refresh_s: each is looked at that often, as the gate promises.
            overdue = any(self._last_ts - t.looked_ts >= self.settings.refresh_s for t in tracks)
            whole = not motion.moving or overdue
            plan = plan_regions(
                motion.regions, tracked, image_bgr.shape[:2], input_side, self.settings.max_regions, whole
            )
            if plan.crops:
                self.crops_run += len(plan.crops)
                self.crop_frames += 1
        return Gate(detect, detect and not motion.moving, (time.perf_counter() - started) * 1e3, plan)

    def after_detect(
        self,
        detections: Detections,
        ts: float,
        frame: int,
        frame_hw: tuple[int, int],
        still: bool,
        plan: RegionPlan | None = None,
    ) -> SceneStep:
        """plan: what the detector looked at (None = the whole frame); a tracked object outside it is not missed."""
        started = time.perf_counter()
        if self._tracker is None:
            presence = self._presence.update(detections, ts, frame)
            return SceneStep((), (), [], presence, None, 0.0)
        self._last_ts = ts
        looked_at = None
        if plan is not None and not plan.whole:
            # A predicted box whose centre left the frame is where nothing can be looked at: it ages as usual.
            looked_at = lambda boxes: plan.covers(boxes) | _outside(boxes, frame_hw)  # noqa: E731
        update = self._tracker.update(detections, ts, still=still, looked_at=looked_at)
        self._last = update
        ids = [t.id for t in update.tracks]
        labels = [self.names.get(t.class_id, str(t.class_id)) for t in update.tracks]
        boxes = np.array([t.box for t in update.tracks], np.float32).reshape(-1, 4)
        seen = [t.last_seen_ts == ts for t in update.tracks]  # the others' boxes are the tracker's predictions
        zoned = self.zones.update(ids, labels, boxes, frame_hw, ts, seen)
        found = [i for i, was_seen in enumerate(seen) if was_seen]  # a crossing is where an object was seen
        crossings = self.lines.update(
            [ids[i] for i in found], [labels[i] for i in found], boxes[found], frame_hw, ts, frame
        )
        objects = self._objects.update(
            update.tracks, update.ended, zoned.zones_of, zoned.entered, frame_hw, ts, frame, zoned.dwell_of
        )
        ended = [t.id for t in update.ended]
        self.lines.forget(ended)
        changed = self.zones.forget(ended) or zoned.changed
        per_detection = tuple(zoned.zones_of.get(i, ()) if i is not None else () for i in update.track_ids)
        return SceneStep(
            track_ids=update.track_ids,
            zones=per_detection,
            objects=objects,
            presence=self._presence.update(_as_detections(update), ts, frame),
            zone_counts=self.zones.counts if changed else None,
            tracking_ms=(time.perf_counter() - started) * 1e3,
            crossings=crossings,
        )

    def expire(self, now: float, frame: int) -> list[PresenceEvent]:
        """Presences unseen for end_after seconds end, also while no frame comes."""
        return self._presence.expire(now, frame)

    def close(self, ts: float, frame: int) -> SceneEnd:
        """`end` for every open object and presence (a clean stop, or a model with other labels)."""
        if self._tracker is not None:
            ended = [t.id for t in self._tracker.close(ts)]
            self.zones.forget(ended)
            self.lines.forget(ended)
        self._last = None
        return SceneEnd(self._objects.close(ts, frame), self._presence.close(ts, frame))


def scene_settings(config: AgentConfig, names: Mapping[int, str]) -> SceneSettings:
    """The scene the config asks for; ConfigError for a zone label the model does not know."""
    if problems := unknown_zone_labels(config.zones, names.values()) + unknown_line_labels(
        config.lines.lines, names.values()
    ):
        raise ConfigError(problems)
    motion, tracking = config.motion, config.tracking
    return SceneSettings(
        motion=MotionSettings(motion.threshold, motion.contour_area, motion.frame_height, motion.lightning_threshold)
        if motion.enabled
        else None,
        refresh_s=motion.refresh_s,
        idle_s=motion.idle_s,
        tracker=TrackerSettings(tracking.min_hits, tracking.max_lost_s, tracking.stationary_s)
        if tracking.enabled
        else None,
        zones=config.zones,
        end_after=config.events.end_after,
        lines=config.lines,
        max_regions=motion.max_regions if motion.regions else 0,
    )


def _outside(boxes: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Per box ((N, 4) pixels): is its centre outside the frame."""
    height, width = frame_hw
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx < 0) | (cx > width) | (cy < 0) | (cy > height)


def _as_detections(update: TrackUpdate) -> Detections:
    if not update.tracks:
        return Detections.empty()
    return Detections(
        np.array([t.box for t in update.tracks], np.float32),
        np.array([t.score for t in update.tracks], np.float32),
        np.array([t.class_id for t in update.tracks], np.int64),
    )

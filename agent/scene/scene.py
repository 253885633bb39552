"""What the frame loop asks of the scene: should the detector look at this frame, and what do its
detections mean (track ids, zones, per-object events, the zone counts, what is present)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from agent.config import AgentConfig, ConfigError
from agent.config.zones import ZoneConfig, unknown_zone_labels
from agent.pipeline.detections import Detections
from agent.scene.motion import DetectionGate, MotionDetector, MotionSettings
from agent.scene.objects import ObjectEvent, ObjectEvents
from agent.scene.tracker import Tracker, TrackerSettings, TrackUpdate
from agent.scene.zones import ZoneTracker


@dataclass(frozen=True)
class SceneSettings:
    """motion: None = the detector runs on every frame. tracker: None = no tracking (and no zones)."""

    motion: MotionSettings | None = field(default_factory=MotionSettings)
    refresh_s: float = 5.0
    idle_s: float = 30.0
    tracker: TrackerSettings | None = field(default_factory=TrackerSettings)
    zones: tuple[ZoneConfig, ...] = ()


@dataclass(frozen=True)
class Gate:
    """detect: run the detector on this frame. still: it runs although nothing moved (a refresh).
    motion_ms: what deciding cost."""

    detect: bool
    still: bool
    motion_ms: float


@dataclass(frozen=True)
class SceneStep:
    """One detector frame's meaning. track_ids and zones run beside the detections; present: the
    confirmed tracks as detections, for per-label presence; zone_counts: set when they changed."""

    track_ids: tuple[str | None, ...]
    zones: tuple[tuple[str, ...], ...]
    objects: list[ObjectEvent]
    present: Detections
    zone_counts: Mapping[str, Mapping[str, int]] | None
    tracking_ms: float


class Scene:
    def __init__(self, settings: SceneSettings, names: Mapping[int, str]) -> None:
        self.settings = settings
        self.names = dict(names)
        self._motion = MotionDetector(settings.motion) if settings.motion is not None else None
        self.gate_counts = DetectionGate(settings.refresh_s, settings.idle_s)
        self._tracker = Tracker(settings.tracker) if settings.tracker is not None else None
        self.zones = ZoneTracker(settings.zones if self._tracker is not None else ())
        self._objects = ObjectEvents(names)
        self._last: TrackUpdate | None = None

    @property
    def tracking(self) -> bool:
        return self._tracker is not None

    @property
    def tracks(self) -> dict[str, int]:
        """For stats: confirmed tracks open, and how many of them stand still."""
        tracks = self._last.tracks if self._last is not None else ()
        return {"active": len(tracks), "stationary": sum(t.stationary for t in tracks)}

    def gate(self, image_bgr: np.ndarray, now_mono: float) -> Gate:
        if self._motion is None:
            self.gate_counts.detected += 1
            return Gate(True, False, 0.0)
        started = time.perf_counter()
        moving = self._motion.update(image_bgr).moving
        missing = self._last is not None and self._last.missing > 0
        detect = self.gate_counts.should_detect(now_mono, moving, self.tracks["active"] > 0, missing)
        return Gate(detect, detect and not moving, (time.perf_counter() - started) * 1e3)

    def after_detect(
        self, detections: Detections, ts: float, frame: int, frame_hw: tuple[int, int], still: bool
    ) -> SceneStep:
        started = time.perf_counter()
        if self._tracker is None:
            return SceneStep((), (), [], detections, None, 0.0)
        update = self._tracker.update(detections, ts, still=still)
        self._last = update
        zoned = self.zones.update(
            [t.id for t in update.tracks],
            [self.names.get(t.class_id, str(t.class_id)) for t in update.tracks],
            np.array([t.box for t in update.tracks], np.float32).reshape(-1, 4),
            frame_hw,
            ts,
        )
        objects = self._objects.update(update.tracks, update.ended, zoned.zones_of, zoned.entered, frame_hw, ts, frame)
        changed = self.zones.forget([t.id for t in update.ended]) or zoned.changed
        per_detection = tuple(zoned.zones_of.get(i, ()) if i is not None else () for i in update.track_ids)
        return SceneStep(
            track_ids=update.track_ids,
            zones=per_detection,
            objects=objects,
            present=_as_detections(update),
            zone_counts=self.zones.counts if changed else None,
            tracking_ms=(time.perf_counter() - started) * 1e3,
        )

    def close(self, ts: float, frame: int) -> list[ObjectEvent]:
        """`end` for every open object (a clean stop, or a model with other labels)."""
        if self._tracker is not None:
            self.zones.forget([t.id for t in self._tracker.close(ts)])
        self._last = None
        return self._objects.close(ts, frame)


def scene_settings(config: AgentConfig, names: Mapping[int, str]) -> SceneSettings | None:
    """The scene the config asks for (None: motion gating and tracking both off); ConfigError for a zone
    label the model does not know."""
    if problems := unknown_zone_labels(config.zones, names.values()):
        raise ConfigError(problems)
    motion, tracking = config.motion, config.tracking
    if not motion.enabled and not tracking.enabled:
        return None
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
    )


def _as_detections(update: TrackUpdate) -> Detections:
    if not update.tracks:
        return Detections.empty()
    return Detections(
        np.array([t.box for t in update.tracks], np.float32),
        np.array([t.score for t in update.tracks], np.float32),
        np.array([t.class_id for t in update.tracks], np.int64),
    )

"""The frame loop: source -> detector -> publishers, until told to stop.

It knows the Publisher interface, not MQTT, and takes every collaborator as
an argument, so tests run it with a real source, model and broker or with a
stdout publisher. Commands from MQTT (settings changes, snapshot requests) reach
it through a CommandInbox and are taken between two frames, on this thread; so is
a newly deployed model (agent/control/deploy/deployer.py), which the loop switches to and
watches for a few frames before the old one is let go.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np

from agent.control.commands import CommandInbox
from agent.control.deploy.deployer import PROBATION_FRAMES, Deployer, ReadyBundle
from agent.control.deploy.probe import check_detections
from agent.control.remote_settings import RuntimeSettings, SettingsChange, SettingsRejected, accepted_payload
from agent.pipeline.detections import Detections
from agent.pipeline.detector import Detector
from agent.pipeline.frames import Frame
from agent.pipeline.results import FrameResult, StageTimings
from agent.pipeline.sequenced import Numbered, SequencedQueue
from agent.pipeline.snapshot import SnapshotSettings, snapshot_jpeg
from agent.pipeline.stats import FrameCounters, StatsWindow
from agent.scene.objects import ObjectEvent
from agent.scene.presence import PresenceEvent, PresenceTracker
from agent.scene.scene import Gate, Scene
from agent.system.board import BoardHealth
from agent.transport import topics
from agent.transport.payloads import (
    detections_payload,
    dumps,
    event_payload,
    object_payload,
    presence_payload,
    stats_payload,
    zones_payload,
)
from agent.transport.publisher import Publisher

log = logging.getLogger("yolo_edge.agent")

READ_TIMEOUT_S = 0.25
MAX_UNSENT_EVENTS = 1000


@dataclass(frozen=True)
class LoopSettings:
    """Times in seconds. max_frames: stop cleanly after this many processed frames (0 = never).

    snapshot: how snapshots are made; None = no snapshots.
    """

    max_frame_age: float = 1.0
    stats_interval: float = 10.0
    end_after: float = 5.0
    detections_qos: int = 0
    publish_empty: bool = False
    max_frames: int = 0
    snapshot: SnapshotSettings | None = None


@dataclass
class _Probation:
    """A deployed model the loop just switched to, and the detector to return to if it fails."""

    ready: ReadyBundle
    previous: Detector
    frames_left: int = PROBATION_FRAMES


class FrameSourceLike(Protocol):
    """What the loop needs from a source (agent/pipeline/sources.py provides it)."""

    ended: bool

    def read(self, timeout: float) -> Frame | None: ...

    def health(self) -> object: ...


class AgentLoop:
    """Runs until `stop` is set, the source ends or max_frames were processed; then ends cleanly.

    runtime: the settings that `set` may change, published retained on `settings`; None = no
    remote settings. inbox: where commands from MQTT wait for the loop; None = no commands.
    deployer: hands over deployed models; None = no deployments.
    """

    def __init__(
        self,
        source: FrameSourceLike,
        detector: Detector,
        publisher: Publisher,
        settings: LoopSettings,
        stop: threading.Event | None = None,
        on_frame: Callable[[FrameResult], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        on_stats: Callable[[dict[str, object]], None] | None = None,
        inbox: CommandInbox | None = None,
        runtime: RuntimeSettings | None = None,
        deployer: Deployer | None = None,
        scene_factory: Callable[[Mapping[int, str]], Scene] | None = None,
    ) -> None:
        self.source = source
        self.detector = detector
        self.publisher = publisher
        self.settings = settings
        self.stop = stop or threading.Event()
        self.on_frame = on_frame
        self.on_idle = on_idle
        self.on_tick = on_tick
        self.on_stats = on_stats
        self.inbox = inbox
        self.runtime = runtime
        self.deployer = deployer
        self.scene_factory = scene_factory
        self.scene = scene_factory(detector.names) if scene_factory is not None else None
        self._probation: _Probation | None = None
        self.tracker = PresenceTracker(detector.names, settings.end_after)
        self.counters = FrameCounters()
        self.window = StatsWindow()
        self.started_mono = time.monotonic()
        self.last_frame_id = 0
        self._last_seen_id = 0
        self.sequenced = SequencedQueue(publisher, MAX_UNSENT_EVENTS)
        self.last_stats: dict[str, object] = {}
        self.board = BoardHealth(refresh_s=settings.stats_interval)
        self._next_frame_mono = 0.0  # max_fps: no frame is read before this time
        # The last processed frame and its detections, for a snapshot asked for while no frame comes:
        # one reference, never a copy or a history.
        self._last_frame: tuple[np.ndarray, Detections, tuple[str | None, ...]] | None = None
        self._snapshot_wanted = False

    def run(self) -> FrameCounters:
        next_stats = time.monotonic() + self.settings.stats_interval
        self._publish_settings()
        self._publish_presence()  # nothing is present yet, whatever a previous run left retained
        self._publish_zones()
        try:
            while not self.stop.is_set():
                if self.on_tick is not None:
                    self.on_tick()  # at least every READ_TIMEOUT_S while the loop is healthy, frames or not
                self._take_commands()
                wait = self._next_frame_mono - time.monotonic()
                if wait > 0:
                    # max_fps: commands, expiry and stats go on while the next frame waits its turn.
                    self.stop.wait(min(wait, READ_TIMEOUT_S))
                    self._publish_events(self.tracker.expire(time.time(), self.last_frame_id))
                elif (frame := self.source.read(READ_TIMEOUT_S)) is None:
                    if self.source.ended:
                        log.info("source ended after %d frames", self.counters.processed)
                        break
                    self._publish_events(self.tracker.expire(time.time(), self.last_frame_id))
                    if self.on_idle is not None:
                        self.on_idle()
                else:
                    self._process(frame)
                    if self.settings.max_frames and self.counters.processed >= self.settings.max_frames:
                        break
                if time.monotonic() >= next_stats:
                    self.publish_stats()
                    next_stats = time.monotonic() + self.settings.stats_interval
        finally:
            if self.scene is not None:
                self._publish_objects(self.scene.close(time.time(), self.last_frame_id))
                self._publish_zones()
            self._publish_events(self.tracker.close(time.time(), self.last_frame_id))
            self.publish_stats(final=True)
        return self.counters

    def _process(self, frame: Frame) -> None:
        picked_up = time.monotonic()
        # Live sources keep only the newest frame; the ids they skipped were dropped.
        if frame.frame_id > self._last_seen_id + 1 and self._last_seen_id:
            self.counters.dropped += frame.frame_id - self._last_seen_id - 1
        self._last_seen_id = frame.frame_id
        age = picked_up - frame.captured_mono
        if age > self.settings.max_frame_age:
            # A frame that waited this long describes the past: count it, never process it late.
            self.counters.stale += 1
            return
        if self.runtime is not None and self.runtime.max_fps:
            self._next_frame_mono = picked_up + 1.0 / self.runtime.max_fps
        gate = self.scene.gate(frame.image, picked_up) if self.scene is not None else Gate(True, False, 0.0)
        if not gate.detect:
            # Nothing moved: no detector, and no evidence that anything left (tracks and presences wait).
            self.counters.processed += 1
            self.window.add_skipped(gate.motion_ms)
            return
        detections, pre_ms, inf_ms, post_ms = self._detect(frame.image)
        if self.deployer is not None:
            self.deployer.offer_frame(frame.image)
        self.last_frame_id = frame.frame_id
        hw = (frame.height, frame.width)
        step = (
            self.scene.after_detect(detections, frame.captured_at, frame.frame_id, hw, gate.still)
            if self.scene is not None
            else None
        )
        timings = StageTimings(
            capture=age * 1e3,
            preprocess=pre_ms,
            inference=inf_ms,
            postprocess=post_ms,
            motion=gate.motion_ms,
            tracking=step.tracking_ms if step is not None else 0.0,
        )
        track_ids, zones = (step.track_ids, step.zones) if step is not None else ((), ())
        result = FrameResult(frame.frame_id, frame.captured_at, hw, detections, timings, track_ids, zones)
        publish_start = time.perf_counter()
        publishing = self.runtime is None or self.runtime.publish_detections
        if publishing and (len(detections) or self.settings.publish_empty):
            payload = detections_payload(result, self.detector.names, self.detector.identity.as_dict())
            self.publisher.publish(topics.DETECTIONS, payload, qos=self.settings.detections_qos)
        # With tracking, a label is present while it has a confirmed track: one missed detection ends nothing.
        present = step.present if step is not None else detections
        events = self.tracker.update(present, frame.captured_at, frame.frame_id)
        if step is not None:
            self._publish_objects(step.objects)
            if step.zone_counts is not None:
                self._publish_zones()
        self._publish_events(events)
        if self.settings.snapshot is not None:
            self._last_frame = (frame.image, detections, track_ids)
            # One snapshot per frame however many labels started in it; it is retained, so the newest wins.
            if self._snapshot_wanted or any(event.type == "start" for event in events):
                self._publish_snapshot(frame.image, detections, track_ids)
        publish_ms = (time.perf_counter() - publish_start) * 1e3
        final = dataclasses.replace(timings, publish=publish_ms)
        self.window.add(final)
        self.counters.processed += 1
        if self.on_frame is not None:
            self.on_frame(FrameResult(result.frame_id, result.captured_at, result.source_hw, detections, final))

    def _publish_events(self, events: list[PresenceEvent]) -> None:
        """Presence events in order through the outbox (held in memory while it cannot store them)."""
        if events:
            self._publish_presence(events[-1].ts)
        self.sequenced.send([Numbered(topics.EVENTS, partial(event_payload, event)) for event in events])

    def _publish_objects(self, objects: list[ObjectEvent]) -> None:
        self.sequenced.send([Numbered(topics.OBJECTS, partial(object_payload, event)) for event in objects])

    def _publish_zones(self) -> None:
        """Retained `zones`: every configured zone's counts, zeros included."""
        if self.scene is not None and self.scene.zones.zones:
            polygons = {zone.name: zone.polygon for zone in self.scene.zones.zones}
            payload = zones_payload(self.scene.zones.counts, time.time(), polygons)
            self.publisher.publish(topics.ZONES, payload, retain=True)

    def _publish_presence(self, ts: float | None = None) -> None:
        """Retained `presence`: what is present now, for dashboards that join late (Home Assistant's sensors)."""
        payload = presence_payload(self.tracker.counts, time.time() if ts is None else ts)
        self.publisher.publish(topics.PRESENCE, payload, qos=0, retain=True)

    def _publish_snapshot(self, image: np.ndarray, detections: Detections, track_ids: tuple[str | None, ...]) -> None:
        assert self.settings.snapshot is not None
        outlines = [(z.name, z.polygon) for z in self.scene.zones.zones] if self.scene is not None else []
        jpeg = snapshot_jpeg(image, detections, self.detector.names, self.settings.snapshot, track_ids, outlines)
        self.publisher.publish(topics.SNAPSHOT, jpeg, qos=0, retain=True)
        self._snapshot_wanted = False

    def _publish_settings(self) -> None:
        if self.runtime is not None:
            self.publisher.publish(topics.SETTINGS, dumps(self.runtime.as_dict()), qos=0, retain=True)

    def _take_commands(self) -> None:
        """Apply what arrived over MQTT since the last frame (this thread is the only one that touches the detector)."""
        if self.deployer is not None and (ready := self.deployer.take_ready()) is not None:
            self._switch(ready)
        if self.inbox is None:
            return
        # While a deployed model is on probation, changes wait: a rollback must find the old model as it was.
        if self.runtime is not None and self._probation is None:
            for change in self.inbox.take_changes():
                self._apply(change)
        if self.settings.snapshot is not None and self.inbox.take_snapshot_request():
            if self._last_frame is not None:
                self._publish_snapshot(*self._last_frame)
            else:
                self._snapshot_wanted = True  # no frame yet: the first one answers

    def _apply(self, change: SettingsChange) -> None:
        assert self.runtime is not None and self.inbox is not None
        runtime = self.runtime.changed(change)
        # Checked when it arrived, but against the model of that moment: a deployment may have come since.
        if unknown := sorted({*runtime.classes, *runtime.class_confidence} - set(self.detector.names.values())):
            keys = [key for key in ("classes", "class_confidence") if key in change.values]
            problem = f"labels the model now running does not know: {', '.join(unknown)}"
            self.inbox.reject(SettingsRejected([problem], keys, change.request_id), change.reply_to)
            return
        if runtime.max_fps != self.runtime.max_fps:
            self._next_frame_mono = 0.0  # a new rate starts with the next frame, not after the old wait
        self.detector.apply_settings(runtime.postprocess(self.detector.names, self.detector.settings.max_detections))
        self.runtime = runtime
        log.info("settings changed: %s", dumps(change.as_dict()).decode())
        self._publish_settings()
        self.inbox.answer(dumps(accepted_payload(time.time(), change, runtime)), change.reply_to)

    # -- deployed models --------------------------------------------------------------------------

    def _detect(self, image: np.ndarray) -> tuple[Detections, float, float, float]:
        """detect() with the detector in use; during a probation a failure returns to the previous one."""
        if self._probation is None:
            return self.detector.detect(image)
        try:
            result = self.detector.detect(image)
            check_detections(result[0], self.detector.names)
        except Exception as error:  # an untrusted model must not stop the agent: the old one takes over
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self._roll_back(f"the new model failed in the frame loop: {first_line[:300]}")
            return self.detector.detect(image)
        self._probation.frames_left -= 1
        if self._probation.frames_left <= 0:
            ready, self._probation = self._probation.ready, None
            assert self.deployer is not None
            self.deployer.confirmed(ready)  # the previous detector is let go here
        return result

    def _switch(self, ready: ReadyBundle) -> None:
        """Run the deployed model from the next frame on, with the runtime settings in force."""
        assert self.deployer is not None
        new = ready.detector
        if self.runtime is not None:
            named = {*self.runtime.classes, *self.runtime.class_confidence}
            if unknown := sorted(named - set(new.names.values())):
                self.deployer.refused(
                    ready,
                    f"the settings in force name labels the new model does not know ({', '.join(unknown)}); "
                    'clear them with set {"classes": [], "class_confidence": {}} and deploy again',
                )
                return
            new.apply_settings(self.runtime.postprocess(new.names, new.settings.max_detections))
        self._probation = _Probation(ready, self.detector)
        self._use(new)
        self.deployer.switched(ready)

    def _roll_back(self, reason: str) -> None:
        assert self._probation is not None and self.deployer is not None
        probation, self._probation = self._probation, None
        self._use(probation.previous)
        self.deployer.rolled_back(probation.ready, reason, probation.previous.identity)

    def _use(self, detector: Detector) -> None:
        """Make `detector` the one in use; presences of labels it may not know are ended first."""
        if detector.names != self.detector.names:
            if self.scene is not None and self.scene_factory is not None:
                self._publish_objects(self.scene.close(time.time(), self.last_frame_id))
                self.scene = self.scene_factory(detector.names)
                self._publish_zones()
            self._publish_events(self.tracker.close(time.time(), self.last_frame_id))
            self.tracker = PresenceTracker(detector.names, self.settings.end_after)
            self._last_frame = None  # its detections carry the other model's class ids
        self.detector = detector
        if self.inbox is not None:
            self.inbox.use_names(detector.names)

    def publish_stats(self, final: bool = False) -> None:
        """Publish retained `stats`; final: the run's last, which keeps the last figures that covered frames."""
        scene = self.scene
        stats = stats_payload(
            figures=self.window.summary(final=final),
            frames={
                "processed": self.counters.processed,
                "dropped": self.counters.dropped,
                "stale": self.counters.stale,
                **self._scene_frames(),
            },
            tracks=scene.tracks if scene is not None and scene.tracking else None,
            events={"held": self.sequenced.held, "lost": self.sequenced.lost},
            board=self.board.snapshot(),
            uptime_s=time.monotonic() - self.started_mono,
            model=self.detector.identity.as_dict(),
            transport=self.publisher.health(),
            source_health=self.source.health(),
        )
        self.last_stats = stats
        self.publisher.publish(topics.STATS, dumps(stats), qos=0, retain=True)
        if self.on_stats is not None:
            self.on_stats(stats)

    def _scene_frames(self) -> dict[str, int]:
        if self.scene is None:
            return {}
        return {"detected": self.scene.gate_counts.detected, "motion_skipped": self.scene.gate_counts.skipped}

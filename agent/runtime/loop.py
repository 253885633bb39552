"""The frame loop: a hallway between the packages, asking each for one thing per frame.

source (a frame) -> scene (should the detector look?) -> models (the detector in use, a deployed one
on probation) -> scene (what the detections mean) -> reporter (messages), until told to stop. Every
collaborator is passed in, so tests run it with fakes, and it builds nothing that reads the system.
Commands from MQTT (settings changes, snapshot requests) and a newly deployed model are taken between
two frames, on this thread, the only one that touches the detector.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.control.commands import CommandInbox
from agent.control.deploy.switchover import ModelSwitch
from agent.control.remote_settings import RuntimeSettings, SettingsChange, SettingsRejected, accepted_payload
from agent.pipeline.detector import Detector
from agent.pipeline.frames import Frame
from agent.pipeline.results import FrameResult, StageTimings
from agent.pipeline.stats import FrameCounters, StatsWindow
from agent.runtime.reporter import Reporter
from agent.scene.scene import Scene
from agent.transport.encoding import dumps
from agent.transport.stats_schema import Stats

log = logging.getLogger("yolo_edge.agent")

READ_TIMEOUT_S = 0.25


@dataclass(frozen=True)
class LoopSettings:
    """Times in seconds. max_frames: stop cleanly after this many processed frames (0 = never)."""

    max_frame_age: float = 1.0
    stats_interval: float = 10.0
    max_frames: int = 0


@dataclass(frozen=True)
class LoopHooks:
    """What the service manager is told. on_tick: at least every READ_TIMEOUT_S while the loop is healthy,
    frames or not (the watchdog). on_frame: each detector frame's result. on_stats: each stats message."""

    on_tick: Callable[[], None] | None = None
    on_frame: Callable[[FrameResult], None] | None = None
    on_stats: Callable[[Stats], None] | None = None


@dataclass(frozen=True)
class RemoteControl:
    """The runtime settings `set` may change (published retained on `settings`), and the inbox where
    commands from MQTT wait; inbox None = no commands come (a dry run)."""

    runtime: RuntimeSettings
    inbox: CommandInbox | None = None


class FrameSourceLike(Protocol):
    """What the loop needs from a source (agent/pipeline/sources.py provides it)."""

    ended: bool

    def read(self, timeout: float) -> Frame | None: ...

    def health(self) -> object: ...


class AgentLoop:
    """Runs until `stop` is set, the source ends or max_frames were processed; then ends cleanly."""

    def __init__(
        self,
        source: FrameSourceLike,
        models: ModelSwitch,
        scene: Scene,
        reporter: Reporter,
        settings: LoopSettings,
        control: RemoteControl | None = None,
        hooks: LoopHooks = LoopHooks(),
        stop: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.models = models
        self.scene = scene
        self.reporter = reporter
        self.settings = settings
        self.control = control
        self.runtime = control.runtime if control is not None else None
        self.hooks = hooks
        self.stop = stop or threading.Event()
        self._detector = models.detector  # the one the scene and the inbox were made for
        self.counters = FrameCounters()
        self.window = StatsWindow()
        self.started_mono = time.monotonic()
        self.last_frame_id = 0
        self._last_seen_id = 0
        self._next_frame_mono = 0.0  # max_fps: no frame is read before this time

    @property
    def detector(self) -> Detector:
        return self.models.detector

    def run(self) -> FrameCounters:
        next_stats = time.monotonic() + self.settings.stats_interval
        if self.runtime is not None:
            self.reporter.settings_in_force(self.runtime.as_dict())
        self.reporter.presence(self.scene.present)  # nothing is present yet, whatever a previous run left
        self.reporter.zones(self.scene)
        self.reporter.lines(self.scene, changed=self.scene.lines.reset_if_due(time.time()))
        try:
            while not self.stop.is_set():
                if self.hooks.on_tick is not None:
                    self.hooks.on_tick()
                self._take_commands()
                wait = self._next_frame_mono - time.monotonic()
                if wait > 0:
                    # max_fps: commands, expiry and stats go on while the next frame waits its turn.
                    self.stop.wait(min(wait, READ_TIMEOUT_S))
                    self._expire()
                elif (frame := self.source.read(READ_TIMEOUT_S)) is None:
                    if self.source.ended:
                        log.info("source ended after %d frames", self.counters.processed)
                        break
                    self._expire()
                else:
                    self._process(frame)
                    if self.settings.max_frames and self.counters.processed >= self.settings.max_frames:
                        break
                if time.monotonic() >= next_stats:
                    self.publish_stats()
                    next_stats = time.monotonic() + self.settings.stats_interval
        finally:
            self._close_scene()
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
        gate = self.scene.gate(frame.image, picked_up, self.models.detector.input_side)
        if not gate.detect:
            # Nothing moved: no detector, and no evidence that anything left (tracks and presences wait).
            self.counters.processed += 1
            self.window.add_skipped(gate.motion_ms)
            return
        plan = gate.plan if gate.plan.crops else None
        detections, pre_ms, inf_ms, post_ms = self.models.detect(frame.image, plan)
        self._follow_models()  # a deployed model that failed just now was rolled back
        self.last_frame_id = frame.frame_id
        hw = (frame.height, frame.width)
        step = self.scene.after_detect(detections, frame.captured_at, frame.frame_id, hw, gate.still, plan)
        timings = StageTimings(
            capture=age * 1e3,
            preprocess=pre_ms,
            inference=inf_ms,
            postprocess=post_ms,
            motion=gate.motion_ms,
            tracking=step.tracking_ms,
        )
        crops = tuple(crop.box for crop in gate.plan.crops)
        result = FrameResult(
            frame.frame_id, frame.captured_at, hw, detections, timings, step.track_ids, step.zones, crops
        )
        publish_start = time.perf_counter()
        detector = self.models.detector
        detections_on = self.runtime is None or self.runtime.publish_detections
        self.reporter.frame(result, detector.names, detector.identity.as_dict(), detections_on)
        self.reporter.objects(step.objects, step.crossings)
        if step.crossings:
            self.reporter.lines(self.scene, changed=True)
        if step.zone_counts is not None:
            self.reporter.zones(self.scene)
        self.reporter.presence_events(step.presence, self.scene.present)
        started = any(event.type == "start" for event in step.presence)
        self.reporter.shown(frame.image, result, detector.names, started, self.scene)
        timings = dataclasses.replace(timings, publish=(time.perf_counter() - publish_start) * 1e3)
        self.window.add(timings)
        self.counters.processed += 1
        if self.hooks.on_frame is not None:
            self.hooks.on_frame(dataclasses.replace(result, timings=timings))

    def _expire(self) -> None:
        self.reporter.presence_events(self.scene.expire(time.time(), self.last_frame_id), self.scene.present)

    def _close_scene(self) -> None:
        """End every open object and presence (a clean stop, or a model with other labels)."""
        ended = self.scene.close(time.time(), self.last_frame_id)
        self.reporter.objects(ended.objects)
        self.reporter.zones(self.scene)
        self.reporter.presence_events(ended.presence, self.scene.present)

    def _take_commands(self) -> None:
        """Apply what arrived over MQTT since the last frame (this thread is the only one that touches the detector)."""
        if self.models.take_ready(self.runtime):
            self._follow_models()
        inbox = self.control.inbox if self.control is not None else None
        if inbox is None:
            return
        # While a deployed model is on probation, changes wait: a rollback must find the old model as it was.
        if self.runtime is not None and not self.models.on_probation:
            for change in inbox.take_changes():
                self._apply(change)
        if inbox.take_snapshot_request():
            self.reporter.snapshot_requested(self.scene)

    def _apply(self, change: SettingsChange) -> None:
        assert self.runtime is not None and self.control is not None and self.control.inbox is not None
        inbox, detector = self.control.inbox, self.models.detector
        runtime = self.runtime.changed(change)
        # Checked when it arrived, but against the model of that moment: a deployment may have come since.
        if unknown := sorted({*runtime.classes, *runtime.class_confidence} - set(detector.names.values())):
            keys = [key for key in ("classes", "class_confidence") if key in change.values]
            problem = f"labels the model now running does not know: {', '.join(unknown)}"
            inbox.reject(SettingsRejected([problem], keys, change.request_id), change.reply_to)
            return
        if runtime.max_fps != self.runtime.max_fps:
            self._next_frame_mono = 0.0  # a new rate starts with the next frame, not after the old wait
        detector.apply_settings(runtime.postprocess(detector.names, detector.settings.max_detections))
        self.runtime = runtime
        log.info("settings changed: %s", dumps(change.as_dict()).decode())
        self.reporter.settings_in_force(runtime.as_dict())
        inbox.answer(dumps(accepted_payload(time.time(), change, runtime)), change.reply_to)

    def _follow_models(self) -> None:
        """The detector in use changed (a switch or a roll-back): a model with other labels gets a new scene,
        after every object and presence of the old one ended."""
        detector = self.models.detector
        if detector is self._detector:
            return
        if detector.names != self._detector.names:
            self._close_scene()
            self.scene = self.scene.renamed(detector.names)
            self.reporter.forget_frame()
        self._detector = detector
        if self.control is not None and self.control.inbox is not None:
            self.control.inbox.use_names(detector.names)

    def publish_stats(self, final: bool = False) -> None:
        """Publish retained `stats`, and with them `lines` (a daily reset shows at midnight) and `zones` (their
        dwell times grow between changes); final: the run's last, which keeps the last figures that covered frames."""
        self.reporter.lines(self.scene, changed=self.scene.lines.reset_if_due(time.time()))
        if any(n for labels in self.scene.zones.counts.values() for n in labels.values()):
            self.reporter.zones(self.scene)
        stats = self.reporter.stats(
            figures=self.window.summary(final=final),
            counters=self.counters,
            scene=self.scene,
            uptime_s=time.monotonic() - self.started_mono,
            model=self.models.detector.identity.as_dict(),
            source_health=self.source.health(),
        )
        if self.hooks.on_stats is not None:
            self.hooks.on_stats(stats)

"""The frame loop: source -> detector -> publishers, until told to stop.

It knows the Publisher interface, not MQTT, and takes every collaborator as
an argument, so tests run it with a real source, model and broker or with a
stdout publisher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.board import board_health
from agent.detector import Detector
from agent.events import PresenceEvent, PresenceTracker
from agent.frames import Frame
from agent.outbox import OutboxError
from agent.payloads import detections_payload, dumps, event_payload
from agent.publisher import Publisher
from agent.results import FrameResult, StageTimings
from agent.stats import FrameCounters, StatsWindow

log = logging.getLogger("yolo_edge.agent")

READ_TIMEOUT_S = 0.25
MAX_UNSENT_EVENTS = 1000


@dataclass(frozen=True)
class LoopSettings:
    """Times in seconds. max_frames: stop cleanly after this many processed frames (0 = never)."""

    max_frame_age: float = 1.0
    stats_interval: float = 10.0
    end_after: float = 5.0
    detections_qos: int = 0
    publish_empty: bool = False
    max_frames: int = 0


class FrameSourceLike(Protocol):
    """What the loop needs from a source (agent/sources.py provides it)."""

    ended: bool

    def read(self, timeout: float) -> Frame | None: ...

    def health(self) -> object: ...


class AgentLoop:
    """Runs until `stop` is set, the source ends or max_frames were processed; then ends cleanly."""

    def __init__(
        self,
        source: FrameSourceLike,
        detector: Detector,
        publisher: Publisher,
        settings: LoopSettings,
        stop: threading.Event | None = None,
        on_frame: Callable[[FrameResult], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        on_stats: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self.source = source
        self.detector = detector
        self.publisher = publisher
        self.settings = settings
        self.stop = stop or threading.Event()
        self.on_frame = on_frame
        self.on_idle = on_idle
        self.on_stats = on_stats
        self.tracker = PresenceTracker(detector.names, settings.end_after)
        self.counters = FrameCounters()
        self.window = StatsWindow()
        self.started_mono = time.monotonic()
        self.last_frame_id = 0
        self._last_seen_id = 0
        self._unsent: list[PresenceEvent] = []
        self._outbox_failing = False
        self.last_stats: dict[str, object] = {}

    def run(self) -> FrameCounters:
        next_stats = time.monotonic() + self.settings.stats_interval
        try:
            while not self.stop.is_set():
                frame = self.source.read(READ_TIMEOUT_S)
                if frame is None:
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
            self._publish_events(self.tracker.close(time.time(), self.last_frame_id))
            self.publish_stats()
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
        detections, pre_ms, inf_ms, post_ms = self.detector.detect(frame.image)
        self.last_frame_id = frame.frame_id
        timings = StageTimings(capture=age * 1e3, preprocess=pre_ms, inference=inf_ms, postprocess=post_ms)
        result = FrameResult(frame.frame_id, frame.captured_at, (frame.height, frame.width), detections, timings)
        publish_start = time.perf_counter()
        if len(detections) or self.settings.publish_empty:
            payload = detections_payload(result, self.detector.names, self.detector.identity.as_dict())
            self.publisher.publish("detections", payload, qos=self.settings.detections_qos)
        self._publish_events(self.tracker.update(detections, frame.captured_at, frame.frame_id))
        publish_ms = (time.perf_counter() - publish_start) * 1e3
        final = StageTimings(timings.capture, pre_ms, inf_ms, post_ms, publish_ms)
        self.window.add(final)
        self.counters.processed += 1
        if self.on_frame is not None:
            self.on_frame(FrameResult(result.frame_id, result.captured_at, result.source_hw, detections, final))

    def _publish_events(self, events: list[PresenceEvent]) -> None:
        """Hand events to the publisher in order; keep them in memory while its outbox cannot store them.

        A full or read-only disk must not stop detection nor lose an event
        silently: the backlog is retried on the next frame, bounded, and counted.
        """
        self._unsent.extend(events)
        while self._unsent:
            event = self._unsent[0]
            try:
                self.publisher.publish_sequenced("events", lambda seq, e=event: event_payload(e, seq), qos=1)
            except OutboxError as error:
                if not self._outbox_failing:
                    log.warning("events held in memory: %s", error)
                    self._outbox_failing = True
                overflow = len(self._unsent) - MAX_UNSENT_EVENTS
                if overflow > 0:
                    del self._unsent[:overflow]
                    self.counters.events_lost += overflow
                return
            self._unsent.pop(0)
            if self._outbox_failing:
                log.info("outbox writable again; held events sent")
                self._outbox_failing = False

    def publish_stats(self) -> None:
        transport = self.publisher.health()
        source_health = self.source.health()
        stats = {
            "ts": round(time.time(), 3),
            **self.window.summary(),
            "frames": {
                "processed": self.counters.processed,
                "dropped": self.counters.dropped,
                "stale": self.counters.stale,
            },
            "events": {"held": len(self._unsent), "lost": self.counters.events_lost},
            **board_health(),
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "model": self.detector.identity.as_dict(),
            "mqtt": {
                "connected": transport.connected,
                "outbox_pending": transport.outbox_pending,
                "outbox_dropped": transport.outbox_dropped,
                "reconnects": transport.reconnects,
                **transport.extra,
            },
            "source": _source_summary(source_health),
        }
        self.last_stats = stats
        self.publisher.publish("stats", dumps(stats), qos=0, retain=True)
        if self.on_stats is not None:
            self.on_stats(stats)


def _source_summary(health: object) -> dict[str, object]:
    fields = ("kind", "connected", "frames_read", "frames_invalid", "reopen_count", "last_error")
    return {name: getattr(health, name) for name in fields if getattr(health, name, None) is not None}

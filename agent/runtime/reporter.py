"""What the agent sees, as messages: the frame loop hands it results and scene events, it publishes.

It knows the topics and the message bodies (agent/runtime/messages.py), and the Publisher interface,
not MQTT. Numbered messages (objects, events) go through a SequencedQueue, which holds them in memory
while the outbox cannot store them. Snapshots are made here too: the newest frame is kept (one
reference, never a copy) so that a request arriving while no frame comes can still be answered.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np

from agent.pipeline.detections import Detections
from agent.pipeline.results import FrameResult
from agent.pipeline.snapshot import SnapshotSettings, snapshot_jpegs
from agent.pipeline.stats import FrameCounters
from agent.runtime.line_store import LineStore
from agent.runtime.messages import (
    cross_payload,
    detections_payload,
    event_payload,
    lines_payload,
    object_payload,
    presence_payload,
    stats_message,
    zones_payload,
)
from agent.runtime.sequenced import Numbered, SequencedQueue
from agent.scene.lines import LineCrossing
from agent.scene.objects import ObjectEvent
from agent.scene.presence import PresenceEvent
from agent.scene.scene import Scene
from agent.system.board import BoardHealth
from agent.transport import stats_schema, topics
from agent.transport.encoding import dumps
from agent.transport.publisher import Publisher
from agent.transport.stats_schema import Stats


@dataclass(frozen=True)
class ReportSettings:
    """detections_qos: QoS of `detections`. publish_empty: also frames without detections.
    snapshot: how snapshots are made; None = no snapshots."""

    detections_qos: int = 0
    publish_empty: bool = False
    snapshot: SnapshotSettings | None = None


@dataclass(frozen=True)
class _Shown:
    """The newest detector frame, as a snapshot would draw it."""

    image: np.ndarray
    detections: Detections
    names: Mapping[int, str]
    track_ids: tuple[str | None, ...]
    crops: tuple[tuple[int, int, int, int], ...]


class Reporter:
    """board: the board's health for stats (temperature, throttling, memory). line_store: where line counts
    are kept across restarts; None = not kept."""

    def __init__(
        self, publisher: Publisher, settings: ReportSettings, board: BoardHealth, line_store: LineStore | None = None
    ) -> None:
        self.publisher = publisher
        self.settings = settings
        self.board = board
        self.line_store = line_store
        self.sequenced = SequencedQueue(publisher)
        self._shown: _Shown | None = None
        self._snapshot_wanted = False

    def frame(
        self, result: FrameResult, names: Mapping[int, str], model: Mapping[str, str], detections_on: bool
    ) -> None:
        """`detections` of one detector frame (if it has any, or empty ones are asked for)."""
        if detections_on and (len(result.detections) or self.settings.publish_empty):
            payload = detections_payload(result, names, model)
            self.publisher.publish(topics.DETECTIONS, payload, qos=self.settings.detections_qos)

    def objects(self, events: list[ObjectEvent], crossings: list[LineCrossing] | None = None) -> None:
        """`objects` messages in order: the frame's new / update / end, then its line crossings."""
        messages = [Numbered(topics.OBJECTS, partial(object_payload, event)) for event in events]
        messages += [Numbered(topics.OBJECTS, partial(cross_payload, crossing)) for crossing in crossings or ()]
        self.sequenced.send(messages)

    def lines(self, scene: Scene, changed: bool) -> None:
        """Retained `lines` (nothing without lines); changed: the counts changed, so they are saved too."""
        counter = scene.lines
        if not counter.lines:
            return
        if changed and self.line_store is not None:
            self.line_store.save(counter.counts)
        points = {line.name: line.points for line in counter.lines}
        payload = lines_payload(counter.snapshot(), counter.counts.since, time.time(), points)
        self.publisher.publish(topics.LINES, payload, qos=0, retain=True)

    def presence_events(self, events: list[PresenceEvent], present: Mapping[str, int]) -> None:
        """Per-label events in order through the outbox, the retained `presence` first when any came."""
        if events:
            self.presence(present, events[-1].ts)
        self.sequenced.send([Numbered(topics.EVENTS, partial(event_payload, event)) for event in events])

    def presence(self, present: Mapping[str, int], ts: float | None = None) -> None:
        """Retained `presence`: what is present now, for dashboards that join late (Home Assistant's sensors)."""
        payload = presence_payload(present, time.time() if ts is None else ts)
        self.publisher.publish(topics.PRESENCE, payload, qos=0, retain=True)

    def zones(self, scene: Scene) -> None:
        """Retained `zones`: every configured zone's counts, zeros included (nothing without zones)."""
        if scene.zones.zones:
            polygons = {zone.name: zone.polygon for zone in scene.zones.zones}
            payload = zones_payload(scene.zones.counts, time.time(), polygons, scene.zones.longest_dwell())
            self.publisher.publish(topics.ZONES, payload, retain=True)

    def settings_in_force(self, settings: Mapping[str, object]) -> None:
        """Retained `settings`: the runtime settings `set` may change, as they are now."""
        self.publisher.publish(topics.SETTINGS, dumps(dict(settings)), qos=0, retain=True)

    # -- snapshots --------------------------------------------------------------------------------

    def shown(
        self,
        image: np.ndarray,
        result: FrameResult,
        names: Mapping[int, str],
        started: bool,
        scene: Scene,
    ) -> None:
        """A detector frame: kept for snapshot requests; one snapshot when a label started in it or one was
        asked for before any frame came (it is retained, so the newest wins)."""
        if self.settings.snapshot is None:
            return
        self._shown = _Shown(image, result.detections, names, result.track_ids, result.crops)
        if self._snapshot_wanted or started:
            self._snapshot(scene)

    def snapshot_requested(self, scene: Scene) -> None:
        """`snapshot/request`: the newest frame now, or the first one to come."""
        if self.settings.snapshot is None:
            return
        if self._shown is not None:
            self._snapshot(scene)
        else:
            self._snapshot_wanted = True

    def forget_frame(self) -> None:
        """The kept frame's detections carry another model's class ids: no snapshot may draw them."""
        self._shown = None

    def _snapshot(self, scene: Scene) -> None:
        assert self.settings.snapshot is not None and self._shown is not None
        shown = self._shown
        outlines = [(zone.name, zone.polygon) for zone in scene.zones.zones]
        jpegs = snapshot_jpegs(
            shown.image,
            shown.detections,
            dict(shown.names),
            self.settings.snapshot,
            shown.track_ids,
            outlines,
            shown.crops,
        )
        # The drawn one is the picture of the moment (Home Assistant's image); the clean one is the
        # background a page draws its own live boxes on, so no box of this moment stays under them.
        self.publisher.publish(topics.SNAPSHOT, jpegs.drawn, qos=0, retain=True)
        self.publisher.publish(topics.SNAPSHOT_CLEAN, jpegs.clean, qos=0, retain=True)
        self._snapshot_wanted = False

    # -- stats ------------------------------------------------------------------------------------

    def stats(
        self,
        figures: Mapping[str, object],
        counters: FrameCounters,
        scene: Scene,
        uptime_s: float,
        model: Mapping[str, str],
        source_health: object,
    ) -> Stats:
        """Publish the retained `stats` and return it. figures: the stats window's summary (fps, latency_ms)."""
        stats = stats_message(
            ts=time.time(),
            figures=figures,
            frames={
                "processed": counters.processed,
                "dropped": counters.dropped,
                "stale": counters.stale,
                **scene.frame_counts,
            },
            tracks=scene.tracks if scene.tracking else None,
            events={"held": self.sequenced.held, "lost": self.sequenced.lost},
            board=self.board.snapshot(),
            uptime_s=uptime_s,
            model=model,
            transport=self.publisher.health(),
            source_health=source_health,
        )
        self.publisher.publish(topics.STATS, stats_schema.encode(stats), qos=0, retain=True)
        return stats

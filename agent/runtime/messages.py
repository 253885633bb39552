"""The bodies of the messages the agent publishes about what it sees (docs/topics.md): one frame's
detections, per-object and per-label events, zone counts, presence and stats. Times in Unix seconds,
boxes normalized to 0..1 of the source frame; encoded by transport's `dumps`. Stats are a typed value
whose fields agent/transport/stats_schema.py describes, for the fleet's readers as for us."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from agent.pipeline.results import FrameResult
from agent.scene.lines import LineCrossing
from agent.scene.objects import ObjectEvent
from agent.scene.presence import PresenceEvent
from agent.transport import stats_schema
from agent.transport.encoding import dumps
from agent.transport.publisher import PublisherHealth
from agent.transport.stats_schema import (
    EventCounts,
    FrameCounts,
    ModelIdentity,
    MqttFigures,
    SourceFigures,
    Stats,
    TrackCounts,
)


def detections_payload(result: FrameResult, names: Mapping[int, str], model: Mapping[str, str]) -> bytes:
    """One frame: boxes as [x1, y1, x2, y2] in 0..1 of the source frame."""
    height, width = result.source_hw
    detections = result.detections
    # float64 before rounding: rounded float32 values print as 0.16879999637...
    scale = np.array([width, height, width, height], np.float64)
    boxes = np.round(detections.boxes_xyxy.astype(np.float64) / scale, 4)
    n = len(detections)
    track_ids = result.track_ids or (None,) * n
    zones = result.zones or ((),) * n
    items = [
        {
            "label": names.get(int(class_id), str(int(class_id))),
            "class_id": int(class_id),
            "confidence": round(float(score), 4),
            "box": box.tolist(),
            "track_id": track_id,
            "zones": list(in_zones),
        }
        for box, score, class_id, track_id, in_zones in zip(
            boxes, detections.scores, detections.class_ids, track_ids, zones, strict=True
        )
    ]
    timings = result.timings.as_dict()
    timings.pop("publish")  # not known until this very message is out
    return dumps(
        {
            "frame": result.frame_id,
            "ts": round(result.captured_at, 3),
            "source": {"width": width, "height": height},
            "model": dict(model),
            "latency_ms": timings,
            "detections": items,
        }
    )


def event_payload(event: PresenceEvent, seq: int) -> bytes:
    return dumps(
        {
            "seq": seq,
            "type": event.type,
            "label": event.label,
            "count": event.count,
            "max_confidence": event.max_confidence,
            "ts": round(event.ts, 3),
            "frame": event.frame,
        }
    )


def object_payload(event: ObjectEvent, seq: int) -> bytes:
    """One `objects` message: a tracked object's new / update / end."""
    return dumps(
        {
            "seq": seq,
            "type": event.type,
            "id": event.id,
            "label": event.label,
            "score": event.score,
            "top_score": event.top_score,
            "box": list(event.box),
            "zones": list(event.zones),
            "entered_zones": list(event.entered_zones),
            "stationary": event.stationary,
            "start_ts": event.start_ts,
            "end_ts": event.end_ts,
            "ts": round(event.ts, 3),
            "frame": event.frame,
            "dwell_s": dict(event.dwell_s),
        }
    )


def cross_payload(crossing: LineCrossing, seq: int) -> bytes:
    """One `cross` message of the `objects` topic: a tracked object crossed a counting line."""
    return dumps(
        {
            "seq": seq,
            "type": "cross",
            "id": crossing.id,
            "label": crossing.label,
            "line": crossing.line,
            "direction": crossing.direction,
            "ts": round(crossing.ts, 3),
            "frame": crossing.frame,
        }
    )


def lines_payload(
    counts: Mapping[str, Mapping[str, Mapping[str, int]]],
    since: float,
    ts: float,
    points: Mapping[str, Sequence[Sequence[float]]],
) -> bytes:
    """Retained `lines`: every configured line's crossings per direction and label since `since` (the last
    reset); points: each line's two points (normalized), so a dashboard can draw it."""
    return dumps(
        {
            "ts": round(ts, 3),
            "since": round(since, 3),
            "lines": {line: {d: dict(per) for d, per in directions.items()} for line, directions in counts.items()},
            "points": {line: [list(point) for point in two] for line, two in points.items()},
        }
    )


def zones_payload(
    counts: Mapping[str, Mapping[str, int]],
    ts: float,
    polygons: Mapping[str, Sequence[Sequence[float]]] | None = None,
    dwell: Mapping[str, Mapping[str, float]] | None = None,
) -> bytes:
    """Retained `zones`: every configured zone with its count per label, zeros included.

    polygons: each zone's outline (normalized), so a dashboard can draw the zones over the snapshot.
    dwell: zone -> label -> the longest dwell (s) among the objects in it now.
    """
    body: dict[str, object] = {"ts": round(ts, 3), "zones": {zone: dict(labels) for zone, labels in counts.items()}}
    if dwell is not None:
        body["dwell_s"] = {zone: dict(labels) for zone, labels in dwell.items()}
    if polygons:
        body["polygons"] = {zone: [list(point) for point in points] for zone, points in polygons.items()}
    return dumps(body)


def presence_payload(counts: Mapping[str, int], ts: float) -> bytes:
    """Retained `presence`: every label present now and its count; a label absent from `present` is absent."""
    return dumps({"ts": round(ts, 3), "present": dict(counts)})


def stats_message(
    ts: float,
    figures: Mapping[str, object],
    frames: Mapping[str, int],
    tracks: Mapping[str, int] | None,
    events: Mapping[str, int],
    board: Mapping[str, object],
    uptime_s: float,
    model: Mapping[str, str],
    transport: PublisherHealth,
    source_health: object,
) -> Stats:
    """The retained `stats` message (agent/transport/stats_schema.py); the frame loop also hands it to
    systemd's status line. ts: time.time(). figures: the stats window's summary (fps, window_s,
    latency_ms and, in a final one, figures_age_s). board: rss_mb, and cpu_temp_c and throttled where
    the board reports them. tracks: None without tracking."""
    measured = stats_schema.build(Stats, {**figures, **board})
    return replace(
        measured,
        ts=round(ts, 3),
        frames=stats_schema.build(FrameCounts, frames),
        tracks=None if tracks is None else stats_schema.build(TrackCounts, tracks),
        events=stats_schema.build(EventCounts, events),
        uptime_s=round(uptime_s, 1),
        model=stats_schema.build(ModelIdentity, model),
        mqtt=stats_schema.build(
            MqttFigures,
            {
                "connected": transport.connected,
                "outbox_pending": transport.outbox_pending,
                "outbox_dropped": transport.outbox_dropped,
                "reconnects": transport.reconnects,
                **transport.extra,
            },
        ),
        source=stats_schema.build(SourceFigures, _source_summary(source_health)),
    )


def _source_summary(health: object) -> dict[str, object]:
    """What a source reports of the fields stats has room for (a test's fake source may report none)."""
    return {name: getattr(health, name, None) for name in SourceFigures.__dataclass_fields__}

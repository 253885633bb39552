"""Which `stats` fields become which Prometheus metrics: one table, read by the parser and by the collector.

The fields and their JSON types are the message's own (agent/transport/stats_schema.py); this says
only what each becomes here.

Names follow Prometheus' rules: the `yolo_edge_` prefix, base units (seconds, bytes, celsius) as the
last word, `_total` on counters. A field is a counter only where the agent's figure only ever grows
while it runs (frames processed since start, reconnects, drops); everything measured over the
stats window (fps, latency) or true now (memory, queue lengths) is a gauge. Counters restart from
zero with the agent, which Prometheus' rate() and increase() read as a reset, as they should.
"""

from __future__ import annotations

from dataclasses import dataclass

GAUGE, COUNTER = "gauge", "counter"
MIB = 1024.0 * 1024.0  # rss_mb is /proc's VmRSS in kB / 1024


@dataclass(frozen=True)
class StatsField:
    """One number of a `stats` payload and the series it becomes.

    path: where it sits in the payload (a path of stats_schema.paths()); metric: the exposed name
    (counters end in _total); scale: to the base unit; labels: constant labels that set it apart
    from the other fields of the same metric.
    """

    path: tuple[str, ...]
    metric: str
    type: str
    help: str
    scale: float = 1.0
    labels: tuple[tuple[str, str], ...] = ()


def _gauge(path: str, metric: str, help_text: str, scale: float = 1.0) -> StatsField:
    return StatsField(tuple(path.split(".")), metric, GAUGE, help_text, scale)


def _counter(path: str, metric: str, help_text: str, **labels: str) -> StatsField:
    return StatsField(tuple(path.split(".")), metric, COUNTER, help_text, labels=tuple(labels.items()))


_DROPPED = "MQTT messages the agent dropped since it started, by reason (the outbox's own drops survive restarts)"

STATS_FIELDS: tuple[StatsField, ...] = (
    _gauge("fps", "yolo_edge_frames_per_second", "Frames the agent processed per second over the stats window"),
    _gauge("window_s", "yolo_edge_stats_window_seconds", "Length of the window the last stats cover"),
    _gauge("uptime_s", "yolo_edge_uptime_seconds", "Seconds since the agent started"),
    _gauge("rss_mb", "yolo_edge_resident_memory_bytes", "Resident memory of the agent process", MIB),
    _gauge("cpu_temp_c", "yolo_edge_cpu_temperature_celsius", "CPU temperature where the board reports it"),
    _gauge("throttled", "yolo_edge_throttled_flags", "vcgencmd get_throttled bits as reported (Raspberry Pi)"),
    _gauge("tracks.active", "yolo_edge_tracks_active", "Objects tracked now"),
    _gauge("tracks.stationary", "yolo_edge_tracks_stationary", "Tracked objects that have not moved for a while"),
    _gauge("events.held", "yolo_edge_events_held", "Events held in memory because the outbox refused them"),
    _gauge("mqtt.connected", "yolo_edge_mqtt_connected", "1 while the agent is connected to the broker"),
    _gauge("mqtt.outbox_pending", "yolo_edge_outbox_pending_messages", "QoS 1 messages not yet acknowledged"),
    _gauge("mqtt.held_in_memory", "yolo_edge_mqtt_held_in_memory_messages", "Messages only memory holds"),
    _gauge("mqtt.outbox_writable", "yolo_edge_outbox_writable", "1 while the outbox's disk takes writes"),
    _gauge("mqtt.outbox_recovered", "yolo_edge_outbox_recovered_files", "Corrupt outbox files set aside"),
    _gauge("source.connected", "yolo_edge_source_connected", "1 while the camera or stream delivers frames"),
    _counter("frames.processed", "yolo_edge_frames_processed_total", "Frames processed since the agent started"),
    _counter("frames.dropped", "yolo_edge_frames_dropped_total", "Frames the source dropped since the agent started"),
    _counter("frames.stale", "yolo_edge_frames_stale_total", "Frames skipped as too old since the agent started"),
    _counter("frames.motion_skipped", "yolo_edge_frames_motion_skipped_total", "Frames the motion gate kept"),
    _counter("frames.detected", "yolo_edge_frames_detected_total", "Frames the detector ran on"),
    _counter("frames.region_frames", "yolo_edge_frames_regions_total", "Detector frames that ran on motion regions"),
    _counter("frames.regions", "yolo_edge_region_crops_total", "Crops the detector ran on (motion regions)"),
    _counter("events.lost", "yolo_edge_events_lost_total", "Events lost because memory was full too"),
    _counter("mqtt.reconnects", "yolo_edge_mqtt_reconnects_total", "Broker connections after the first"),
    _counter("mqtt.outbox_errors", "yolo_edge_outbox_errors_total", "Outbox writes that failed"),
    _counter("mqtt.outbox_dropped_full", "yolo_edge_mqtt_dropped_messages_total", _DROPPED, reason="outbox_full"),
    _counter("mqtt.outbox_dropped_old", "yolo_edge_mqtt_dropped_messages_total", _DROPPED, reason="outbox_age"),
    _counter("mqtt.dropped_overflow", "yolo_edge_mqtt_dropped_messages_total", _DROPPED, reason="memory_full"),
    _counter("mqtt.dropped_unsendable", "yolo_edge_mqtt_dropped_messages_total", _DROPPED, reason="unsendable"),
    _counter("mqtt.dropped_qos0", "yolo_edge_mqtt_dropped_messages_total", _DROPPED, reason="qos0_offline"),
    _counter("source.frames_read", "yolo_edge_source_frames_read_total", "Valid frames the source captured"),
    _counter("source.frames_invalid", "yolo_edge_source_frames_invalid_total", "Garbage frames the source discarded"),
    _counter("source.reopen_count", "yolo_edge_source_reopens_total", "Times the source was opened again"),
    _counter("source.stalls", "yolo_edge_source_stalls_total", "Source reads that hung and were replaced"),
)

# Per-stage latency from `latency_ms`: {stage: {p50, p95, max}} over the stats window, one gauge each
# with a `stage` label. Not a `quantile` label: Prometheus keeps that for summaries (promtool flags it),
# and a summary needs a _sum and _count the window does not give.
LATENCY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("p50", "yolo_edge_stage_latency_p50_seconds", "Per-stage latency median over the stats window"),
    ("p95", "yolo_edge_stage_latency_p95_seconds", "Per-stage latency 95th percentile over the stats window"),
    ("max", "yolo_edge_stage_latency_max_seconds", "Per-stage latency maximum over the stats window"),
)

# vcgencmd get_throttled: the bits that say what holds now (16 and up say "has occurred since boot").
THROTTLING_BITS: tuple[tuple[int, str], ...] = (
    (0, "under_voltage"),
    (1, "frequency_capped"),
    (2, "throttled"),
    (3, "soft_temperature_limit"),
)
THROTTLING_METRIC = "yolo_edge_board_throttling"

MODEL_INFO = "yolo_edge_model"  # exposed as yolo_edge_model_info
SHA256_SHOWN = 12  # hex digits of the model's sha256 in its info label: enough to tell bundles apart

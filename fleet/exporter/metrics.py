"""The fleet state as Prometheus metric families, built at each scrape (a custom prometheus_client Collector).

Nothing is kept between scrapes: a device that is down shows only `yolo_edge_up` 0, its status and
when it was last seen, and a device whose retained messages were cleared shows nothing at all, so
no series outlives what the broker holds.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet.exporter.readings import STATUSES
from fleet.exporter.schema import (
    COUNTER,
    LATENCY_METRICS,
    MODEL_INFO,
    SHA256_SHOWN,
    STATS_FIELDS,
    THROTTLING_BITS,
    THROTTLING_METRIC,
)
from fleet.exporter.state import TOPICS, DeviceSnapshot, FleetState

__all__ = ["FleetCollector"]


class FleetCollector(Collector):
    """Every device FleetState knows, plus the exporter's own message counts."""

    def __init__(self, state: FleetState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        snapshot = self.state.snapshot()
        devices = snapshot.devices
        yield from _device_families(devices)
        yield from _stats_families([d for d in devices if d.stats is not None])
        yield from _zone_families([d for d in devices if d.zones is not None])
        yield from _line_families([d for d in devices if d.lines is not None])
        messages = CounterMetricFamily(
            "yolo_edge_exporter_messages", "Messages the exporter read, per topic", labels=["topic"]
        )
        malformed = CounterMetricFamily(
            "yolo_edge_exporter_malformed_messages",
            "Messages skipped because the exporter could not read them, per topic",
            labels=["topic"],
        )
        for kind in TOPICS:
            messages.add_metric([kind], snapshot.messages[kind])
            malformed.add_metric([kind], snapshot.malformed[kind])
        yield messages
        yield malformed
        yield GaugeMetricFamily(
            "yolo_edge_exporter_broker_connected",
            "1 while the exporter is connected to the broker",
            value=float(snapshot.connected),
        )
        yield GaugeMetricFamily("yolo_edge_exporter_devices", "Devices the exporter knows of", value=len(devices))


def _device_families(devices: tuple[DeviceSnapshot, ...]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "yolo_edge_up",
        "1 while the device is online and its stats keep coming; 0 when offline, stopped or quiet for 3 intervals",
        labels=["device"],
    )
    status = GaugeMetricFamily(
        "yolo_edge_device_status",
        "1 for the device's retained status (online, offline, stopped)",
        labels=["device", "status"],
    )
    seen = GaugeMetricFamily(
        "yolo_edge_last_seen_timestamp_seconds", "When the device was last heard from (Unix time)", labels=["device"]
    )
    interval = GaugeMetricFamily(
        "yolo_edge_stats_interval_seconds", "The device's stats interval, as the exporter infers it", labels=["device"]
    )
    for device in devices:
        up.add_metric([device.device], float(device.up))
        interval.add_metric([device.device], device.interval_s)
        if device.status is not None:
            for name in STATUSES:
                status.add_metric([device.device, name], float(device.status == name))
        if device.last_seen is not None:
            seen.add_metric([device.device], device.last_seen)
    yield from (up, status, seen, interval)


def _stats_families(devices: list[DeviceSnapshot]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    for spec in STATS_FIELDS:
        if spec.metric in families:
            continue
        labels = ["device", *(name for name, _ in spec.labels)]
        if spec.type == COUNTER:
            families[spec.metric] = CounterMetricFamily(spec.metric, spec.help, labels=labels)
        else:
            families[spec.metric] = GaugeMetricFamily(spec.metric, spec.help, labels=labels)
    latency = {key: GaugeMetricFamily(name, text, labels=["device", "stage"]) for key, name, text in LATENCY_METRICS}
    throttling = GaugeMetricFamily(
        THROTTLING_METRIC, "1 while the board reports the condition now (Raspberry Pi)", labels=["device", "condition"]
    )
    model = InfoMetricFamily(MODEL_INFO, "The model the device runs", labels=["device"])
    for device in devices:
        stats = device.stats
        assert stats is not None
        for spec in STATS_FIELDS:
            value = stats.values.get(".".join(spec.path))
            if value is not None:
                families[spec.metric].add_metric([device.device, *(v for _, v in spec.labels)], value * spec.scale)
        for stage, figures in stats.latency_ms.items():
            for key, value in figures.items():
                latency[key].add_metric([device.device, stage], value / 1000.0)
        flags = stats.values.get("throttled")
        if flags is not None:
            for bit, condition in THROTTLING_BITS:
                throttling.add_metric([device.device, condition], float(int(flags) >> bit & 1))
        if stats.model is not None:
            m = stats.model
            model.add_metric(
                [device.device], {"name": m.name, "precision": m.precision, "sha256": m.sha256[:SHA256_SHOWN]}
            )
    yield from families.values()
    yield from latency.values()
    yield from (throttling, model)


def _zone_families(devices: list[DeviceSnapshot]) -> Iterator[Metric]:
    objects = GaugeMetricFamily(
        "yolo_edge_zone_objects", "Objects in the zone now, per label", labels=["device", "zone", "label"]
    )
    for device in devices:
        assert device.zones is not None
        for zone, labels in device.zones.counts.items():
            for label, count in labels.items():
                objects.add_metric([device.device, zone, label], count)
    yield objects


def _line_families(devices: list[DeviceSnapshot]) -> Iterator[Metric]:
    # A counter that drops to 0 at the agent's daily reset: rate() and increase() read that as a reset.
    crossings = CounterMetricFamily(
        "yolo_edge_line_crossings",
        "Objects that crossed the counting line in the direction since the last reset, per label",
        labels=["device", "line", "direction", "label"],
    )
    for device in devices:
        assert device.lines is not None
        for line, directions in device.lines.counts.items():
            for direction, labels in directions.items():
                for label, count in labels.items():
                    crossings.add_metric([device.device, line, direction, label], count)
    yield crossings

"""Home Assistant MQTT discovery: one device-based message that makes the agent a device with entities.

The payload goes retained to `<discovery_prefix>/device/<device_id>/config` and is built by the
pure functions below from topics the agent publishes anyway (status, stats, presence, zones, lines,
snapshot), so Home Assistant needs no YAML and the agent no extra messages for it. DiscoveryAnnouncer
re-sends it when Home Assistant comes back (`online` on `<discovery_prefix>/status`), after a
random delay so a fleet restarting with Home Assistant does not answer in one burst.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from agent.transport import topics

log = logging.getLogger("yolo_edge.discovery")

ORIGIN_NAME = "yolo-edge"
DEFAULT_CLASSES = 5  # entities per class for a model without a class filter: not 80 of each
MAX_DELAY_S = 5.0
LINE_DIRECTIONS = ("in", "out")  # the `lines` message's, as agent/scene/lines.py counts them


def package_version() -> str:
    try:
        return metadata.version("yolo-edge")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


def project_url() -> str | None:
    """The project's home page from the installed metadata, if it declares one."""
    try:
        meta = metadata.metadata("yolo-edge")
    except metadata.PackageNotFoundError:
        return None
    urls = [entry.split(",", 1)[1].strip() for entry in meta.get_all("Project-URL") or [] if "," in entry]
    return (urls or [meta.get("Home-page")])[0] or None


@dataclass(frozen=True)
class DiscoveryDevice:
    """What the discovery message describes.

    topic_prefix: `<prefix>/<device>`. model: the model's name (shown as the device's model).
    labels: the classes of interest, each getting a count sensor and a presence binary sensor.
    zones: (zone name, its labels of interest) pairs; each zone gets an occupancy binary sensor and
    a count sensor per label, fed by the retained `zones` message.
    lines: the counting lines' names; each gets a crossings sensor per direction, fed by the retained
    `lines` message.
    """

    device_id: str
    topic_prefix: str
    model: str
    labels: tuple[str, ...]
    version: str
    url: str | None = None
    zones: tuple[tuple[str, tuple[str, ...]], ...] = ()
    lines: tuple[str, ...] = ()


def discovery_topic(discovery_prefix: str, device_id: str) -> str:
    return topics.ha_discovery_topic(discovery_prefix, device_id)


def classes_of_interest(
    names: Mapping[int, str], configured: Sequence[str], class_filter: Sequence[str], limit: int = DEFAULT_CLASSES
) -> tuple[str, ...]:
    """The labels that get entities: `configured`, else the class filter, else the first `limit` labels by class id."""
    if configured:
        return tuple(dict.fromkeys(configured))
    if class_filter:
        return tuple(dict.fromkeys(class_filter))
    return tuple(names[class_id] for class_id in sorted(names)[:limit])


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_") or "label"


def _component_keys(labels: Sequence[str]) -> dict[str, str]:
    """label -> a component key of [a-z0-9_], distinct even for labels that slug alike ("a b", "a_b")."""
    keys: dict[str, str] = {}
    for label in labels:
        key, n = _slug(label), 2
        while key in keys.values():
            key, n = f"{_slug(label)}_{n}", n + 1
        keys[label] = key
    return keys


def _count_of(label: str) -> str:
    """A Jinja expression for the label's count in a presence message, 0 when absent.

    json.dumps quotes the label as a string literal Jinja reads the same way (quotes, backslashes, unicode).
    """
    return f"value_json.present.get({json.dumps(label)}, 0)"


def discovery_payload(device: DiscoveryDevice) -> dict[str, Any]:
    """The device-based discovery message (abbreviated keys `dev`, `o`, `cmps`, `p` as Home Assistant reads them).

    Availability follows `status`: `online` is available; `offline` (the last will) and `stopped`
    (a clean stop) are not. Entities: connectivity, fps and inference latency p50 (from the retained
    stats), a count sensor and an occupancy binary sensor per label (from the retained presence
    message), zone and line sensors (from the retained zones and lines messages), and an image entity
    showing the retained snapshot.
    """
    t = device.topic_prefix
    uid = f"yolo_edge_{device.device_id}"
    components: dict[str, dict[str, Any]] = {
        "connectivity": {
            "p": "binary_sensor",
            "name": "Connectivity",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": f"{t}/{topics.STATUS}",
            "value_template": "{{ 'ON' if value == 'online' else 'OFF' }}",
        },
        "fps": {
            "p": "sensor",
            "name": "Frames per second",
            "icon": "mdi:speedometer",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "state_topic": f"{t}/{topics.STATS}",
            "value_template": "{{ value_json.fps }}",
        },
        "inference_p50": {
            "p": "sensor",
            "name": "Inference latency p50",
            "device_class": "duration",
            "unit_of_measurement": "ms",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "state_topic": f"{t}/{topics.STATS}",
            # A stats window without frames has no latency figures: unknown, not an error.
            "value_template": (
                "{{ value_json.latency_ms.inference.p50 if 'inference' in value_json.latency_ms else none }}"
            ),
        },
    }
    for label, key in _component_keys(device.labels).items():
        components[f"count_{key}"] = {
            "p": "sensor",
            "name": f"{label} count",
            "icon": "mdi:counter",
            "state_class": "measurement",
            "state_topic": f"{t}/{topics.PRESENCE}",
            "value_template": f"{{{{ {_count_of(label)} }}}}",
        }
        components[f"present_{key}"] = {
            "p": "binary_sensor",
            "name": f"{label} present",
            "device_class": "occupancy",
            "state_topic": f"{t}/{topics.PRESENCE}",
            "value_template": f"{{{{ 'ON' if {_count_of(label)} > 0 else 'OFF' }}}}",
        }
    for zone, zone_labels in device.zones:
        in_zone = f"value_json.zones.get({json.dumps(zone)}, {{}})"
        zone_key = f"zone_{_slug(zone)}"
        components[f"{zone_key}_occupied"] = {
            "p": "binary_sensor",
            "name": f"{zone} occupied",
            "device_class": "occupancy",
            "state_topic": f"{t}/{topics.ZONES}",
            "value_template": f"{{{{ 'ON' if ({in_zone}.values() | sum) > 0 else 'OFF' }}}}",
        }
        for label, key in _component_keys(zone_labels).items():
            components[f"{zone_key}_count_{key}"] = {
                "p": "sensor",
                "name": f"{zone} {label} count",
                "icon": "mdi:counter",
                "state_class": "measurement",
                "state_topic": f"{t}/{topics.ZONES}",
                "value_template": f"{{{{ {in_zone}.get({json.dumps(label)}, 0) }}}}",
            }
    components |= _line_components(t, device.lines)
    components["snapshot"] = {
        "p": "image",
        "name": "Snapshot",
        "image_topic": f"{t}/{topics.SNAPSHOT}",
        "content_type": "image/jpeg",
    }
    for key, component in components.items():
        component["unique_id"] = f"{uid}_{key}"
    origin: dict[str, str] = {"name": ORIGIN_NAME, "sw": device.version}
    if device.url:
        origin["url"] = device.url
    return {
        "dev": {
            "ids": [uid],
            "name": device.device_id,
            "mf": "yolo-edge",
            "mdl": f"YOLO detector ({device.model})",
            "sw": device.version,
        },
        "o": origin,
        "availability": [
            {
                "topic": f"{t}/{topics.STATUS}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
            }
        ],
        "cmps": components,
        "qos": 1,
    }


def _line_components(t: str, lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per line and direction, the crossings since the last reset summed over labels (0 before any).

    total_increasing: the daily reset's drop to 0 is a new meter cycle to Home Assistant, not a
    negative count. Keys use the name as it is: line names are [A-Za-z0-9_-] and stay distinct
    (a slug would merge `Door` and `door`), and stable, so a removed line's key can be removed again.
    """
    components: dict[str, dict[str, Any]] = {}
    for line in lines:
        for direction in LINE_DIRECTIONS:
            counts = f"value_json.lines.get({json.dumps(line)}, {{}}).get({json.dumps(direction)}, {{}})"
            components[f"line_{line}_{direction}"] = {
                "p": "sensor",
                "name": f"{line} crossings {direction}",
                "icon": "mdi:transfer-right" if direction == "in" else "mdi:transfer-left",
                "state_class": "total_increasing",
                "state_topic": f"{t}/{topics.LINES}",
                "value_template": f"{{{{ {counts}.values() | sum }}}}",
            }
    return components


class DiscoveryAnnouncer:
    """Publishes the discovery message now and again after Home Assistant says `online`.

    publish(topic, payload) must be thread-safe: the re-send runs on a timer thread, so
    neither paho's network thread nor the frame loop ever waits for the delay.
    """

    def __init__(
        self,
        publish: Callable[[str, bytes], None],
        topic: str,
        payload: bytes,
        max_delay_s: float = MAX_DELAY_S,
        rng: random.Random | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self._publish = publish
        self._max_delay_s = max_delay_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def announce(self) -> None:
        self._publish(self.topic, self.payload)

    def on_ha_status(self, payload: bytes) -> None:
        """A message on `<discovery_prefix>/status` (paho's thread): re-send after 0..max_delay_s if it is `online`."""
        if payload.strip() != topics.ONLINE:
            return
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()  # Home Assistant restarted twice quickly: one re-send is enough
            self._timer = threading.Timer(self._rng.uniform(0, self._max_delay_s), self._announce_later)
            self._timer.daemon = True
            self._timer.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def _announce_later(self) -> None:
        with self._lock:
            if self._closed:
                return
        log.info("Home Assistant is online: discovery sent again")
        self.announce()

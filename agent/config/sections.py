"""The configuration's sections, one frozen dataclass per TOML table, each key declared once with its rule."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.config.hosts import HOSTS, host_port, valid_hosts
from agent.config.keys import BOOL, FILE, SECONDS, fraction, positive, rule, topic_prefix
from agent.config.lines import LINE_KEYS, LinesConfig
from agent.config.zones import ZONE_KEYS, ZoneConfig
from agent.urls import shown_uri

PRECISIONS: tuple[str, ...] = ("auto", "int8", "fp32")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
MQTT_PROTOCOLS: tuple[str, ...] = ("auto", "5", "3.1.1")  # auto: MQTT 5 where the broker speaks it, else 3.1.1
MAX_THREADS = 1024
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]+")


def default_device_id(hostname: str | None = None) -> str:
    """The host name reduced to `[A-Za-z0-9_-]` (others become '-'), so it is safe in an MQTT topic."""
    name = socket.gethostname() if hostname is None else hostname
    return re.sub(r"[^A-Za-z0-9_-]", "-", name) or "yolo-edge"


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """`$STATE_DIRECTORY` under systemd, else `~/.local/state/yolo-edge`."""
    # systemd sets a colon-separated list when the unit has several StateDirectory= entries; ours is first.
    first = env.get("STATE_DIRECTORY", "").split(":")[0]
    if first:
        return Path(first)
    return (Path(env["HOME"]) if env.get("HOME") else Path.home()) / ".local" / "state" / "yolo-edge"


@dataclass(frozen=True)
class SourceConfig:
    """[source]: where frames come from. Times in seconds."""

    uri: str = field(
        default="0", metadata=rule("uri", "a camera index, device path, URL, file, folder or picamera2", bool)
    )
    loop: bool = field(default=False, metadata=rule("bool", BOOL))
    fps: float = field(default=0.0, metadata=rule("float", "a number >= 0 (0 = as fast as possible)", lambda v: v >= 0))
    max_frame_age: float = field(default=1.0, metadata=rule("float", SECONDS, positive))
    reconnect_max_s: float = field(default=10.0, metadata=rule("float", SECONDS, positive))
    stall_timeout_s: float = field(default=15.0, metadata=rule("float", SECONDS, positive))


@dataclass(frozen=True)
class ModelConfig:
    """[model]: which model runs and which detections survive. `path` is None only when not required."""

    path: Path | None = field(default=None, metadata=rule("path", "a bundle directory or an .onnx file", optional=True))
    precision: str = field(
        default="auto", metadata=rule("choice", f"one of {', '.join(PRECISIONS)}", lambda v: v in PRECISIONS)
    )
    # Bounded: onnxruntime takes a 32-bit count, and a huge one fails with a multi-line pybind11 message.
    threads: int = field(
        default=0, metadata=rule("int", "an integer 0..1024 (0 = all cores)", lambda v: 0 <= v <= MAX_THREADS)
    )
    confidence: float = field(default=0.25, metadata=rule("float", "a number 0 < x <= 1", fraction))
    iou: float = field(default=0.45, metadata=rule("float", "a number 0 < x <= 1", fraction))
    classes: tuple[str, ...] = field(
        default=(), metadata=rule("labels", "a list of labels, [] = all (a,b,c in the environment)")
    )
    class_confidence: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=rule(
            "thresholds",
            "a table of label = number 0 < x <= 1 (label=0.5,other=0.3 in the environment)",
            lambda v: all(fraction(threshold) for threshold in v.values()),
        ),
    )
    max_detections: int = field(default=300, metadata=rule("int", "an integer >= 1", lambda v: v >= 1))


@dataclass(frozen=True)
class MqttConfig:
    """[mqtt]: the broker connection. Times in seconds. TLS is on when tls_ca or tls_cert is set.

    hosts, when set, replaces host (a broker's nodes, tried in turn); `nodes` is what to connect to either way.
    """

    host: str = field(default="localhost", metadata=rule("str", "a host name or address", lambda v: bool(v.strip())))
    port: int = field(default=1883, metadata=rule("int", "an integer 1..65535", lambda v: 1 <= v <= 65535))
    hosts: tuple[str, ...] = field(default=(), metadata=rule("hosts", HOSTS, valid_hosts))
    protocol: str = field(
        default="auto",
        metadata=rule("choice", f"one of {', '.join(repr(p) for p in MQTT_PROTOCOLS)}", lambda v: v in MQTT_PROTOCOLS),
    )
    prefix: str = field(
        default="yolo-edge", metadata=rule("str", "a topic prefix without #, + or a leading/trailing /", topic_prefix)
    )
    device_id: str = field(
        default_factory=default_device_id,
        metadata=rule("str", "letters, digits, _ and - only", lambda v: bool(DEVICE_ID_RE.fullmatch(v))),
    )
    username: str | None = field(default=None, metadata=rule("str", "a non-empty user name", bool, optional=True))
    password_file: Path | None = field(default=None, metadata=rule("path", FILE, optional=True))
    tls_ca: Path | None = field(default=None, metadata=rule("path", FILE, optional=True))
    tls_cert: Path | None = field(default=None, metadata=rule("path", FILE, optional=True))
    tls_key: Path | None = field(default=None, metadata=rule("path", FILE, optional=True))
    tls_insecure: bool = field(default=False, metadata=rule("bool", BOOL))
    keepalive: int = field(default=60, metadata=rule("int", "an integer 5..3600 (seconds)", lambda v: 5 <= v <= 3600))
    detections_qos: int = field(default=0, metadata=rule("int", "0 or 1", lambda v: v in (0, 1)))
    publish_empty: bool = field(default=False, metadata=rule("bool", BOOL))
    reconnect_max_s: float = field(default=60.0, metadata=rule("float", SECONDS, positive))
    # Resolved from password_file or $YOLO_EDGE_MQTT_PASSWORD; repr=False keeps it out of logs and tracebacks.
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of each broker node in the order tried: hosts, else host and port alone."""
        if self.hosts:
            return tuple(host_port(entry, self.port) for entry in self.hosts)
        return ((self.host, self.port),)


@dataclass(frozen=True)
class EventsConfig:
    """[events]: end_after = seconds without a label before its `end` event."""

    end_after: float = field(default=5.0, metadata=rule("float", SECONDS, positive))


@dataclass(frozen=True)
class StatsConfig:
    """[stats]: interval = seconds between stats messages."""

    interval: float = field(default=10.0, metadata=rule("float", SECONDS, positive))


@dataclass(frozen=True)
class HomeAssistantConfig:
    """[homeassistant]: MQTT discovery, so the device shows up in Home Assistant without YAML.

    classes: labels that get a count and a presence entity; empty = model.classes, else the
    model's first few labels (never one entity per class of an 80-class model).
    """

    discovery: bool = field(default=True, metadata=rule("bool", BOOL))
    discovery_prefix: str = field(
        default="homeassistant",
        metadata=rule("str", "a topic prefix without #, + or a leading/trailing /", topic_prefix),
    )
    classes: tuple[str, ...] = field(
        default=(),
        metadata=rule("labels", "a list of labels, [] = model.classes or the first 5 (a,b in the environment)"),
    )


@dataclass(frozen=True)
class SnapshotConfig:
    """[snapshot]: a JPEG with boxes drawn, on each presence start and on request; width in pixels."""

    enabled: bool = field(default=True, metadata=rule("bool", BOOL))
    width: int = field(default=640, metadata=rule("int", "an integer 32..3840 (pixels)", lambda v: 32 <= v <= 3840))
    quality: int = field(default=80, metadata=rule("int", "an integer 1..100 (JPEG quality)", lambda v: 1 <= v <= 100))
    draw_regions: bool = field(default=False, metadata=rule("bool", BOOL))  # debug: the crops the detector saw


@dataclass(frozen=True)
class RemoteConfig:
    """[remote]: which commands the agent takes over MQTT. settings: runtime settings on `<prefix>/<device>/set`."""

    settings: bool = field(default=True, metadata=rule("bool", BOOL))


@dataclass(frozen=True)
class DeployConfig:
    """[deploy]: new bundles over MQTT on `<prefix>/<device>/deploy`. Sizes in bytes, times in seconds.

    allow_http: plain http:// URLs too (the sha256 in the command still has to match), for a LAN
    server without TLS. timeout_s: connecting or a read that stalls this long fails the download;
    max_duration_s: the whole download. keep_bundles: deployed bundles kept on disk (the running one
    and the one before it are never removed).
    """

    enabled: bool = field(default=True, metadata=rule("bool", BOOL))
    allow_http: bool = field(default=False, metadata=rule("bool", BOOL))
    max_bytes: int = field(default=200_000_000, metadata=rule("int", "an integer >= 1024 (bytes)", lambda v: v >= 1024))
    timeout_s: float = field(default=30.0, metadata=rule("float", SECONDS, positive))
    max_duration_s: float = field(default=900.0, metadata=rule("float", SECONDS, positive))
    keep_bundles: int = field(default=3, metadata=rule("int", "an integer >= 2", lambda v: v >= 2))


@dataclass(frozen=True)
class AgentSectionConfig:
    """[agent]: where durable state lives (outbox, bundles), how big the outbox may grow, how much to log."""

    state_dir: Path = field(default_factory=default_state_dir, metadata=rule("path", "a directory path"))
    outbox_max_messages: int = field(default=10000, metadata=rule("int", "an integer >= 1", lambda v: v >= 1))
    outbox_max_age_s: float = field(default=604800.0, metadata=rule("float", SECONDS, positive))
    log_level: str = field(
        default="info", metadata=rule("choice", f"one of {', '.join(LOG_LEVELS)}", lambda v: v in LOG_LEVELS)
    )
    # systemd's READY=1 waits for the first frame, but no longer than this: then the agent reports
    # ready, waiting for its camera, so `systemctl start` does not time out on a camera that is away.
    ready_timeout_s: float = field(default=15.0, metadata=rule("float", SECONDS, positive))


@dataclass(frozen=True)
class MotionConfig:
    """[motion]: run the detector only on frames with motion, and on the refreshes below. Times in seconds."""

    enabled: bool = field(default=True, metadata=rule("bool", BOOL))
    threshold: int = field(default=30, metadata=rule("int", "an integer 1..255", lambda v: 1 <= v <= 255))
    contour_area: int = field(default=10, metadata=rule("int", "an integer >= 1 (pixels)", lambda v: v >= 1))
    frame_height: int = field(
        default=100, metadata=rule("int", "an integer 20..1080 (pixels)", lambda v: 20 <= v <= 1080)
    )
    refresh_s: float = field(default=5.0, metadata=rule("float", SECONDS, positive))
    idle_s: float = field(default=30.0, metadata=rule("float", SECONDS, positive))
    lightning_threshold: float = field(default=0.8, metadata=rule("float", "a number 0 < x <= 1", fraction))
    # Detect on native-resolution crops around motion and tracked objects instead of the whole letterboxed
    # frame: a 1080p frame shrunk to 640 makes a far person three times smaller (docs/scene.md, Regions).
    regions: bool = field(default=False, metadata=rule("bool", BOOL))
    max_regions: int = field(
        default=3, metadata=rule("int", "an integer 1..16 (crops per frame)", lambda v: 1 <= v <= 16)
    )


@dataclass(frozen=True)
class TrackingConfig:
    """[tracking]: a stable id per object across detector frames. Times in seconds."""

    enabled: bool = field(default=True, metadata=rule("bool", BOOL))
    min_hits: int = field(default=2, metadata=rule("int", "an integer 1..30 (frames)", lambda v: 1 <= v <= 30))
    max_lost_s: float = field(default=2.0, metadata=rule("float", SECONDS, positive))
    stationary_s: float = field(default=10.0, metadata=rule("float", SECONDS, positive))


@dataclass(frozen=True)
class AgentConfig:
    """The whole configuration, one frozen section per TOML table; `config_file` is where it was read."""

    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    agent: AgentSectionConfig = field(default_factory=AgentSectionConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    zones: tuple[ZoneConfig, ...] = ()
    lines: LinesConfig = field(default_factory=LinesConfig)
    config_file: Path | None = None

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain JSON types, secrets replaced: safe to print or log."""
        summary: dict[str, Any] = {"config_file": _plain(self.config_file)}
        for name in SECTIONS:
            section = getattr(self, name)
            # Fields hidden from repr are the secrets; the same marker hides them here.
            summary[name] = {f.name: _plain(getattr(section, f.name)) for f in fields(section) if f.repr}
        summary["mqtt"]["password"] = "<redacted>" if self.mqtt.password else None
        summary["source"]["uri"] = shown_uri(self.source.uri)  # a camera's password, a stream's token
        summary["zones"] = {
            zone.name: {
                "polygon": [list(p) for p in zone.polygon],
                **{k: _plain(getattr(zone, k)) for k in ZONE_KEYS[1:]},
            }
            for zone in self.zones
        }
        summary["lines"] = {"reset": self.lines.reset} | {
            line.name: {
                "points": [list(p) for p in line.points],
                **{k: _plain(getattr(line, k)) for k in LINE_KEYS[1:]},
            }
            for line in self.lines.lines
        }
        return summary


SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "model": ModelConfig,
    "mqtt": MqttConfig,
    "events": EventsConfig,
    "stats": StatsConfig,
    "homeassistant": HomeAssistantConfig,
    "snapshot": SnapshotConfig,
    "remote": RemoteConfig,
    "deploy": DeployConfig,
    "agent": AgentSectionConfig,
    "motion": MotionConfig,
    "tracking": TrackingConfig,
}


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | Mapping):
        return list(value) if isinstance(value, tuple) else dict(value)
    return value

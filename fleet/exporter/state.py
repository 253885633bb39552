"""The fleet as the exporter knows it: each device's latest status, stats, zones and lines, and whether it is up.

Messages come in on paho's thread, scrapes read on the HTTP server's: both go through one lock,
and a scrape takes a snapshot, so metrics are computed from the latest state at scrape time.

Times: a live message was seen when it arrived; a retained one was published before we
subscribed, so for stats, zones and lines their own `ts` is the best guess (never later than arrival),
and a retained status tells nothing about when. A device is up while its status is not `offline`
or `stopped` and it has been seen (stats, or a live `online`) within three stats intervals; the
interval is the stats' own `window_s`, else the gap between its last two stats, else the agent's
default of 10 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import DEVICE_ID_RE
from agent.transport import topics
from agent.transport.operator import Received
from fleet.exporter.readings import (
    LinesReading,
    Malformed,
    StatsReading,
    ZonesReading,
    parse_lines,
    parse_stats,
    parse_status,
    parse_zones,
)
from fleet.printable import printable
from fleet.view import split_topic

__all__ = ["TOPICS", "DeviceSnapshot", "FleetSnapshot", "FleetState"]

log = logging.getLogger(__name__)

TOPICS: tuple[str, ...] = (topics.STATUS, topics.STATS, topics.ZONES, topics.LINES)
DEFAULT_INTERVAL_S = 10.0  # [stats] interval's default, for a device whose stats do not say
INTERVALS_UNTIL_DOWN = 3
MAX_COMPLAINTS = 1024
DOWN_STATUSES = frozenset({topics.OFFLINE.decode(), topics.STOPPED.decode()})


@dataclass(frozen=True)
class DeviceSnapshot:
    """One device at scrape time. stats, zones and lines are None while it is down: old figures are not current ones."""

    device: str
    up: bool
    status: str | None
    last_seen: float | None
    interval_s: float
    stats: StatsReading | None
    zones: ZonesReading | None
    lines: LinesReading | None = None


@dataclass(frozen=True)
class FleetSnapshot:
    devices: tuple[DeviceSnapshot, ...]
    messages: dict[str, int]  # per topic kind (status, stats, zones, lines): messages read
    malformed: dict[str, int]  # of those, skipped as malformed
    connected: bool


@dataclass
class _Device:
    status: str | None = None
    online_seen: float | None = None  # arrival of the last live `online`
    stats: StatsReading | None = None
    stats_seen: float | None = None
    gap_s: float | None = None  # between the last two stats' ts
    zones: ZonesReading | None = None
    lines: LinesReading | None = None
    last_seen: float | None = None

    @property
    def empty(self) -> bool:
        return self.status is None and self.stats is None and self.zones is None and self.lines is None

    def seen(self, at: float | None) -> None:
        if at is not None and (self.last_seen is None or at > self.last_seen):
            self.last_seen = at

    def interval_s(self) -> float:
        window = self.stats.window_s if self.stats is not None else None
        if window is not None and window > 0:
            return window
        return self.gap_s or DEFAULT_INTERVAL_S

    def up(self, now: float) -> bool:
        if self.status in DOWN_STATUSES:
            return False
        sightings = [at for at in (self.stats_seen, self.online_seen) if at is not None]
        return bool(sightings) and now - max(sightings) <= INTERVALS_UNTIL_DOWN * self.interval_s()


class FleetState:
    """Feed it every message on `<prefix>/+/{status,stats,zones,lines}` (handle), read it with snapshot()."""

    def __init__(self, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self.clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._messages = dict.fromkeys(TOPICS, 0)
        self._malformed = dict.fromkeys(TOPICS, 0)
        self._connected = False
        self._complained: dict[tuple[str, str], None] = {}  # (device, topic) whose malformed payload was logged

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected

    def handle(self, message: Received) -> None:
        where = split_topic(message.topic, self.prefix)
        if where is None or where[1] not in TOPICS:
            return
        device_id, kind = where
        with self._lock:
            self._messages[kind] += 1
            if not DEVICE_ID_RE.fullmatch(device_id):
                self._skip(device_id, kind, Malformed("the device id is not [A-Za-z0-9_-]"))
                return
            device = self._devices.setdefault(device_id, _Device())
            try:
                self._apply(device, kind, message)
            except Malformed as error:
                self._skip(device_id, kind, error)
            else:
                self._complained.pop((device_id, kind), None)
            finally:
                # Every retained message of it was cleared, or it sent nothing readable yet: no series of it.
                if device.empty:
                    del self._devices[device_id]

    def _apply(self, device: _Device, kind: str, message: Received) -> None:
        if not message.payload:  # an empty retained message clears the topic
            if kind == topics.STATUS:
                device.status, device.online_seen = None, None
            elif kind == topics.STATS:
                device.stats, device.stats_seen, device.gap_s = None, None, None
            elif kind == topics.ZONES:
                device.zones = None
            else:
                device.lines = None
            return
        live = not message.retained
        if kind == topics.STATUS:
            device.status = parse_status(message.payload)
            device.online_seen = message.at if live and device.status == "online" else device.online_seen
            device.seen(message.at if live else None)
        elif kind == topics.STATS:
            stats = parse_stats(message.payload)
            if device.stats is not None and stats.ts > device.stats.ts:
                device.gap_s = stats.ts - device.stats.ts
            seen = message.at if live else min(message.at, stats.ts)
            if device.stats is None or stats.ts >= device.stats.ts or live:
                device.stats = stats
            device.stats_seen = max(seen, device.stats_seen or seen)
            device.seen(seen)
        elif kind == topics.ZONES:
            zones = parse_zones(message.payload)
            device.zones = zones
            device.seen(message.at if live else min(message.at, zones.ts))
        else:
            lines = parse_lines(message.payload)
            device.lines = lines
            device.seen(message.at if live else min(message.at, lines.ts))

    def _skip(self, device_id: str, kind: str, error: Malformed) -> None:
        self._malformed[kind] += 1
        # One line per device and topic until a good payload comes: a device that keeps sending bad stats
        # every second must not fill the log. Kept here, not on the device: one that sent nothing readable has none.
        if (device_id, kind) in self._complained:
            return
        log.warning("skipped a malformed %s from %s: %s", kind, printable(device_id[:64]), printable(str(error)))
        self._complained[(device_id, kind)] = None
        if len(self._complained) > MAX_COMPLAINTS:  # made-up device ids by the thousand: forget the oldest
            del self._complained[next(iter(self._complained))]

    def snapshot(self) -> FleetSnapshot:
        now = self.clock()
        with self._lock:
            devices = []
            for device_id in sorted(self._devices):
                device = self._devices[device_id]
                up = device.up(now)
                devices.append(
                    DeviceSnapshot(
                        device_id,
                        up,
                        device.status,
                        device.last_seen,
                        device.interval_s(),
                        device.stats if up else None,
                        device.zones if up else None,
                        device.lines if up else None,
                    )
                )
            return FleetSnapshot(tuple(devices), dict(self._messages), dict(self._malformed), self._connected)

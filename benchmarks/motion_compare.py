"""What the motion benchmark's runs published, and how the gated run's objects compare with the ungated run's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from benchmarks.fixture.still_video import HEIGHT, WIDTH, StillScene

PREFIX = "yolo-edge"
SETTLE_S = 10.0


class Observer:
    """A subscriber on every run's objects, stats and status; keeps each message with when it came."""

    def __init__(self, host: str, port: int, devices: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._messages: dict[tuple[str, str], list[tuple[float, dict]]] = {}
        self._devices = list(devices)
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="yolo-edge-motion-bench")

        def on_connect(client, userdata, flags, reason, properties):  # type: ignore[no-untyped-def]
            client.subscribe(
                [(f"{PREFIX}/{d}/{kind}", 1) for d in self._devices for kind in ("objects", "stats", "status")]
            )

        def on_subscribe(client, userdata, mid, reasons, properties):  # type: ignore[no-untyped-def]
            ready.set()

        def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
            _, device, kind = message.topic.split("/")
            text = message.payload.decode("utf-8", errors="replace")
            body = json.loads(text) if text.startswith("{") else {"text": text}
            with self._lock:
                self._messages.setdefault((device, kind), []).append((time.monotonic(), body))

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError(f"cannot subscribe at {host}:{port}")

    def messages(self, device: str, kind: str) -> list[tuple[float, dict]]:
        with self._lock:
            return list(self._messages.get((device, kind), []))

    def objects(self, device: str) -> list[dict]:
        return [body for _, body in self.messages(device, "objects")]

    def stats(self, device: str) -> list[tuple[float, dict]]:
        # The retained stats of a device seen before this run cannot exist: every run has its own device id.
        return self.messages(device, "stats")

    def last_stats(self, device: str) -> dict | None:
        stats = self.stats(device)
        return stats[-1][1] if stats else None

    def settle(self, runs: Iterable[object]) -> None:
        """Wait (bounded) until every run's `stopped` status arrived: its last messages came before it."""
        deadline = time.monotonic() + SETTLE_S
        for device in self._devices:
            while time.monotonic() < deadline:
                if any(body.get("text") == "stopped" for _, body in self.messages(device, "status")):
                    break
                time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass(frozen=True)
class Found:
    """One `new` of the ungated run and its counterpart in the gated run (None: missed)."""

    label: str
    frame: int
    entered: tuple[str, ...]
    gated_frame: int | None
    gated_entered: tuple[str, ...]

    @property
    def missed(self) -> bool:
        return self.gated_frame is None

    @property
    def zones_differ(self) -> bool:
        return not self.missed and self.entered != self.gated_entered


def entered_zones(objects: list[dict]) -> dict[str, tuple[str, ...]]:
    """Object id -> every zone it entered, over all its messages."""
    seen: dict[str, set[str]] = {}
    for message in objects:
        seen.setdefault(message["id"], set()).update(message["entered_zones"])
    return {oid: tuple(sorted(zones)) for oid, zones in seen.items()}


def compare_objects(ungated: list[dict], gated: list[dict], fps: float, within_s: float) -> list[Found]:
    """Match every ungated `new` to an unused gated `new` of the same label within `within_s` of video time."""
    ungated_zones, gated_zones = entered_zones(ungated), entered_zones(gated)
    candidates = [m for m in gated if m["type"] == "new"]
    found = []
    for new in (m for m in ungated if m["type"] == "new"):
        close = [
            m for m in candidates if m["label"] == new["label"] and abs(m["frame"] - new["frame"]) / fps <= within_s
        ]
        match = min(close, key=lambda m: abs(m["frame"] - new["frame"]), default=None)
        if match is not None:
            candidates.remove(match)
        found.append(
            Found(
                new["label"],
                new["frame"],
                ungated_zones[new["id"]],
                match["frame"] if match is not None else None,
                gated_zones[match["id"]] if match is not None else (),
            )
        )
    return found


@dataclass(frozen=True)
class Stationary:
    """The object that stops: its ids seen during the still stretch (one, for kept), and from which to which
    frame the one that covers it lived."""

    ids: int
    first_frame: int | None
    last_frame: int | None
    covered: bool

    @property
    def kept(self) -> bool:
        return self.ids == 1 and self.covered


def stationary_kept(objects: list[dict], scene: StillScene) -> Stationary:
    """Ids seen where the stopping object stands, at some moment of its still stretch; kept: exactly one,
    `new` before the stop and not ended before it goes again.

    Matched by place and time, not label: the fixture model may name the stopped shape as another class
    (on this scene it calls the square a triangle), and a label would then find nothing."""
    still = scene.still
    stop, go = round(still.stop_s * scene.fps), round(still.go_s * scene.fps)
    spot_x, spot_y = still.path[1]
    # Normalized units: the shape's radius is a share of the height, so of the width 3/4 of it.
    reach_x, reach_y = still.radius * HEIGHT / WIDTH, still.radius
    spans: dict[str, list[int]] = {}
    there: set[str] = set()
    for message in objects:
        spans.setdefault(message["id"], []).append(message["frame"])
        x1, y1, x2, y2 = message["box"]
        if (
            stop <= message["frame"] <= go
            and abs((x1 + x2) / 2 - spot_x) <= reach_x
            and abs((y1 + y2) / 2 - spot_y) <= reach_y
        ):
            there.add(message["id"])
    alive = {oid: (min(spans[oid]), max(spans[oid])) for oid in there}
    if not alive:
        return Stationary(0, None, None, False)
    first, last = min(f for f, _ in alive.values()), max(f for _, f in alive.values())
    covering = len(alive) == 1 and first <= stop and last >= go
    return Stationary(len(alive), first, last, covering)

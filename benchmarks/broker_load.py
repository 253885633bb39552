"""Broker load: many simulated agents publish through the agent's real MQTT code to one local Mosquitto.

    python -m benchmarks.broker_load [--agents 50] [--fps 10] [--seconds 60] [--processes 0]
                                     [--tcp-nodelay off|clients|broker|all] [--state-dir DIR]
                                     [--out benchmarks/results]
    python -m benchmarks.broker_load --cluster [--kill-at S] ...   (a NATS cluster, benchmarks/broker_cluster.py)

Each simulated agent is the agent minus the camera and the model: the real frame loop
(agent/runtime/loop.py AgentLoop with its scene and reporter: presence, payload builders, events through
publish_sequenced, presence, stats) publishing through the real MqttPublisher with its own
client id and its own durable SQLite outbox in its own state directory. Only two things are
stand-ins: a source that hands out a frame every 1/fps seconds like a camera, and a detector
that returns the synthetic detections of a scene where people, cars and a dog come and go (see
HABITS), so detections and presence events come at a rate a real camera would produce.

A separate paho client subscribes to `<prefix>/#` and measures what arrives: messages per
second and payload bytes per topic, publish-to-receive latency (the receiver's time.time()
minus the payload's `ts`: every process runs on this host, so they share one clock) and losses.
Every event `seq` of every device must arrive exactly once (QoS 1 through the outbox); every
detections message the loop handed over is checked off by its frame id (QoS 0: a loss there is
reported, not a failure).

The agents are spread over several processes (--processes; by default one per
AGENTS_PER_PROCESS agents): in one Python process, 50 frame loops and 50 paho network threads
would share one GIL, and its queueing would show up as latency that no real agent (one per Pi)
has. The report states how it was run.

Nagle's algorithm makes a small message that follows another on the same connection wait for a
delayed ACK (about 40 ms on Linux). The agent turns it off on its own socket (agent/transport/mqtt.py), and
the Mosquitto config the project ships (systemd/mosquitto-yolo-edge.conf) sets set_tcp_nodelay
true, so that is the default here (--tcp-nodelay broker). --tcp-nodelay off measures Mosquitto as
Debian ships it; clients and all also turn it off on the receiver's socket (a subscriber such as
Home Assistant, which paho leaves with Nagle on).
Every event is fsynced into its agent's outbox before it is sent, and here 50 outboxes share one
disk; --state-dir on a tmpfs shows the latency without that.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import queue
import resource
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt import __version__ as PAHO_VERSION
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.hosts import host_port
from agent.pipeline.detections import Detections
from agent.pipeline.detector import ModelIdentity
from agent.pipeline.frames import Frame
from agent.runtime.loop import LoopSettings
from agent.scene.scene import SceneSettings
from agent.system.board import cpu_model
from agent.transport.connection import MqttSettings
from agent.transport.mqtt import MqttPublisher
from agent.transport.nodes import Node
from agent.transport.outbox import Outbox
from agent.transport.publisher import PublisherHealth
from benchmarks.machine import load_average, logical_cpus
from benchmarks.mosquitto import Broker, mosquitto_binary
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text
from tests.agent.loop_rig import frame_loop

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "yolo-edge"
TARGET_P99_MS = 50.0
# Below this share of the asked frame rate the simulation, not the broker, was the bottleneck.
KEEP_UP_RATIO = 0.95
AGENTS_PER_PROCESS = 10
PROGRESS_EVERY_S = 5.0
READY_TIMEOUT_S = 120.0
# Every agent starts in the same instant and sends the start events of what its first frame shows: latency
# percentiles leave these first seconds out (and everything stamped from the stop on), and show them apart.
WARMUP_S = 5.0
GRACE_S = 15.0  # after the agents stopped: how long the receiver may still wait for the last messages
CLOSE_TIMEOUT_S = 10.0  # each publisher's flush of its outbox at the end
FRAME_HW = (480, 640)
STATS_INTERVAL_S = 10.0  # the agent's defaults ([stats] interval, [events] end_after)
END_AFTER_S = 5.0
TIMED_KINDS = ("detections", "events", "presence", "stats")
KIND_ORDER = ("detections", "events", "presence", "stats", "status")


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


# ----------------------------------------------------------------------------------------------
# The stand-ins: a scene with synthetic detections, a detector that returns them, a paced source


@dataclass(frozen=True)
class Habit:
    """How one label comes and goes, in seconds on average (each change is a per-frame coin toss)."""

    label: str
    mean_gap_s: float  # absent between two visits
    mean_visit_s: float  # present during one visit
    max_count: int
    mean_change_s: float  # while present, one more or one fewer


HABITS = (
    Habit("person", mean_gap_s=20.0, mean_visit_s=15.0, max_count=3, mean_change_s=8.0),
    Habit("car", mean_gap_s=40.0, mean_visit_s=30.0, max_count=2, mean_change_s=20.0),
    Habit("dog", mean_gap_s=90.0, mean_visit_s=10.0, max_count=1, mean_change_s=math.inf),
)
# A present object missed in one frame, as real detectors do now and then; with two or more of a
# label in view a miss changes the count for a frame, and the tracker sends an update each way.
MISS_PROBABILITY = 0.02
NAMES = {class_id: habit.label for class_id, habit in enumerate(HABITS)}
IDENTITY = ModelIdentity("synthetic-yolo11n", "int8", hashlib.sha256(b"synthetic").hexdigest())


@dataclass
class _Object:
    box: np.ndarray  # x1, y1, x2, y2 in pixels
    velocity: np.ndarray  # pixels per frame
    confidence: float


class SyntheticScene:
    """Objects of HABITS' labels appearing, moving, changing in number and leaving; one step per frame."""

    def __init__(self, rng: np.random.Generator, fps: float) -> None:
        self._rng = rng
        self._fps = fps
        # Start in the steady state (each label in view with the share of time it spends in view), so a
        # short run does not begin with an empty scene that fills up over the first minute.
        self._objects = [
            [self._new_object() for _ in range(int(rng.integers(1, h.max_count + 1)))]
            if rng.random() < h.mean_visit_s / (h.mean_visit_s + h.mean_gap_s)
            else []
            for h in HABITS
        ]

    def step(self) -> Detections:
        boxes, scores, class_ids = [], [], []
        for class_id, habit in enumerate(HABITS):
            objects = self._objects[class_id]
            self._change(objects, habit)
            for obj in objects:
                self._move(obj)
                if self._rng.random() >= MISS_PROBABILITY:
                    boxes.append(obj.box.copy())
                    scores.append(float(np.clip(obj.confidence + self._rng.normal(0, 0.03), 0.26, 0.99)))
                    class_ids.append(class_id)
        if not boxes:
            return Detections.empty()
        return Detections(np.array(boxes, np.float32), np.array(scores, np.float32), np.array(class_ids, np.int64))

    def _chance(self, mean_s: float) -> bool:
        return self._rng.random() < 1.0 / (mean_s * self._fps)

    def _change(self, objects: list[_Object], habit: Habit) -> None:
        if not objects:
            if self._chance(habit.mean_gap_s):
                objects.append(self._new_object())
        elif self._chance(habit.mean_visit_s):
            objects.clear()
        elif self._chance(habit.mean_change_s):
            if len(objects) < habit.max_count and (len(objects) == 1 or self._rng.random() < 0.5):
                objects.append(self._new_object())
            else:
                objects.pop()

    def _new_object(self) -> _Object:
        height, width = FRAME_HW
        w, h = self._rng.uniform(40, 200, size=2)
        x, y = self._rng.uniform(0, width - w), self._rng.uniform(0, height - h)
        return _Object(
            np.array([x, y, x + w, y + h]), self._rng.uniform(-3, 3, size=2), float(self._rng.uniform(0.4, 0.95))
        )

    def _move(self, obj: _Object) -> None:
        height, width = FRAME_HW
        obj.box[[0, 2]] += obj.velocity[0]
        obj.box[[1, 3]] += obj.velocity[1]
        # Bounce off the frame's edges, so objects stay in view for the whole visit.
        if obj.box[0] < 0 or obj.box[2] > width:
            obj.velocity[0] *= -1
        if obj.box[1] < 0 or obj.box[3] > height:
            obj.velocity[1] *= -1


class SyntheticDetector:
    """Stands in for letterbox + onnxruntime + postprocess: the scene's detections at once.

    The stage times it reports are typical of an INT8 YOLO11n on a Pi 5 at 320 (they only fill the
    payload's latency_ms; nothing waits for them).
    """

    def __init__(self, scene: SyntheticScene, rng: np.random.Generator) -> None:
        self.names = NAMES
        self.identity = IDENTITY
        self._scene = scene
        self._rng = rng

    def detect(self, image: np.ndarray) -> tuple[Detections, float, float, float]:
        jitter = self._rng.random(3)
        return self._scene.step(), 2.0 + jitter[0], 80.0 + 10 * jitter[1], 0.5 + 0.2 * jitter[2]


@dataclass(frozen=True)
class SourceHealth:
    kind: str
    connected: bool
    frames_read: int


class PacedSource:
    """A camera: one frame every 1/fps seconds from first_due on (monotonic seconds).

    A reader that comes late gets the newest frame, and the frames it missed count as dropped
    (the loop sees the gap in frame ids), as with the agent's live sources. A frame's capture
    time is when it was due, so a late loop shows up in the measured latency.
    """

    ended = False

    def __init__(self, fps: float, first_due: float, image: np.ndarray) -> None:
        self._period = 1.0 / fps
        self._due = first_due
        self._image = image
        self._frame_id = 0

    def read(self, timeout: float) -> Frame | None:
        now = time.monotonic()
        if now < self._due:
            time.sleep(min(timeout, self._due - now))
            now = time.monotonic()
            if now < self._due:
                return None
        missed = int((now - self._due) // self._period)
        self._frame_id += 1 + missed
        due = self._due + missed * self._period
        self._due = due + self._period
        return Frame(self._image, self._frame_id, time.time() - (now - due), due)

    def health(self) -> SourceHealth:
        return SourceHealth("synthetic", True, self._frame_id)


class CountingPublisher:
    """The agent's MqttPublisher, counting what the loop hands it so the receiver can check every message off."""

    def __init__(self, inner: MqttPublisher) -> None:
        self.inner = inner
        self.sent: Counter[str] = Counter()
        self.last_seq: dict[str, int] = {}
        self.store_ms: list[float] = []  # publish_sequenced: numbering and queueing for the outbox's writer

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent[topic] += 1
        self.inner.publish(topic, payload, qos, retain)

    def publish_sequenced(self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False) -> int:
        started = time.perf_counter()
        seq = self.inner.publish_sequenced(topic, build, qos, retain)
        self.store_ms.append((time.perf_counter() - started) * 1e3)
        self.sent[topic] += 1
        self.last_seq[topic] = seq
        return seq

    def health(self) -> PublisherHealth:
        return self.inner.health()

    def close(self, timeout: float = 3.0) -> None:
        self.inner.close(timeout)


# ----------------------------------------------------------------------------------------------
# Worker processes: a share of the simulated agents each


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    devices: tuple[str, ...]
    host: str
    port: int
    fps: float
    seconds: float
    state_root: Path
    seed: int
    # A cluster's nodes ("host:port") for each of `devices`, in the order that agent tries them; () = host:port.
    nodes: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class DeviceReport:
    """One simulated agent after its run. store_ms: how long each event's publish_sequenced took."""

    device: str
    frames: int
    dropped: int
    sent: dict[str, int]
    last_seq: int
    outbox_pending: int
    dropped_qos0: int
    reconnects: int
    store_ms: tuple[float, ...]


@dataclass(frozen=True)
class WorkerReport:
    index: int
    devices: tuple[DeviceReport, ...]
    cpu_s: float  # user + system CPU of the whole process while the loops ran
    wall_s: float


class SimulatedAgent:
    def __init__(self, device: str, spec: WorkerSpec, seed: int, image: np.ndarray, nodes: tuple[str, ...]) -> None:
        self.device = device
        self.rng = np.random.default_rng(seed)
        self.outbox = Outbox(spec.state_root / device / "outbox.sqlite3")
        hosts = tuple(Node(*host_port(entry, spec.port)) for entry in nodes)
        settings = MqttSettings(spec.host, spec.port, f"{PREFIX}/{device}", device, hosts=hosts, reconnect_max_s=2.0)
        self.publisher = CountingPublisher(MqttPublisher(settings, self.outbox))
        self.detector = SyntheticDetector(SyntheticScene(self.rng, spec.fps), self.rng)
        self.fps = spec.fps
        self.image = image
        self.report: DeviceReport | None = None

    def run(self, stop: threading.Event, started: float) -> None:
        # Cameras are not in phase: each agent's first frame comes somewhere within the first period.
        source = PacedSource(self.fps, started + self.rng.uniform(0, 1 / self.fps), self.image)
        settings = LoopSettings(stats_interval=STATS_INTERVAL_S)
        scene = SceneSettings.presence_only(end_after=END_AFTER_S)
        loop = frame_loop(source, self.detector, self.publisher, settings, scene=scene, stop=stop)  # type: ignore[arg-type]
        counters = loop.run()
        health = self.publisher.health()
        self.publisher.close(timeout=CLOSE_TIMEOUT_S)
        self.report = DeviceReport(
            self.device,
            counters.processed,
            counters.dropped,
            dict(self.publisher.sent),
            self.publisher.last_seq.get("events", 0),
            self.outbox.count(),
            int(health.extra.get("dropped_qos0", 0)),  # type: ignore[call-overload]
            health.reconnects,
            tuple(self.publisher.store_ms),
        )
        self.outbox.close()


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open for the receiver: Nagle's algorithm off (paho leaves it on; the agent's own
    client turns it off itself)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def clients_nodelay(args: argparse.Namespace) -> bool:
    return args.tcp_nodelay in ("clients", "all")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_worker(spec: WorkerSpec, messages: Any, go: Any) -> WorkerReport:
    image = np.zeros((*FRAME_HW, 3), np.uint8)  # never read by the stand-in detector; gives the frame its size
    nodes = spec.nodes or ((),) * len(spec.devices)
    agents = [SimulatedAgent(d, spec, spec.seed * 1000 + i, image, nodes[i]) for i, d in enumerate(spec.devices)]
    for agent in agents:
        agent.publisher.inner.start()
    deadline = time.monotonic() + READY_TIMEOUT_S / 2
    while not all(agent.publisher.health().connected for agent in agents):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {spec.index}: not every agent connected to {spec.host}:{spec.port}")
        time.sleep(0.05)
    messages.put(("ready", spec.index, None))
    if not go.wait(READY_TIMEOUT_S):
        raise RuntimeError(f"worker {spec.index}: no start signal")
    started, cpu_before = time.monotonic(), _cpu_seconds()
    stop = threading.Event()
    threads = [threading.Thread(target=a.run, args=(stop, started), name=a.device, daemon=True) for a in agents]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, started + spec.seconds - time.monotonic()))
    stop.set()
    cpu_s, wall_s = _cpu_seconds() - cpu_before, time.monotonic() - started
    for thread in threads:
        thread.join(CLOSE_TIMEOUT_S + 30)
    missing = [a.device for a in agents if a.report is None]
    if missing:
        raise RuntimeError(f"worker {spec.index}: agents {', '.join(missing)} did not finish")
    return WorkerReport(spec.index, tuple(a.report for a in agents if a.report), cpu_s, wall_s)


def worker_main(spec: WorkerSpec, messages: Any, go: Any) -> None:
    """Entry point of a worker process: runs its agents, then sends its report (or the error) back."""
    logging.basicConfig(level=logging.ERROR, format=f"worker {spec.index}: %(name)s: %(message)s")
    try:
        messages.put(("done", spec.index, run_worker(spec, messages, go)))
    except BaseException:
        messages.put(("error", spec.index, traceback.format_exc()))


# ----------------------------------------------------------------------------------------------
# The receiver


@dataclass(frozen=True)
class Arrival:
    """One message as the receiver saw it. at: time.time() on arrival; ts: the payload's; latency_ms: at - ts."""

    kind: str
    device: str
    at: float
    ts: float | None
    latency_ms: float | None
    payload_bytes: int
    packet_bytes: int


def publish_packet_bytes(topic: str, payload_bytes: int, qos: int) -> int:
    """Bytes of the MQTT 3.1.1 PUBLISH packet on the wire: fixed header, topic, packet id (QoS > 0), payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload_bytes
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining


class Receiver:
    """A paho subscriber on `<prefix>/#` that records every arrival; thread-safe reads for the progress line.

    qos: its subscription's (the cluster mode runs one at 0 and one at 1: NATS serves them differently)."""

    def __init__(self, host: str, port: int, nodelay: bool, qos: int = 1, name: str = "broker-load-receiver") -> None:
        self.host, self.port = host, port
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311
        )
        if nodelay:
            self._client.on_socket_open = no_delay
        self._client.on_connect = lambda client, *_: client.subscribe(f"{PREFIX}/#", qos=qos)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.event_seqs: dict[str, list[int]] = defaultdict(list)  # device -> seqs in arrival order
        self.detection_frames: dict[str, list[int]] = defaultdict(list)

    def start(self, timeout: float = 10.0) -> Receiver:
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"the receiver could not subscribe at {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        at = time.time()
        _, device, kind = message.topic.split("/", 2)
        payload = bytes(message.payload)
        ts = latency = None
        if kind in TIMED_KINDS:
            body = json.loads(payload)
            ts = float(body["ts"])
            latency = (at - ts) * 1e3
            if kind == "events":
                with self._lock:
                    self.event_seqs[device].append(int(body["seq"]))
            elif kind == "detections":
                with self._lock:
                    self.detection_frames[device].append(int(body["frame"]))
        packet = publish_packet_bytes(message.topic, len(payload), message.qos)
        arrival = Arrival(kind, device, at, ts, latency, len(payload), packet)
        with self._lock:
            self.arrivals.append(arrival)

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def events_received(self) -> int:
        """Distinct (device, seq) pairs so far: a duplicate must not stand in for a missing event."""
        with self._lock:
            return sum(len(set(seqs)) for seqs in self.event_seqs.values())


# ----------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class LoadRun:
    started_at: float  # time.time() of the start signal
    seconds: float
    processes: int
    workers: tuple[WorkerReport, ...]
    arrivals: tuple[Arrival, ...]
    event_seqs: dict[str, list[int]]
    detection_frames: dict[str, list[int]]
    mosquitto_cpu_s: float | None
    receiver_cpu_s: float
    waited_s: float  # after the agents stopped, until the last expected event arrived (or GRACE_S)
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def devices(self) -> list[DeviceReport]:
        return [d for w in self.workers for d in w.devices]

    @property
    def steady_from(self) -> float:
        return self.started_at + min(WARMUP_S, self.seconds / 4)

    def steady(self, arrival: Arrival) -> bool:
        """Stamped in the steady state: after the start burst and before the stop burst."""
        return arrival.ts is not None and self.steady_from <= arrival.ts < self.started_at + self.seconds


def split_devices(agents: int, processes: int) -> list[tuple[str, ...]]:
    devices = [f"load-{i:03d}" for i in range(agents)]
    return [tuple(devices[i::processes]) for i in range(processes)]


def collect(messages: Any, want: str, count: int, timeout: float) -> list[Any]:
    """Wait for `count` messages of kind `want` from the workers; a worker's error ends the run with its traceback."""
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count:
        try:
            kind, index, value = messages.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"only {len(got)} of {count} workers sent '{want}' within {timeout:.0f} s") from None
        if kind == "error":
            raise RuntimeError(f"worker {index} failed:\n{value}")
        if kind == want:
            got.append(value)
    return got


def show_progress(elapsed: float, seconds: float, receiver: Receiver, since: float) -> None:
    arrivals = receiver.snapshot()
    recent = [a for a in arrivals if a.at >= since + elapsed - PROGRESS_EVERY_S]
    latencies = {kind: [a.latency_ms for a in recent if a.kind == kind] for kind in ("detections", "events")}
    p99 = ", ".join(f"{kind} p99 {np.percentile(v, 99):.1f} ms" for kind, v in latencies.items() if v)
    progress(
        f"{elapsed:4.0f}/{seconds:.0f} s: {len(arrivals)} messages received, {len(recent) / PROGRESS_EVERY_S:.0f}/s "
        f"lately, {receiver.events_received()} events; last {PROGRESS_EVERY_S:.0f} s: {p99 or 'nothing timed yet'}"
    )


class BrokerUnderLoad(Protocol):
    """What run_load needs of the broker: where it listens, and its CPU time so far (None if unknown)."""

    host: str
    port: int

    def cpu_seconds(self) -> float | None: ...


def run_load(
    args: argparse.Namespace,
    broker: BrokerUnderLoad,
    receiver: Receiver,
    state_root: Path,
    nodes_of: Callable[[str], tuple[str, ...]] | None = None,
    at: tuple[float, Callable[[], None]] | None = None,
) -> LoadRun:
    """nodes_of: each device's cluster nodes in the order it tries them (None: broker.host:port alone).
    at: (seconds into the run, what to do then): the cluster mode kills a node."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that already runs paho's thread
    messages, go = context.Queue(), context.Event()
    groups = split_devices(args.agents, args.processes)
    specs = [
        WorkerSpec(
            i,
            group,
            broker.host,
            broker.port,
            args.fps,
            args.seconds,
            state_root,
            args.seed + i,
            tuple(nodes_of(device) for device in group) if nodes_of else (),
        )
        for i, group in enumerate(groups)
    ]
    workers = [context.Process(target=worker_main, args=(s, messages, go), name=f"agents-{s.index}") for s in specs]
    progress(f"starting {args.agents} simulated agents in {plural(len(workers), 'process', 'processes')}")
    for worker in workers:
        worker.start()
    try:
        collect(messages, "ready", len(workers), READY_TIMEOUT_S)
        progress(f"all {args.agents} agents connected; running {args.seconds:g} s at {args.fps:g} fps each")
        mosquitto_before, receiver_before = broker.cpu_seconds(), _cpu_seconds()
        started_at, started = time.time(), time.monotonic()
        go.set()
        while (elapsed := time.monotonic() - started) < args.seconds - 0.5:
            wake = min(PROGRESS_EVERY_S, args.seconds - elapsed, *([at[0] - elapsed] if at else []))
            time.sleep(max(0.0, wake))
            if at and time.monotonic() - started >= at[0]:
                at[1]()
                at = None
            show_progress(time.monotonic() - started, args.seconds, receiver, started_at)
        time.sleep(max(0.0, started + args.seconds - time.monotonic()))
        mosquitto_after, receiver_after = broker.cpu_seconds(), _cpu_seconds()
        progress("stopping: agents end their presences, send final stats and flush their outboxes")
        reports = collect(messages, "done", len(workers), CLOSE_TIMEOUT_S + 90)
        stopped = time.monotonic()
        expected = sum(d.last_seq for r in reports for d in r.devices)
        while receiver.events_received() < expected and time.monotonic() - stopped < GRACE_S:
            time.sleep(0.05)
        time.sleep(0.5)  # QoS 0 stragglers behind the last event
        waited = time.monotonic() - stopped
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    mosquitto_cpu = None
    if mosquitto_before is not None and mosquitto_after is not None:
        mosquitto_cpu = mosquitto_after - mosquitto_before
    return LoadRun(
        started_at,
        args.seconds,
        len(workers),
        tuple(sorted(reports, key=lambda r: r.index)),
        tuple(receiver.snapshot()),
        dict(receiver.event_seqs),
        dict(receiver.detection_frames),
        mosquitto_cpu,
        receiver_after - receiver_before,
        waited,
    )


# ----------------------------------------------------------------------------------------------
# Figures and tables


@dataclass(frozen=True)
class Losses:
    expected: int
    received_unique: int
    lost: int
    duplicates: int
    out_of_order: int


def event_losses(run: LoadRun) -> Losses:
    expected = lost = duplicates = out_of_order = unique = 0
    for device in run.devices:
        seqs = run.event_seqs.get(device.device, [])
        counts = Counter(seqs)
        expected += device.last_seq
        unique += len(counts)
        lost += sum(1 for seq in range(1, device.last_seq + 1) if seq not in counts)
        duplicates += sum(c - 1 for c in counts.values())
        out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    return Losses(expected, unique, lost, duplicates, out_of_order)


def detection_losses(run: LoadRun) -> Losses:
    expected = unique = duplicates = out_of_order = 0
    for device in run.devices:
        frames = run.detection_frames.get(device.device, [])
        counts = Counter(frames)
        expected += device.sent.get("detections", 0)
        unique += len(counts)
        duplicates += sum(c - 1 for c in counts.values())
        out_of_order += sum(1 for a, b in itertools.pairwise(frames) if b < a)
    return Losses(expected, unique, max(0, expected - unique), duplicates, out_of_order)


def percentiles(values: list[float]) -> tuple[float, float, float, float]:
    if not values:
        return (math.nan,) * 4  # type: ignore[return-value]
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return float(p50), float(p95), float(p99), float(max(values))


def latencies(run: LoadRun, kind: str, steady: bool = True) -> list[float]:
    """Latencies of `kind` in the steady state (steady=False: in the start and stop bursts)."""
    return [
        a.latency_ms for a in run.arrivals if a.kind == kind and a.latency_ms is not None and run.steady(a) == steady
    ]


def traffic_table(run: LoadRun) -> Table:
    rows = []
    kinds = [k for k in KIND_ORDER if any(a.kind == k for a in run.arrivals)]
    kinds += sorted({a.kind for a in run.arrivals} - set(kinds))
    for kind in [*kinds, "all"]:
        shown = [a for a in run.arrivals if kind in ("all", a.kind)]
        payload = [a.payload_bytes for a in shown]
        timed = [a.latency_ms for a in shown if a.latency_ms is not None and run.steady(a)]
        p50, p95, p99, worst = percentiles(timed)
        rows.append(
            (
                kind,
                str(len(shown)),
                f"{len(shown) / run.seconds:.1f}",
                f"{np.mean(payload):.0f}" if payload else "-",
                f"{max(payload)}" if payload else "-",
                f"{sum(a.packet_bytes for a in shown) / run.seconds / 1e3:.1f}",
                *((f"{p50:.1f}", f"{p95:.1f}", f"{p99:.1f}", f"{worst:.1f}") if timed else ("-",) * 4),
            )
        )
    return Table(
        f"Traffic and publish-to-receive latency ({len(run.devices)} agents, {run.seconds:g} s)",
        (
            "topic",
            "messages",
            "per s",
            "payload mean B",
            "payload max B",
            "kB/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
        ),
        tuple(rows),
        (
            "messages, per s and kB/s: everything over the run's length, the start and stop included.",
            f"latency columns: the steady state only, messages stamped from {run.steady_from - run.started_at:g} s "
            "after the start until the stop; the bursts are in the next table.",
            "kB/s: MQTT PUBLISH packets as received (fixed header + topic + packet id + payload); TCP/IP not counted.",
            "latency: receiver's time.time() on arrival minus the payload's ts, which the payload rounds to 1 ms "
            "(so +-0.5 ms). ts is when the simulated frame was due, so the figure includes the frame loop's own "
            "lateness, payload building and, for events, the outbox writer's group-committed insert; then paho, "
            "the broker and the receiver. stats and presence carry the time they were built.",
            "status has no ts: counted, not timed.",
        ),
    )


def burst_table(run: LoadRun) -> Table:
    rows = []
    for kind in TIMED_KINDS:
        values = latencies(run, kind, steady=False)
        if values:
            p50, _, p99, worst = percentiles(values)
            rows.append((kind, str(len(values)), f"{p50:.1f}", f"{p99:.1f}", f"{worst:.1f}"))
    return Table(
        "Start and stop bursts (left out of the latency columns above)",
        ("topic", "messages", "p50 ms", "p99 ms", "max ms"),
        tuple(rows),
        (
            f"The first {run.steady_from - run.started_at:g} s: every agent starts in the same instant and sends the "
            "start events of what its first frame shows. The stop: every agent ends its presences, sends its final "
            "stats and flushes its outbox in the same instant. A fleet rarely does either all at once.",
        ),
    )


def losses_table(run: LoadRun) -> Table:
    events, detections = event_losses(run), detection_losses(run)
    rows = [
        ("events (QoS 1, outbox)", events),
        ("detections (QoS 0)", detections),
    ]
    return Table(
        "Delivery: every event seq and every detections frame id checked off per device",
        ("messages", "sent", "received once or more", "lost", "duplicates", "out of order"),
        tuple(
            (name, str(x.expected), str(x.received_unique), str(x.lost), str(x.duplicates), str(x.out_of_order))
            for name, x in rows
        ),
        (
            "sent: events = the last seq each agent's outbox gave out (seqs start at 1 in a fresh state dir); "
            "detections = messages the frame loop handed to the publisher.",
            f"after the agents stopped the receiver waited {run.waited_s:.1f} s for the last messages "
            f"(at most {GRACE_S:g} s).",
        ),
    )


def simulation_table(run: LoadRun, args: argparse.Namespace) -> Table:
    devices = run.devices
    fps = [d.frames / run.seconds for d in devices]
    per_process = ", ".join(f"{100 * w.cpu_s / w.wall_s:.0f}" for w in run.workers)
    p50, _, p99, worst = percentiles([ms for d in devices for ms in d.store_ms])
    store = f"{p50:.1f} / {p99:.1f} / {worst:.1f}"
    rows = [
        ("simulated agents", f"{len(devices)} in {plural(run.processes, 'process', 'processes')}"),
        ("frames per agent per s", f"asked {args.fps:g}; achieved median {np.median(fps):.2f}, lowest {min(fps):.2f}"),
        ("frames dropped (loop late for the next frame)", str(sum(d.dropped for d in devices))),
        (
            "messages the loops handed over",
            ", ".join(f"{k} {v}" for k, v in sorted(sum((Counter(d.sent) for d in devices), Counter()).items())),
        ),
        ("events: publish_sequenced ms (numbered and queued for the outbox's writer), p50 / p99 / max", store),
        ("outbox rows still pending after close", str(sum(d.outbox_pending for d in devices))),
        ("QoS 0 messages dropped while disconnected", str(sum(d.dropped_qos0 for d in devices))),
        ("reconnects", str(sum(d.reconnects for d in devices))),
        ("agent processes' CPU, % of one core each", per_process),
        (
            "mosquitto CPU, % of one core",
            f"{100 * run.mosquitto_cpu_s / run.seconds:.1f}" if run.mosquitto_cpu_s is not None else "unknown",
        ),
        ("receiver process CPU, % of one core", f"{100 * run.receiver_cpu_s / run.seconds:.1f}"),
    ]
    return Table("The simulation", ("what", "value"), tuple(rows))


@dataclass(frozen=True)
class Verdict:
    name: str
    target: str
    measured: str
    passed: bool


def verdicts(run: LoadRun, args: argparse.Namespace) -> list[Verdict]:
    events = event_losses(run)
    out = [
        Verdict("events lost (QoS 1)", "0", str(events.lost), events.lost == 0),
        Verdict("events duplicated", "0", str(events.duplicates), events.duplicates == 0),
    ]
    for kind in ("detections", "events"):
        p99 = percentiles(latencies(run, kind))[2]
        name = f"{kind} p99 latency, steady state"
        out.append(Verdict(name, f"< {TARGET_P99_MS:g} ms", f"{p99:.1f} ms", p99 < TARGET_P99_MS))
    slowest = min(d.frames / run.seconds for d in run.devices)
    out.append(
        Verdict(
            "every simulated agent kept its frame rate (else the load was not applied)",
            f">= {KEEP_UP_RATIO * args.fps:g} fps",
            f"lowest {slowest:.2f} fps",
            slowest >= KEEP_UP_RATIO * args.fps,
        )
    )
    return out


def verdict_table(found: list[Verdict]) -> Table:
    return Table(
        "Targets",
        ("target", "wanted", "measured", "result"),
        tuple((v.name, v.target, v.measured, "PASS" if v.passed else "MISS") for v in found),
    )


def facts_table(run: LoadRun, args: argparse.Namespace, state_fs: str) -> Table:
    broker_changes = "persistence false" + (", set_tcp_nodelay true" if args.tcp_nodelay in ("broker", "all") else "")
    rows = (
        ("cpu", cpu_model()),
        ("cores", logical_cpus()),
        ("broker", f"{mosquitto_version()} on 127.0.0.1, default settings but {broker_changes}"),
        ("TCP_NODELAY (--tcp-nodelay)", args.tcp_nodelay),
        ("paho-mqtt", PAHO_VERSION),
        ("python", sys.version.split()[0]),
        ("outboxes (SQLite, WAL, synchronous=FULL)", f"one per agent on {state_fs}"),
        *run.facts.items(),
    )
    return Table("Machine and set-up", ("fact", "value"), rows)


def mosquitto_version() -> str:
    import subprocess

    binary = mosquitto_binary()
    if binary is None:
        return "mosquitto"
    result = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()[:1]
    return first[0].strip() if first else "mosquitto"


def filesystem_of(path: Path) -> str:
    """The mount that holds `path`, as 'device (type)': fsync costs differ between a disk and tmpfs."""
    best = ("", "?", "?")
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, fstype, *_ = line.split()
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best[0]):
            best = (mount, device, fstype)
    return f"{best[1]} ({best[2]}, mounted on {best[0]})"


def plot(path: Path, run: LoadRun) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, rate, over_time) = plt.subplots(1, 3, figsize=(16, 4.8))
    for kind, color in (("detections", "tab:blue"), ("events", "tab:orange")):
        values = np.sort(np.maximum(latencies(run, kind), 0.05))
        if len(values):
            cdf.plot(values, np.arange(1, len(values) + 1) / len(values), color=color, label=kind)
    cdf.axvline(TARGET_P99_MS, color="red", linestyle="--", label=f"target p99 {TARGET_P99_MS:g} ms")
    cdf.axhline(0.99, color="grey", linewidth=0.8)
    cdf.set_xscale("log")
    cdf.set_xlabel("publish-to-receive latency ms (log)")
    cdf.set_ylabel("share of messages")
    cdf.set_title("latency CDF, steady state")
    cdf.legend(loc="lower right")

    seconds = math.ceil(run.seconds) + 1
    bottom = np.zeros(seconds)
    for kind in KIND_ORDER:
        counts = np.zeros(seconds)
        for a in run.arrivals:
            second = int(a.at - run.started_at)
            if a.kind == kind and 0 <= second < seconds:
                counts[second] += 1
        rate.bar(range(seconds), counts, bottom=bottom, width=1.0, label=kind)
        bottom += counts
    rate.set_xlabel("second of the run")
    rate.set_ylabel("messages received per s")
    rate.set_title("message rate")
    rate.legend(loc="lower right", fontsize=8)

    for kind, color in (("detections", "tab:blue"), ("events", "tab:orange")):
        by_second: dict[int, list[float]] = defaultdict(list)
        for a in run.arrivals:
            if a.kind == kind and a.latency_ms is not None:
                by_second[int(a.at - run.started_at)].append(a.latency_ms)
        xs = sorted(s for s in by_second if 0 <= s < seconds)
        over_time.plot(xs, [np.percentile(by_second[s], 99) for s in xs], color=color, label=f"{kind} p99")
        over_time.plot(xs, [np.median(by_second[s]) for s in xs], color=color, linestyle=":", label=f"{kind} p50")
    over_time.axhline(TARGET_P99_MS, color="red", linestyle="--")
    over_time.set_yscale("log")
    over_time.set_xlabel("second of the run")
    over_time.set_ylabel("ms (log)")
    over_time.set_title("latency per second")
    over_time.legend(fontsize=8)
    fig.suptitle(
        f"yolo-edge broker load: {len(run.devices)} agents in {plural(run.processes, 'process', 'processes')}, "
        "one Mosquitto"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


NAGLE = {
    "off": "The agents turn Nagle's algorithm off on their own sockets (TCP_NODELAY, agent/transport); Mosquitto as "
    "Debian ships it (set_tcp_nodelay false) and the receiver (paho as shipped) keep it on. A small message written "
    "while the previous one on the same connection is not yet acknowledged waits for that ACK, which the peer's "
    "delayed ACK can hold back about 40 ms on Linux: here, the broker's stream to the subscriber.",
    "clients": "TCP_NODELAY on the agents' sockets (the agent sets it) and on the receiver's (paho does not set it; "
    "the benchmark does through paho's on_socket_open); Mosquitto as Debian ships it (set_tcp_nodelay false).",
    "broker": "TCP_NODELAY on the agents' sockets (the agent sets it) and in Mosquitto (set_tcp_nodelay true, as "
    "systemd/mosquitto-yolo-edge.conf ships); the receiver as paho ships it.",
    "all": "TCP_NODELAY on every socket: the agents' (the agent sets it), the receiver's (the benchmark sets it "
    "through paho's on_socket_open) and Mosquitto's (set_tcp_nodelay true).",
}


def how_it_ran(run: LoadRun, args: argparse.Namespace) -> list[str]:
    return [
        f"{len(run.devices)} simulated agents, each the agent's real frame loop (AgentLoop) and real MqttPublisher "
        "with its own client id and its own durable outbox, publishing to one Mosquitto on 127.0.0.1. Only the "
        "camera (a paced source) and the model (synthetic detections) are stand-ins; each agent runs "
        f"{args.fps:g} frames per second for {args.seconds:g} s with the agent's default settings "
        f"(detections QoS 0 only for frames with something in view, events QoS 1, stats every "
        f"{STATS_INTERVAL_S:g} s, end_after {END_AFTER_S:g} s).",
        f"The agents run in {plural(run.processes, 'process', 'processes')} (--processes; by default one per "
        f"{AGENTS_PER_PROCESS} agents), so that one GIL shared by 100 threads (a frame loop and a paho network "
        "thread per agent) cannot add latency that an agent alone on its Pi would not have; 'The simulation' "
        "shows how busy each process was. One more process subscribes to everything and measures.",
        "The synthetic scene: "
        + "; ".join(
            f"{h.label} absent ~{h.mean_gap_s:g} s, present ~{h.mean_visit_s:g} s, up to {h.max_count}" for h in HABITS
        )
        + f"; each object is missed in {100 * MISS_PROBABILITY:g} % of frames, as real detectors flicker.",
        NAGLE[args.tcp_nodelay],
        "Everything runs on this one shared 2-core host: the agents' processes, the broker and the receiver take "
        "CPU from each other, which a fleet of Pis and a broker host would not.",
    ]


def write_markdown(
    path: Path, tables: list[Table], run: LoadRun, args: argparse.Namespace, argv: list[str], found: list[Verdict]
) -> None:
    missed = [v for v in found if not v.passed]
    summary = (
        "Every target met."
        if not missed
        else "Missed: " + "; ".join(f"{v.name} ({v.measured}, wanted {v.target})" for v in missed) + "."
    )
    if args.tcp_nodelay == "off" and any(not v.passed and "latency" in v.name for v in found):
        summary += " Why: see the note on Nagle's algorithm under How it was run."
    text = [
        "# Broker load",
        "",
        f"`{command_line('benchmarks.broker_load', argv)}`",
        "",
        summary,
        "",
        "## How it was run",
        "",
        *[f"- {line}" for line in how_it_ran(run, args)],
        "",
        "![broker load](broker_load.png)",
        "",
        *[render_markdown(t) for t in tables],
    ]
    path.write_text("\n".join(text))


# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.broker_load", description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50, help="simulated agents (default 50)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second of each agent (default 10)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the run (default 60)")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help=f"processes the agents are spread over (default: one per {AGENTS_PER_PROCESS} agents)",
    )
    parser.add_argument(
        "--tcp-nodelay",
        choices=("off", "clients", "broker", "all"),
        default="broker",
        help="where Nagle's algorithm is off besides the agents' sockets (they always turn it off): in Mosquitto "
        "(set_tcp_nodelay true, as systemd/mosquitto-yolo-edge.conf ships; the default), on the receiver's "
        "socket (clients), both (all) or neither (off: Mosquitto as Debian ships it)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the agents' state directories (their outboxes) go (default: the system's temporary directory); "
        "on tmpfs such as /dev/shm an fsync costs nothing, which leaves the network path alone in the latency",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic scenes (default 1)")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a three-node NATS cluster instead of one Mosquitto, a node killed mid-run (benchmarks/broker_cluster.py)",
    )
    parser.add_argument(
        "--kill-at", type=float, help="with --cluster: seconds into the run to kill a node (half of it)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="markdown and PNG here")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.agents < 1 or args.fps <= 0 or args.seconds < 1 or args.processes < 0:
        print("--agents must be >= 1, --fps > 0, --seconds >= 1 and --processes >= 0", file=sys.stderr)
        return 2
    args.processes = min(args.agents, args.processes or math.ceil(args.agents / AGENTS_PER_PROCESS))
    if args.cluster:
        from benchmarks.broker_cluster import main_cluster  # imports this module: only here, not at the top

        return main_cluster(args, argv)
    if mosquitto_binary() is None:
        print("broker_load: mosquitto is not installed; `make mosquitto` installs it with apt", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    load_at_start = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="broker-load-") as temp,
        tempfile.TemporaryDirectory(prefix="broker-load-state-", dir=args.state_dir) as state,
    ):
        workdir, state_root = Path(temp), Path(state)
        state_fs = filesystem_of(state_root)
        broker_nodelay = args.tcp_nodelay in ("broker", "all")
        broker = Broker(workdir, extra_config="set_tcp_nodelay true\n" if broker_nodelay else "").start()
        try:
            receiver = Receiver(broker.host, broker.port, clients_nodelay(args)).start()
            try:
                run = run_load(args, broker, receiver, state_root)
            finally:
                receiver.stop()
        finally:
            broker.stop()
    run.facts.update({"load average at start (1/5/15 min)": load_at_start, "load average at end": load_average()})
    found = verdicts(run, args)
    tables = [verdict_table(found), traffic_table(run), burst_table(run), losses_table(run)]
    tables.append(simulation_table(run, args))
    tables.append(facts_table(run, args, state_fs))
    for table in tables:
        print(render_text(table))
    png, md = args.out / "broker_load.png", args.out / "broker_load.md"
    plot(png, run)
    write_markdown(md, tables, run, args, argv, found)
    print(f"\nwrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

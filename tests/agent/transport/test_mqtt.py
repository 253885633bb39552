"""MqttPublisher against a real Mosquitto, watched by a separate paho client.

Every wait has a timeout; reconnect_max_s is 1 s so a restarted broker is found again within
about a second.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.transport.client import probe_broker
from agent.transport.connection import MqttSettings, describe_connect_error
from agent.transport.mqtt import MqttPublisher
from agent.transport.outbox import Outbox, OutboxError, OutboxMessage
from tests.agent.agent_process import Message, retained
from tests.broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[3]
DEVICE = "cam1"
PREFIX = f"yolo-edge/{DEVICE}"
STATUS = f"{PREFIX}/status"
EVENTS = f"{PREFIX}/events"
STATS = f"{PREFIX}/stats"


@dataclass(frozen=True)
class Seen:
    """One message the observer received; at: time.monotonic() seconds."""

    at: float
    topic: str
    payload: bytes
    retain: bool


class Observer:
    """A separate MQTT client that records every message on `topic` (QoS 1), for assertions with timeouts."""

    def __init__(
        self, broker: Broker, topic: str = f"{PREFIX}/#", username: str | None = None, password: str | None = None
    ) -> None:
        self.messages: list[Seen] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda client, userdata, flags, reason, props: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(5.0):
            self.close()
            raise TimeoutError(f"observer not subscribed to {topic} within 5 s")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(Seen(time.monotonic(), message.topic, message.payload, message.retain))
            self._changed.notify_all()

    def on(self, topic: str) -> list[Seen]:
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.on(topic)]

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; saw {self.messages}")

    def wait_count(self, topic: str, count: int, timeout: float = 5.0) -> list[bytes]:
        self.wait_for(f"{count} messages on {topic}", lambda: len(self._unlocked_on(topic)) >= count, timeout)
        return self.payloads(topic)

    def _unlocked_on(self, topic: str) -> list[Seen]:
        return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def marker_arrived(observer: Observer, send: Callable[[str, bytes], object], timeout: float = 5.0) -> None:
    """Send a QoS 1 marker under PREFIX with `send(full_topic, payload)`; wait until `observer` has it.

    The positive sign that something did not happen: a client's messages reach a subscriber in the
    order the broker took them, so once the marker is in, whatever that client sent before it (or the
    broker queued for the observer before taking it) is in too.
    """
    topic, payload = f"{PREFIX}/test-marker", uuid.uuid4().hex.encode()
    send(topic, payload)
    observer.wait_for("the marker", lambda: payload in [m.payload for m in observer._unlocked_on(topic)], timeout)


def through(publisher: MqttPublisher) -> Callable[[str, bytes], None]:
    """marker_arrived()'s `send` for a marker the publisher sends (QoS 1: after every outbox row it holds)."""
    return lambda topic, payload: publisher.publish(topic.removeprefix(PREFIX + "/"), payload, qos=1)


def broker_log_count(broker: Broker, text: str) -> int:
    """How many lines of the broker's log hold `text` (Mosquitto writes each as it happens)."""
    return sum(text in line for line in broker.log_path.read_text(errors="replace").splitlines())


def settings(port: int, **overrides: object) -> MqttSettings:
    values: dict = {"keepalive": 10, "reconnect_max_s": 1.0} | overrides
    return MqttSettings(host="127.0.0.1", port=port, topic_prefix=PREFIX, client_id="cam1", **values)


def seqs(payloads: list[bytes]) -> list[int]:
    return [json.loads(p)["seq"] for p in payloads]


def payload_by_name(messages: dict[str, Message]) -> dict[str, bytes]:
    return {name: message.payload for name, message in messages.items()}


@pytest.fixture
def observers() -> Iterator[Callable[..., Observer]]:
    made: list[Observer] = []

    def make(broker: Broker, **kwargs: object) -> Observer:
        made.append(Observer(broker, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for observer in made:
        observer.close()


@pytest.fixture
def publishers() -> Iterator[Callable[[MqttSettings, Outbox], MqttPublisher]]:
    """Publishers closed (quickly) at teardown even when a test fails."""
    made: list[MqttPublisher] = []

    def make(mqtt_settings: MqttSettings, outbox: Outbox) -> MqttPublisher:
        made.append(MqttPublisher(mqtt_settings, outbox).start())
        return made[-1]

    yield make
    for publisher in made:
        publisher.close(timeout=0.2)


class GatedOutbox(Outbox):
    """pending() waits for `gate`, so a test can hold back the replay until its observer is subscribed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        self.gate.wait(timeout=10)
        return super().pending(after_id, limit)


class BrokenOutbox(Outbox):
    """An outbox whose disk is full: every write fails."""

    def add(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        raise OutboxError(f"outbox {self.path}: cannot add a message: database or disk is full")

    def store(self, messages, remove=(), on_commit=None) -> list[int]:  # type: ignore[no-untyped-def]
        raise OutboxError(f"outbox {self.path}: cannot store messages: database or disk is full")


PUBLISHER_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from agent.transport.connection import MqttSettings
from agent.transport.mqtt import MqttPublisher
from agent.transport.outbox import Outbox

port, db, count, wait_connected = int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
settings = MqttSettings("127.0.0.1", port, "yolo-edge/cam1", "cam1", keepalive=10, reconnect_max_s=1)
publisher = MqttPublisher(settings, Outbox(db)).start()
deadline = time.monotonic() + 10
while wait_connected and not publisher.health().connected and time.monotonic() < deadline:
    time.sleep(0.02)
for i in range(count):
    publisher.publish_sequenced("events", lambda seq: json.dumps({"seq": seq}).encode())
assert publisher.wait_stored(10)  # publish_sequenced returns before the writer stored the message
print("ready", publisher.health().connected, flush=True)
time.sleep(60)  # until killed
"""


def start_publisher_process(tmp_path: Path, port: int, db: Path, count: int, wait_connected: bool) -> subprocess.Popen:
    """A publisher in its own process; returns once it reported "ready" (its messages are in the outbox)."""
    script = tmp_path / "publisher_process.py"
    script.write_text(textwrap.dedent(PUBLISHER_SCRIPT))
    process = subprocess.Popen(
        [sys.executable, str(script), str(ROOT), str(port), str(db), str(count), "1" if wait_connected else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([process.stdout], [], [], 15.0)
    line = process.stdout.readline() if ready and process.stdout else ""
    if not line.startswith("ready"):
        process.kill()
        raise AssertionError(f"publisher process not ready: {line!r} {process.communicate(timeout=5)[1][-2000:]}")
    if wait_connected:
        assert line.split()[1] == "True", line
    return process


def kill_9(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=5)
    assert process.returncode == -signal.SIGKILL


def test_online_retained_on_connect_and_stopped_on_close(tmp_path: Path, broker: Broker, observers, publishers) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = publishers(settings(broker.port), outbox)
    wait_until("connected", lambda: publisher.health().connected)
    late = observers(broker)  # subscribes after the fact
    assert late.wait_count(STATUS, 1) == [b"online"]
    assert payload_by_name(retained(broker.host, broker.port, DEVICE, ("status",))) == {"status": b"online"}

    started = time.monotonic()
    publisher.close(timeout=3.0)
    assert time.monotonic() - started < 2.0  # nothing to flush: no need to use the whole timeout
    assert late.wait_count(STATUS, 2) == [b"online", b"stopped"]
    assert not publisher.health().connected
    publisher.close()  # idempotent

    after = observers(broker)
    after.wait_count(STATUS, 1)
    assert after.on(STATUS)[0].payload == b"stopped" and after.on(STATUS)[0].retain
    # A clean DISCONNECT: the broker must not publish the will. The DISCONNECT was in the broker's socket
    # before `after` connected, so the broker has handled it, and a will would have been queued for
    # `late` ahead of a marker `late` publishes now.
    marker_arrived(late, lambda topic, payload: late.client.publish(topic, payload, qos=1))
    assert late.payloads(STATUS) == [b"online", b"stopped"]


def test_last_will_says_offline_when_the_process_dies(tmp_path: Path, broker: Broker, observers) -> None:
    observer = observers(broker)
    process = start_publisher_process(tmp_path, broker.port, tmp_path / "outbox.db", count=0, wait_connected=True)
    observer.wait_count(STATUS, 1)
    kill_9(process)
    assert observer.wait_count(STATUS, 2) == [b"online", b"offline"]
    later = observers(broker)
    later.wait_count(STATUS, 1)
    assert later.on(STATUS)[0].payload == b"offline" and later.on(STATUS)[0].retain


def test_qos1_published_while_broker_is_down_arrives_in_order_after_restart(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    outbox = GatedOutbox(tmp_path / "outbox.db")
    publisher = publishers(settings(broker.port), outbox)
    wait_until("connected", lambda: publisher.health().connected)
    publisher.publish(EVENTS.removeprefix(PREFIX + "/"), b'{"seq":0}', qos=1)
    wait_until("first message acknowledged", lambda: publisher.health().outbox_pending == 0)

    broker.stop()
    wait_until("disconnect noticed", lambda: not publisher.health().connected)
    outbox.gate.clear()  # hold the replay until the observer listens (the broker forgets everything)
    for seq in range(1, 21):
        publisher.publish("events", json.dumps({"seq": seq}).encode(), qos=1)
    health = publisher.health()
    assert not health.connected and health.outbox_pending == 20

    broker.start()
    observer = observers(broker)
    outbox.gate.set()
    assert seqs(observer.wait_count(EVENTS, 20)) == list(range(1, 21))
    wait_until("outbox emptied by acknowledgements", lambda: publisher.health().outbox_pending == 0)
    health = publisher.health()
    assert health.reconnects == 1 and health.connected and health.extra["inflight"] == 0
    # Every row was acknowledged, so none is left to hand again; a marker sent now comes after any handed twice.
    marker_arrived(observer, through(publisher))
    assert len(observer.payloads(EVENTS)) == 20  # none handed twice


def test_messages_left_by_a_killed_process_are_delivered_in_order_by_the_next(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    db = tmp_path / "state" / "outbox.db"
    broker.stop()
    process = start_publisher_process(tmp_path, broker.port, db, count=5, wait_connected=False)
    kill_9(process)  # the broker was down the whole time: all five wait in the file

    broker.start()
    observer = observers(broker)
    outbox = Outbox(db)
    assert outbox.count() == 5
    publisher = publishers(settings(broker.port), outbox)
    for _ in range(2):  # numbering continues where the dead process stopped
        publisher.publish_sequenced("events", lambda seq: json.dumps({"seq": seq}).encode())
    assert seqs(observer.wait_count(EVENTS, 7)) == [1, 2, 3, 4, 5, 6, 7]
    wait_until("outbox empty", lambda: outbox.count() == 0)


def test_retained_stats_are_republished_after_a_broker_restart(tmp_path: Path, broker: Broker, publishers) -> None:
    publisher = publishers(settings(broker.port), Outbox(tmp_path / "outbox.db"))
    wait_until("connected", lambda: publisher.health().connected)
    publisher.publish("stats", b'{"fps":1}', qos=0, retain=True)
    broker.stop()
    wait_until("disconnect noticed", lambda: not publisher.health().connected)
    publisher.publish("stats", b'{"fps":2}', qos=0, retain=True)  # newer state, while nobody listens
    assert publisher.health().extra["dropped_qos0"] == 1

    broker.start()  # persistence is off: only a re-publish can bring the retained values back
    wait_until("reconnected", lambda: publisher.health().reconnects == 1, timeout=6.0)
    kept = retained(broker.host, broker.port, DEVICE, ("stats", "status"))
    assert payload_by_name(kept) == {"stats": b'{"fps":2}', "status": b"online"}


def test_waiting_for_the_first_attempt_lets_the_first_qos0_message_through(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    observer = observers(broker)
    publisher = publishers(settings(broker.port), Outbox(tmp_path / "outbox.db"))
    assert publisher.wait_first_attempt(5.0)
    publisher.publish("detections", b"first", qos=0)  # sent at once: without the wait it could be dropped
    observer.wait_for("first detections", lambda: observer.on(f"{PREFIX}/detections"))
    assert publisher.health().extra["dropped_qos0"] == 0


def test_a_failed_first_attempt_ends_the_wait_at_once(tmp_path: Path, publishers) -> None:
    secured = Broker(tmp_path, allow_anonymous=False).start()
    try:
        failing = {
            "nothing listens": settings(free_port()),
            "bad credentials": settings(secured.port, username="cam", password="wrong"),
        }
        for index, (reason, target) in enumerate(failing.items()):
            publisher = publishers(target, Outbox(tmp_path / f"outbox-{index}.db"))
            started = time.monotonic()
            assert not publisher.wait_first_attempt(10.0), reason
            assert time.monotonic() - started < 5.0, f"{reason}: a failure must not wait out the whole timeout"
    finally:
        secured.stop()


def test_unreachable_broker_neither_blocks_nor_raises(tmp_path: Path, publishers) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = publishers(settings(free_port()), outbox)  # nothing listens there
    slowest = 0.0
    for i in range(20):
        started = time.monotonic()
        publisher.publish("events", b"%d" % i, qos=1)
        publisher.publish("detections", b"{}", qos=0)
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 0.5  # one fsync, no network wait (generous: the machine is shared)
    health = publisher.health()
    assert not health.connected
    assert health.outbox_pending == 20 and health.extra["dropped_qos0"] == 20
    started = time.monotonic()
    publisher.close(timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert outbox.count() == 20  # kept for the next run


def test_refused_credentials_are_not_reported_as_connected(
    tmp_path: Path, observers, publishers, caplog: pytest.LogCaptureFixture
) -> None:
    password_file = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "cam", "right"], check=True, timeout=10)
    # Started as root, mosquitto drops to user `mosquitto` before reading the password file, which
    # then sits in pytest's 0700 directory; `user root` keeps it able to (ignored when not root).
    config = f"password_file {password_file}\n" + ("user root\n" if os.geteuid() == 0 else "")
    secured = Broker(tmp_path, extra_config=config, allow_anonymous=False).start()
    try:
        observer = observers(secured, username="cam", password="right")
        wrong = publishers(settings(secured.port, username="cam", password="wrong"), Outbox(tmp_path / "a.db"))

        def refused_three_times() -> bool:
            assert not wrong.health().connected
            return broker_log_count(secured, "disconnected, not authorised") >= 3

        # Counted by the broker, not by the clock: a third attempt begins only after the publisher has
        # handled the second refusal, so whatever it logs or counts for a retry has happened by then.
        wait_until("three refused attempts", refused_three_times, timeout=15.0)
        health = wrong.health()
        assert health.reconnects == 0 and health.extra["refused"] is True
        assert observer.payloads(STATUS) == []
        assert sum("refused" in r.getMessage() for r in caplog.records) == 1  # one line per streak

        right = publishers(settings(secured.port, username="cam", password="right"), Outbox(tmp_path / "b.db"))
        wait_until("connected with the right password", lambda: right.health().connected)
        assert observer.wait_count(STATUS, 1) == [b"online"]

        # `yolo-edge-agent check` gets the same answer as one line.
        probe_broker(settings(secured.port, username="cam", password="right"), timeout_s=3.0)
        with pytest.raises(ConnectionError, match=re.escape(f"127.0.0.1:{secured.port} refused the connection")):
            probe_broker(settings(secured.port, username="cam", password="wrong"), timeout_s=3.0)
        with pytest.raises(ConnectionError, match=re.escape("cannot connect to 127.0.0.1")):
            probe_broker(settings(free_port()), timeout_s=3.0)
        assert right.health().connected and right.health().reconnects == 0  # the probe did not displace it
    finally:
        secured.stop()


def test_outbox_failure_is_counted_and_the_message_still_sent_while_connected(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    observer = observers(broker)
    publisher = publishers(settings(broker.port), BrokenOutbox(tmp_path / "outbox.db"))
    wait_until("connected", lambda: publisher.health().connected)
    publisher.publish("events", b"first", qos=1)
    publisher.publish("events", b"second", qos=1)
    assert observer.wait_count(EVENTS, 2) == [b"first", b"second"]
    # One failed write per batch the writer tried: both may have gone in one.
    health = publisher.health()
    assert health.extra["outbox_errors"] >= 1 and health.extra["outbox_writable"] is False


def test_many_messages_from_two_threads_arrive_once_each_and_close_flushes(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    observer = observers(broker)
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = publishers(settings(broker.port, max_inflight=5), outbox)
    wait_until("connected", lambda: publisher.health().connected)

    def produce(name: str) -> None:
        for i in range(60):
            publisher.publish("events", f"{name}{i}".encode(), qos=1)

    threads = [threading.Thread(target=produce, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    publisher.close(timeout=5.0)  # waits for the acknowledgements, then says stopped
    assert outbox.count() == 0
    payloads = observer.wait_count(EVENTS, 120)
    assert sorted(payloads) == sorted(f"{n}{i}".encode() for n in "ab" for i in range(60))
    for name in "ab":  # each producer's messages in its own order
        assert [p for p in payloads if p.startswith(name.encode())] == [f"{name}{i}".encode() for i in range(60)]
    assert observer.wait_count(STATUS, 2) == [b"online", b"stopped"]


def test_retained_qos1_state_goes_out_once_per_connect_and_survives_restarts(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    config = f"{PREFIX}/config"
    outbox = GatedOutbox(tmp_path / "outbox.db")
    publisher = publishers(settings(broker.port), outbox)
    wait_until("connected", lambda: publisher.health().connected)
    broker.stop()
    wait_until("disconnect noticed", lambda: not publisher.health().connected)
    publisher.publish("config", b"v1", qos=1, retain=True)
    publisher.publish("config", b"v2", qos=1, retain=True)
    outbox.gate.clear()
    broker.start()
    observer = observers(broker)
    outbox.gate.set()
    # Still in the outbox, so the outbox replay alone carries it: not re-published on top (v2, v1, v2).
    assert observer.wait_count(config, 2) == [b"v1", b"v2"]
    wait_until("outbox empty", lambda: outbox.count() == 0)
    marker_arrived(observer, through(publisher))  # nothing handed before it is still on its way
    assert observer.payloads(config) == [b"v1", b"v2"]

    broker.stop()  # acknowledged and gone from the outbox: now only the publisher's memory has it
    broker.start()
    wait_until("reconnected twice", lambda: publisher.health().reconnects == 2, timeout=6.0)
    assert payload_by_name(retained(broker.host, broker.port, DEVICE, ("config",))) == {
        "config": b"v2",
        "status": b"online",
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "[Errno 111] Connection refused"),
        (ConnectionResetError(), "ConnectionResetError"),  # no message of its own: the type says what happened
        (None, "no reason given"),
    ],
)
def test_a_connect_error_is_never_described_by_an_empty_line(error: BaseException | None, expected: str) -> None:
    assert describe_connect_error(error, settings(1883)) == expected

"""Frame loop -> outbox -> paho: no wait for the disk or a backlog, every drop counted.

Against a real Mosquitto (tests/broker.py) and real SQLite files. Waits are on conditions with
timeouts; the one timing bound (a backlog drain) is generous and relative to nothing CPU-bound.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.transport.mqtt import MqttPublisher
from agent.transport.outbox import NewMessage, Outbox, OutboxError, OutboxMessage
from tests.agent.transport import test_mqtt
from tests.agent.transport.test_mqtt import EVENTS, PREFIX, seqs, settings, wait_until
from tests.broker import Broker, free_port

observers = test_mqtt.observers  # the fixtures, shared
publishers = test_mqtt.publishers

BACKLOG = 10_000
LOOP_CALLS = 200


class ControlledOutbox(Outbox):
    """An outbox a test can break (every store fails, like a full disk), hold (stores wait) or gate (replay waits)."""

    def __init__(self, path: Path, **bounds: float) -> None:
        super().__init__(path, **bounds)  # type: ignore[arg-type]
        self.broken = False
        self.store_gate = threading.Event()
        self.store_gate.set()
        self.replay_gate = threading.Event()
        self.replay_gate.set()

    def store(
        self, messages: Sequence[NewMessage], remove: Iterable[int] = (), on_commit: Callable[[], None] | None = None
    ) -> list[int]:
        self.store_gate.wait(timeout=30)
        if self.broken and messages:
            raise OutboxError(f"outbox {self.path}: cannot store messages: database or disk is full")
        return super().store(messages, remove, on_commit)

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        self.replay_gate.wait(timeout=10)
        return super().pending(after_id, limit)


class Counter:
    """A separate MQTT client that keeps the payloads seen per topic, cheap to wait on for thousands of messages."""

    def __init__(self, broker: Broker) -> None:
        self.payloads: dict[str, list[bytes]] = {}
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"counter-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = lambda client, *args: client.subscribe(f"{PREFIX}/#", qos=1)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(5.0):
            self.close()
            raise TimeoutError("counter not subscribed within 5 s")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.payloads.setdefault(message.topic, []).append(message.payload)
            self._changed.notify_all()

    def count(self, topic: str) -> int:
        with self._changed:
            return len(self.payloads.get(topic, ()))

    def wait_count(self, topic: str, count: int, timeout: float) -> list[bytes]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.payloads.get(topic, ())) >= count, timeout):
                raise AssertionError(
                    f"{len(self.payloads.get(topic, ()))} of {count} messages on {topic} in {timeout} s"
                )
            return list(self.payloads.get(topic, ()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def counters() -> Iterator[Callable[[Broker], Counter]]:
    made: list[Counter] = []

    def make(broker: Broker) -> Counter:
        made.append(Counter(broker))
        return made[-1]

    yield make
    for counter in made:
        counter.close()


@pytest.fixture
def roomy_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that queues without limit for a slow subscriber: Mosquitto drops past 1000 by default."""
    running = Broker(tmp_path, extra_config="max_queued_messages 0\n").start()
    yield running
    running.stop()


def event(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def test_a_large_backlog_drains_while_the_loops_publishes_return_at_once(
    tmp_path: Path, roomy_broker: Broker, counters, publishers
) -> None:
    broker = roomy_broker
    outbox = ControlledOutbox(tmp_path / "outbox.db", max_messages=2 * BACKLOG)
    publisher = publishers(settings(broker.port), outbox)
    wait_until("connected", lambda: publisher.health().connected)
    broker.stop()
    wait_until("disconnect noticed", lambda: not publisher.health().connected)
    for _ in range(BACKLOG):  # an outage's worth of events
        publisher.publish_sequenced("events", event)
    assert publisher.wait_stored(60.0)
    assert outbox.count() == BACKLOG

    outbox.replay_gate.clear()  # the replay waits until the counter listens (the broker forgets everything)
    broker.start()
    counter = counters(broker)
    wait_until("reconnected", lambda: publisher.health().connected, timeout=10)
    outbox.replay_gate.set()

    slowest = 0.0
    seen_at_calls: list[int] = []
    for call in range(LOOP_CALLS):
        # Spread the calls over the drain by what has arrived, not by sleeping.
        counter.wait_count(EVENTS, call * (BACKLOG // (LOOP_CALLS + 50)), timeout=60)
        seen_at_calls.append(counter.count(EVENTS))
        started = time.perf_counter()
        publisher.publish_sequenced("events", event)
        publisher.publish("detections", b"{}", qos=0)
        publisher.publish("alerts", b"%d" % call, qos=1)
        slowest = max(slowest, time.perf_counter() - started)
    print(
        f"slowest loop-side call while the backlog drained: {slowest * 1e3:.1f} ms; seen at calls {seen_at_calls[::40]}"
    )
    assert slowest < 0.25, "the frame loop waited for the backlog or the disk"
    assert seen_at_calls[-1] < BACKLOG, "the calls were made while the backlog drained"

    payloads = counter.wait_count(EVENTS, BACKLOG + LOOP_CALLS, timeout=120)
    assert seqs(payloads) == list(range(1, BACKLOG + LOOP_CALLS + 1)), "in order, none twice, none lost"
    assert counter.wait_count(f"{PREFIX}/alerts", LOOP_CALLS, 30) == [b"%d" % i for i in range(LOOP_CALLS)]
    wait_until("outbox emptied", lambda: publisher.health().outbox_pending == 0, timeout=30)
    publisher.close(timeout=3.0)
    assert len(counter.payloads[EVENTS]) == BACKLOG + LOOP_CALLS


def test_work_per_insert_stays_constant_at_the_bound(tmp_path: Path) -> None:
    """No COUNT(*) or table scan per insert: the statements issued are the same at the bound as when nearly empty."""
    with Outbox(tmp_path / "outbox.db", max_messages=100) as outbox:
        statements: list[str] = []
        db = outbox._file.db
        assert db is not None
        db.set_trace_callback(statements.append)

        def issued(insert: Callable[[], object]) -> list[str]:
            statements.clear()
            insert()
            return [s.split("(")[0].strip() for s in statements]

        def one(payload: bytes) -> list[int]:
            return outbox.store([NewMessage("t", payload)])

        first = issued(lambda: one(b"first"))
        for i in range(150):
            one(b"%d" % i)
        assert outbox.count() == 100 and outbox.dropped_full == 51
        at_bound = issued(lambda: one(b"at the bound"))
        batch = issued(lambda: outbox.store([NewMessage("t", b"%d" % i) for i in range(20)], remove=[1, 2]))
        everything = " ".join(statements)
        db.set_trace_callback(None)

        assert outbox.count() == 100 == db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        for issued_statements in (first, at_bound):
            assert not any("COUNT" in s.upper() for s in issued_statements), issued_statements
        assert "COUNT" not in everything.upper()
        # At the bound one more DELETE (the oldest row, by primary key) and the drop counter's update.
        assert len(at_bound) <= len(first) + 3, (first, at_bound)
        assert sum(s.startswith("INSERT INTO messages") for s in batch) == 20
        assert sum(s.startswith("BEGIN") for s in batch) == 1, "a batch is one transaction"
        plan = db.execute("EXPLAIN QUERY PLAN DELETE FROM messages WHERE created_at < 0").fetchall()
        assert "messages_created_at" in " ".join(str(row[-1]) for row in plan), plan


def test_drops_by_the_count_bound_are_counted_in_health(tmp_path: Path, publishers) -> None:
    outbox = Outbox(tmp_path / "outbox.db", max_messages=3)
    publisher = publishers(settings(free_port()), outbox)  # nothing listens there
    for i in range(5):
        publisher.publish("events", b"%d" % i, qos=1)
    assert publisher.wait_stored(10.0)
    health = publisher.health()
    assert health.outbox_pending == 3 and health.outbox_dropped == 2
    assert health.extra["outbox_dropped_full"] == 2 and health.extra["outbox_dropped_old"] == 0
    assert [m.payload for m in outbox.pending()] == [b"2", b"3", b"4"]


def test_a_row_paho_can_never_send_is_dropped_counted_and_does_not_block_the_rest(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.store(
        [
            NewMessage(EVENTS, b"before"),
            NewMessage(f"{PREFIX}/+/wildcard", b"unsendable"),  # left by an older version, say
            NewMessage(EVENTS, b"after"),
        ]
    )
    observer = observers(broker)
    publisher = publishers(settings(broker.port), outbox)
    assert observer.wait_count(EVENTS, 2) == [b"before", b"after"]
    wait_until("outbox empty", lambda: outbox.count() == 0)
    assert publisher.health().extra["dropped_unsendable"] == 1


def test_a_full_memory_queue_drops_and_counts_plain_messages_and_refuses_numbers(tmp_path: Path, publishers) -> None:
    outbox = ControlledOutbox(tmp_path / "outbox.db")
    outbox.store_gate.clear()  # a disk so slow that the writer falls behind
    publisher = MqttPublisher(settings(free_port()), outbox, queue_limit=5).start()
    try:
        for i in range(8):
            publisher.publish("events", b"%d" % i, qos=1)
        with pytest.raises(OutboxError, match="wait for the writer"):
            publisher.publish_sequenced("events", event)
        health = publisher.health()
        assert health.extra["dropped_overflow"] == 3 and health.extra["unstored"] == 5
        outbox.store_gate.set()
        assert publisher.wait_stored(10.0)
        assert [m.payload for m in outbox.pending()] == [b"0", b"1", b"2", b"3", b"4"]
        assert publisher.publish_sequenced("events", event) == 1  # the refused call took no number
    finally:
        outbox.store_gate.set()
        publisher.close(timeout=0.2)


def test_qos1_while_the_outbox_is_unwritable_and_the_broker_down_is_held_and_delivered(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    outbox = ControlledOutbox(tmp_path / "outbox.db")
    outbox.broken = True
    publisher = MqttPublisher(settings(broker.port), outbox, held_limit=2).start()
    try:
        wait_until("connected", lambda: publisher.health().connected)
        broker.stop()
        wait_until("disconnect noticed", lambda: not publisher.health().connected)
        for name in (b"a", b"b", b"c", b"d"):
            publisher.publish("alerts", name, qos=1)
        wait_until("held in memory", lambda: publisher.health().extra["unstored"] == 0)
        health = publisher.health()
        assert health.extra["held_in_memory"] == 2 and health.extra["dropped_overflow"] == 2
        assert health.extra["outbox_writable"] is False and health.extra["outbox_errors"] >= 1

        outbox.replay_gate.clear()  # hold the sending until the observer listens
        broker.start()
        observer = observers(broker)
        outbox.replay_gate.set()
        assert observer.wait_count(f"{PREFIX}/alerts", 2) == [b"c", b"d"]  # the newest two, held
        wait_until("held messages acknowledged", lambda: publisher.health().extra["held_in_memory"] == 0)
    finally:
        outbox.replay_gate.set()
        publisher.close(timeout=0.5)


def test_a_numbered_message_is_never_sent_before_it_is_stored(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    """Sending it unstored could let a crash give its number out again; it waits, and later numbers are refused."""
    outbox = ControlledOutbox(tmp_path / "outbox.db")
    observer = observers(broker)
    publisher = publishers(settings(broker.port), outbox)
    wait_until("connected", lambda: publisher.health().connected)
    outbox.broken = True
    assert publisher.publish_sequenced("events", event) == 1  # queued before anyone knows the disk is full
    wait_until("the failure noticed", lambda: publisher.health().extra["outbox_writable"] is False)
    with pytest.raises(OutboxError):
        publisher.publish_sequenced("events", event)  # the frame loop holds its events on this
    publisher.publish("alerts", b"marker", qos=1)  # held and sent from memory, after the refused event
    observer.wait_count(f"{PREFIX}/alerts", 1)
    assert observer.payloads(EVENTS) == [], "an unstored numbered message went out"

    outbox.broken = False  # space is back: the writer's retry stores it
    assert seqs(observer.wait_count(EVENTS, 1)) == [1]
    assert publisher.publish_sequenced("events", event) == 2
    assert seqs(observer.wait_count(EVENTS, 2)) == [1, 2]
    assert publisher.health().extra["outbox_writable"] is True


def test_close_stores_what_was_queued_and_leaves_it_for_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        publisher = MqttPublisher(settings(free_port()), outbox).start()
        seq = [publisher.publish_sequenced("events", event) for _ in range(50)][-1]
        publisher.close(timeout=0.5)
        assert outbox.count() == 50
    with Outbox(path) as outbox:
        assert outbox.counter("events") == seq == 50
        assert seqs([m.payload for m in outbox.pending(limit=100)]) == list(range(1, 51))
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM counters WHERE name = 'events'").fetchone() == (50,)
    db.close()


def test_a_stalled_disk_stalls_neither_the_loop_nor_pahos_thread(
    tmp_path: Path, broker: Broker, observers, publishers
) -> None:
    """The writer waits for the disk alone: QoS 0 keeps flowing and reconnects complete meanwhile."""
    outbox = ControlledOutbox(tmp_path / "outbox.db")
    observer = observers(broker)
    publisher = publishers(settings(broker.port), outbox)
    wait_until("connected", lambda: publisher.health().connected)
    outbox.store_gate.clear()  # every store now hangs, like an SD card stuck in a long fsync
    try:
        started = time.perf_counter()
        publisher.publish_sequenced("events", event)
        publisher.publish("alerts", b"queued", qos=1)
        assert time.perf_counter() - started < 0.25, "the loop waited for the disk"
        broker.stop()
        broker.start()  # paho's thread reconnects while the writer is stuck
        wait_until("reconnected", lambda: publisher.health().reconnects == 1, timeout=10)
        observer = observers(broker)
        publisher.publish("detections", b"live", qos=0)
        observer.wait_count(f"{PREFIX}/detections", 1)
        assert observer.payloads(EVENTS) == [], "nothing goes out before it is stored"
    finally:
        outbox.store_gate.set()
    assert seqs(observer.wait_count(EVENTS, 1)) == [1]
    assert observer.wait_count(f"{PREFIX}/alerts", 1) == [b"queued"]

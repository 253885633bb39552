"""MQTT transport for the Publisher interface: the agent's publisher over its durable outbox.

QoS 1 messages go through the durable outbox (agent/transport/outbox.py): publish() queues them
in memory and returns (agent/transport/spool.py); the courier thread (agent/transport/courier.py)
stores them, group-committed, hands stored rows to paho when connected, and deletes them on
PUBACK. On every connect the courier announces `status` = `online`, re-publishes the retained
state (the broker may have restarted without persistence) and then replays every pending
outbox row in id order. paho runs its own network thread (loop_start) and reconnects forever
with exponential backoff; its callbacks only record state, so neither the frame loop nor paho's
thread ever waits for the disk or for a backlog. The connection itself (first attempt, reconnects,
subscriptions, the log of its life, close) is agent/transport/client.py's, shared with the operator's tools.

Commands come the other way: subscribe() registers a handler per topic, subscribed
again on every connect (clean sessions keep no subscriptions). Handlers run on paho's
network thread and are shielded from it: whatever they raise is logged, so no payload
can stop the network thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt import __version__ as PAHO_VERSION
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.transport import topics
from agent.transport.client import ConnectionHooks, MqttConnection
from agent.transport.connection import MqttSettings
from agent.transport.courier import Courier
from agent.transport.handover import QUEUED, RetainedStates
from agent.transport.outbox import NewMessage, Outbox, OutboxError
from agent.transport.publisher import HELD_IN_MEMORY_MAX, PublisherHealth, ReplyTo
from agent.transport.spool import Spool
from agent.transport.topics import checked_suffix

__all__ = ["MqttPublisher"]

log = logging.getLogger("yolo_edge.mqtt")

QUEUE_LIMIT = 10_000  # QoS 1 messages waiting in memory for the writer (a disk far slower than the loop)


class MqttPublisher:
    """Publisher over MQTT (5, or 3.1.1 where the broker speaks no newer) with a durable outbox. subscribe() first,
    start(), then publish(); close() at the end.

    The outbox is the caller's: close() leaves it open. Thread-safe: the frame loop,
    the stats timer and paho's network thread may all call in.
    queue_limit: QoS 1 messages waiting in memory for the writer at most; held_limit: QoS 1 messages
    held in memory while the outbox cannot store them at most. Past either, messages are dropped and counted.
    """

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        queue_limit: int = QUEUE_LIMIT,
        held_limit: int = HELD_IN_MEMORY_MAX,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        hooks = ConnectionHooks(
            connected=lambda: self._courier.connected(),  # it announces, re-publishes and replays on its own thread
            disconnected=lambda _was_connected: self._courier.disconnected(),
            message=self._on_message,
            published=self._on_publish,
        )
        self._link = MqttConnection(settings, hooks)
        self._client = client = self._link.client
        if not hasattr(client, "drop_out_messages"):
            raise RuntimeError(f"paho-mqtt >= 2.2 is required (drop_out_messages); found {PAHO_VERSION}")
        # The broker publishes this if we vanish without a DISCONNECT (crash, power loss, network gone).
        client.will_set(self._topic(topics.STATUS), topics.OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)  # unlimited: the courier's window bounds what paho holds

        self._retained = RetainedStates()
        self._spool = Spool(outbox, queue_limit, held_limit, wake=lambda: self._courier.wake())
        # A window of a few inflight rounds keeps paho's own queue short yet never empty while a backlog drains.
        window = max(4 * settings.max_inflight, 200)
        self._courier = Courier(client, outbox, self._spool, self._retained, self._topic(topics.STATUS), window)
        # _lock guards the small state below; it is never held while calling paho or the outbox.
        self._lock = threading.Lock()
        self._handlers: dict[str, _Handler] = {}  # full topic -> handler
        self._started = False
        self._closing = False
        self._dropped_qos0 = 0
        self._refused_by_broker = 0  # QoS 1 messages an MQTT 5 PUBACK refused (the ACL, mostly)

    # -- the Publisher interface ---------------------------------------------------------------

    def start(self) -> MqttPublisher:
        """Connect in the background; returns at once even when the broker is unreachable."""
        with self._lock:
            if self._started or self._closing:
                return self
            self._started = True
        try:
            self._spool.load_counters()
        except OutboxError as error:  # each counter is read on first use instead; the courier retries the file
            self._courier.failures.failed(error)
        self._courier.start()
        self._link.start()
        return self

    def wait_first_attempt(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the first connection attempt to end; True if it connected.

        Lets a caller that is about to publish QoS 0 messages at once (the first frames of a
        video) not lose them to the few milliseconds a connection takes, without waiting on a
        broker that refuses or is down: a failed attempt ends the wait too.
        """
        self._link.wait_first_attempt(timeout_s)
        return self._link.status().connected

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish to `<topic_prefix>/<topic>`.

        QoS >= 1 is queued for the outbox and returns at once; it is sent once stored (while the
        outbox cannot be written: held in memory, bounded, and sent from there). QoS 0 goes out only
        while connected (else it is counted in health().extra["dropped_qos0"]). Retained messages
        are also kept in memory and re-published on every connect. Never waits for the network or the disk.
        """
        self._publish_full(self._topic(topic), payload, qos, retain)

    def publish_absolute(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """publish() to a topic outside `<topic_prefix>/`, such as Home Assistant's discovery topic."""
        self._publish_full(checked_suffix(topic), payload, qos, retain)

    def subscribe(
        self, topic: str, handler: Callable[..., None], absolute: bool = False, replies: bool = False
    ) -> None:
        """Call handler(payload) for each message on `<topic_prefix>/<topic>` (on `topic` itself when absolute);
        with replies, handler(payload, reply_to): the MQTT 5 response topic and correlation data, or None.

        handler runs on paho's network thread: it must be quick and must not wait for the frame loop.
        """
        full = checked_suffix(topic) if absolute else self._topic(topic)
        with self._lock:
            self._handlers[full] = _Handler(handler, replies)
        self._link.subscribe([full])  # now if connected, and on every connect

    def publish_reply(self, reply_to: ReplyTo, payload: bytes) -> None:
        """QoS 0 to the response topic an MQTT 5 command named, with its correlation data, while connected."""
        properties = Properties(PacketTypes.PUBLISH)
        if reply_to.correlation is not None:
            properties.CorrelationData = reply_to.correlation
        if not self._courier.is_connected:
            with self._lock:
                self._dropped_qos0 += 1
            return
        try:
            self._client.publish(reply_to.topic, payload, qos=0, properties=properties)
        except ValueError as error:  # a response topic with wildcards: the requester's mistake, not ours
            log.warning("cannot answer on response topic %.80r: %s", reply_to.topic, error)

    def _publish_full(self, full: str, payload: bytes, qos: int, retain: bool) -> None:
        if qos >= 1:
            if retain:  # before queueing: the courier may store it (and settle this) at once
                self._retained.remember(full, payload, qos, QUEUED)
            if not self._spool.put(NewMessage(full, bytes(payload), qos, retain)) and retain:
                self._retained.settle(full, payload, None)  # not queued: only memory has it now
            return
        if retain:
            self._retained.remember(full, payload, qos, None)
        if not self._courier.send_now(full, payload, qos, retain):
            with self._lock:
                self._dropped_qos0 += 1

    def publish_sequenced(self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False) -> int:
        """Queue `build(seq)` for `<topic_prefix>/<topic>` with the next seq of the counter named `topic`; return seq.

        Always durable (whatever qos says): the number only means something if it is stored
        with its message, which the writer does in one transaction before the message is sent.
        Returns without waiting for the disk. Raises OutboxError, taking no number, while the
        outbox cannot be written (numbered messages wait for it) or the writer's queue is full.
        """
        full = self._topic(topic)
        # Retained state is noted before the message is queued: the courier may store (and settle) it at once.
        remember = (lambda payload: self._retained.remember(full, payload, max(qos, 1), QUEUED)) if retain else None
        return self._spool.put_sequenced(full, build, max(qos, 1), retain, counter=topic, numbered=remember)

    def wait_stored(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until every QoS 1 message published so far is in the outbox (or held); True if so."""
        deadline = time.monotonic() + timeout_s
        while self._spool.queued and time.monotonic() < deadline:
            self._courier.progress.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._courier.progress.clear()
        return not self._spool.queued

    def health(self) -> PublisherHealth:
        """Connection state and outbox figures for stats; reconnects counts connects after the first.

        outbox_pending: QoS 1 messages not yet acknowledged, stored or queued for the writer.
        """
        stored, queued = self.outbox.counted(lambda: self._spool.queued)
        link = self._link.status()
        with self._lock:
            return PublisherHealth(
                connected=link.connected,
                outbox_pending=stored + queued,
                outbox_dropped=self.outbox.dropped,
                reconnects=max(0, link.connects - 1),
                extra={
                    "outbox_errors": self._courier.failures.errors,
                    "outbox_writable": self.outbox.available and not self._courier.failures.failing,
                    **self.outbox.figures(),
                    "unstored": queued,
                    "held_in_memory": self._spool.held_count,
                    "dropped_overflow": self._spool.dropped_overflow,
                    "dropped_unsendable": self._courier.dropped_unsendable,
                    "dropped_qos0": self._dropped_qos0,
                    "refused_by_broker": self._refused_by_broker,
                    "inflight": self._courier.inflight,
                    "refused": link.refused,
                },
            )

    def close(self, timeout: float = 3.0) -> None:
        """Publish `status` = `stopped`, wait up to `timeout` seconds for the outbox to empty, disconnect cleanly.

        A clean DISCONNECT tells the broker not to send the `offline` will. What was queued is
        stored first; unacknowledged messages stay in the outbox for the next run. Idempotent.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True  # from now on a (re)connect announces "stopped", not "online"
            started = self._started
        self._link.begin_close()
        if not started:
            self._courier.stop(timeout)  # stores what was published before start()
            return
        deadline = time.monotonic() + timeout
        self._courier.close_requested()
        while not self._flushed() and time.monotonic() < deadline:
            self._courier.progress.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._courier.progress.clear()
        # The last store (queued messages, acknowledged rows) may take a slow disk's fsync or two.
        self._courier.stop(max(1.0, deadline - time.monotonic()))
        lost = self._spool.queued + self._spool.held_count
        if lost:  # the outbox refused them to the end: memory was all they had
            log.warning("%d QoS 1 messages could not be stored in %s and are lost", lost, self.outbox.path)
        self._link.close()  # what paho still holds unacknowledged, the outbox keeps for the next run

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- hooks (paho's network thread): state only, never the disk --------------------------------

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            handler = self._handlers.get(message.topic)
        if handler is None:
            return
        if handler.replies:
            handler.call(bytes(message.payload), _reply_to(message))
        else:
            handler.call(bytes(message.payload))

    def _on_publish(self, mid: int, reason: ReasonCode) -> None:
        # An MQTT 5 PUBACK may refuse (not authorized by the ACL, quota): sending it again would be
        # refused again, so it counts as answered, as a 3.1.1 broker's silent drop did; it is logged.
        # paho holds its message lock here: only note it; the courier deletes the row.
        if reason.is_failure:
            with self._lock:
                self._refused_by_broker += 1
                count = self._refused_by_broker
            if math.log10(count).is_integer():  # the 1st, 10th, 100th...: a wrong ACL must not flood the log
                log.warning("the broker refused %d message(s) so far, the last with: %s; check its ACL", count, reason)
        self._courier.acked(mid)

    # -- helpers -------------------------------------------------------------------------------

    def _topic(self, topic: str) -> str:
        return f"{self.settings.topic_prefix}/{checked_suffix(topic)}"

    def _flushed(self) -> bool:
        """close(): nothing left to wait for (all stored and acknowledged, held ones too; `stopped` acknowledged)."""
        if self._spool.queued and not self._courier.failures.failing:
            return False
        if not self._courier.is_connected:
            return not self.outbox.count() and not self._spool.queued
        return not (self.outbox.count() or self._spool.held_count) and self._courier.stopped_acknowledged()


@dataclass(frozen=True)
class _Handler:
    call: Callable[..., None]
    replies: bool  # called with the message's ReplyTo (or None) as well


def _reply_to(message: mqtt.MQTTMessage) -> ReplyTo | None:
    """The response topic and correlation data of an MQTT 5 message; None for a 3.1.1 one or without them."""
    topic = getattr(message.properties, "ResponseTopic", None)
    if not topic:
        return None
    correlation = getattr(message.properties, "CorrelationData", None)
    return ReplyTo(str(topic), bytes(correlation) if correlation is not None else None)

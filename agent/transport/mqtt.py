"""MQTT transport for the Publisher interface: the agent's publisher with its durable outbox hand-over.

QoS 1 messages go through the durable outbox (agent/transport/outbox.py): stored first, handed
to paho when connected, deleted on PUBACK. On every connect the publisher announces
`status` = `online`, re-publishes the retained state it holds (the broker may have
restarted without persistence) and then hands over every pending outbox message in id
order. paho runs its own network thread (loop_start) and reconnects forever with
exponential backoff, so nothing here ever blocks the frame loop on the network.

Commands come the other way: subscribe() registers a handler per topic, subscribed
again on every connect (clean sessions keep no subscriptions). Handlers run on paho's
network thread and are shielded from it: whatever they raise is logged, so no payload
can stop the network thread.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt import __version__ as PAHO_VERSION
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.transport import topics
from agent.transport.connection import MqttSettings, closed_early_hint, describe_connect_error, make_client
from agent.transport.handover import Handed, OutboxLink, Retained
from agent.transport.outbox import Outbox, OutboxError
from agent.transport.publisher import PublisherHealth
from agent.transport.topics import checked_suffix

__all__ = ["MqttPublisher"]

log = logging.getLogger("yolo_edge.mqtt")

_BATCH = 500  # outbox rows read per query while handing over a backlog
_ACK_BATCH = 100  # acknowledged rows deleted per transaction while a backlog drains


class MqttPublisher:
    """Publisher over MQTT v3.1.1 with a durable outbox. subscribe() first, start(), then publish(); close() at the end.

    The outbox is the caller's: close() leaves it open. Thread-safe: the frame loop,
    the stats timer and paho's network thread may all call in.
    """

    def __init__(self, settings: MqttSettings, outbox: Outbox) -> None:
        self.settings = settings
        self.outbox = outbox
        self._client = client = make_client(settings, settings.client_id)
        if not hasattr(client, "drop_out_messages"):
            raise RuntimeError(f"paho-mqtt >= 2.2 is required (drop_out_messages); found {PAHO_VERSION}")
        # The broker publishes this if we vanish without a DISCONNECT (crash, power loss, network gone).
        client.will_set(self._topic(topics.STATUS), topics.OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, math.ceil(settings.reconnect_max_s)))
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)  # unlimited: the outbox bounds what can pile up
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message

        # _send_lock serializes handing messages to paho, so outbox rows go out in id order and
        # none twice per connection. _lock guards the small state below; it is never held while
        # calling paho or the outbox, so paho's thread can always take it from a callback.
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._handed_upto = 0  # highest outbox id handed in this connection (under _send_lock)
        self._handed = Handed()
        self._link = OutboxLink(outbox)
        self._retained: dict[str, Retained] = {}
        self._handlers: dict[str, Callable[[bytes], None]] = {}  # full topic -> handler
        self._status_info: mqtt.MQTTMessageInfo | None = None
        self._connected = False
        self._connects = 0
        self._started = False
        self._closing = False
        self._dropped_qos0 = 0
        self._last_pending = 0
        self._unreachable = False  # log one line per failure streak, not one per retry
        self._refused = False
        self._acked = threading.Event()
        self._disconnected = threading.Event()
        self._first_attempt = threading.Event()  # set once the first connection attempt succeeded or failed

    # -- the Publisher interface ---------------------------------------------------------------

    def start(self) -> MqttPublisher:
        """Connect in the background; returns at once even when the broker is unreachable."""
        with self._lock:
            if self._started or self._closing:
                return self
            self._started = True
        self._client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive)
        self._client.loop_start()
        return self

    def wait_first_attempt(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the first connection attempt to end; True if it connected.

        Lets a caller that is about to publish QoS 0 messages at once (the first frames of a
        video) not lose them to the few milliseconds a connection takes, without waiting on a
        broker that refuses or is down: a failed attempt ends the wait too.
        """
        self._first_attempt.wait(timeout_s)
        with self._lock:
            return self._connected

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish to `<topic_prefix>/<topic>`.

        QoS >= 1 is stored in the outbox first; QoS 0 goes out only while connected (else it
        is counted in health().extra["dropped_qos0"]). Retained messages are also kept in
        memory and re-published on every connect. Never waits for the network (it may wait for one fsync of the outbox).
        """
        self._publish_full(self._topic(topic), payload, qos, retain)

    def publish_absolute(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """publish() to a topic outside `<topic_prefix>/`, such as Home Assistant's discovery topic."""
        self._publish_full(checked_suffix(topic), payload, qos, retain)

    def subscribe(self, topic: str, handler: Callable[[bytes], None], absolute: bool = False) -> None:
        """Call handler(payload) for each message on `<topic_prefix>/<topic>` (on `topic` itself when absolute).

        handler runs on paho's network thread: it must be quick and must not wait for the frame loop.
        """
        full = checked_suffix(topic) if absolute else self._topic(topic)
        with self._lock:
            self._handlers[full] = handler
            connected = self._connected
        if connected:  # otherwise the next connect subscribes it
            self._client.subscribe(full, qos=1)

    def _publish_full(self, full: str, payload: bytes, qos: int, retain: bool) -> None:
        if qos >= 1:
            try:
                row = self.outbox.add(full, payload, qos, retain)
            except OutboxError as error:
                self._link.failed(error)
                self._remember(full, payload, qos, retain, None)
                # Not durable, but while connected it still reaches the broker instead of vanishing.
                with self._send_lock:
                    if self._connected:
                        self._hand(full, payload, qos, retain, None)
                return
            self._link.ok()
            self._remember(full, payload, qos, retain, row)
            self.flush()
            return
        self._remember(full, payload, qos, retain, None)
        with self._send_lock:
            sent = self._connected and self._hand(full, payload, qos, retain, None) is not None
        if not sent:
            with self._lock:
                self._dropped_qos0 += 1

    def publish_sequenced(self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False) -> int:
        """Store `build(seq)` for `<topic_prefix>/<topic>` with the next seq of the counter named `topic`; return seq.

        Always durable (whatever qos says): the number only means something if it is stored
        with its message. Raises OutboxError when the outbox cannot be written, since no
        number can be given out then without risking a repeat.
        """
        full = self._topic(topic)
        try:
            seq = self.outbox.add_sequenced(full, build, max(qos, 1), retain, counter=topic)
        except OutboxError as error:
            self._link.failed(error)
            raise
        self._link.ok()
        self.flush()
        return seq

    def flush(self) -> None:
        """Hand every outbox row not yet handed in this connection to paho (no-op when disconnected)."""
        with self._send_lock:
            self._drain()

    def health(self) -> PublisherHealth:
        """Connection state and outbox figures for stats; reconnects counts connects after the first."""
        try:
            pending = self.outbox.count()
            self._last_pending = pending
        except OutboxError as error:
            self._link.failed(error)
            pending = self._last_pending
        with self._lock:
            return PublisherHealth(
                connected=self._connected,
                outbox_pending=pending,
                outbox_dropped=self.outbox.dropped,
                reconnects=max(0, self._connects - 1),
                extra={
                    "outbox_errors": self._link.errors,
                    "dropped_qos0": self._dropped_qos0,
                    "inflight": self._handed.outbox_inflight,
                    "refused": self._refused,
                },
            )

    def close(self, timeout: float = 3.0) -> None:
        """Publish `status` = `stopped`, wait up to `timeout` seconds for the outbox to empty, disconnect cleanly.

        A clean DISCONNECT tells the broker not to send the `offline` will. Unacknowledged
        messages stay in the outbox for the next run. Idempotent.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True  # from now on a (re)connect announces "stopped", not "online"
            started = self._started
        if not started:
            return
        deadline = time.monotonic() + timeout
        with self._send_lock:
            if self._connected:
                info = self._hand(self._topic(topics.STATUS), topics.STOPPED, 1, True, None)
                with self._lock:
                    self._status_info = info
        while not self._flushed() and time.monotonic() < deadline:
            self._acked.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._acked.clear()
        self._link.remove_acked()
        # paho's loop_forever keeps running after loop_stop() until every QoS > 0 message it holds
        # is acknowledged; the outbox keeps them for the next run, so let paho forget them.
        self._client.drop_out_messages()
        was_connected = self._connected
        self._client.disconnect()
        if was_connected:
            self._disconnected.wait(1.0)
        self._client.loop_stop()

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- handing messages to paho (caller holds _send_lock) --------------------------------------

    def _hand(self, topic: str, payload: bytes, qos: int, retain: bool, row: int | None) -> mqtt.MQTTMessageInfo | None:
        """Give one message to paho; None if paho did not take it (connection just dropped)."""
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as error:
            # A row paho can never send (invalid topic, oversized payload) must not block the
            # rows behind it forever.
            log.error("dropping outbox message %s on %s: %s", row, topic, error)
            if row is not None:
                self._link.remove(row)
            return None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # NO_CONN: paho keeps a QoS 1 copy, but on_connect drops it; the outbox re-sends.
            return None
        with self._lock:
            already_acked = self._handed.handed(info.mid, row)
        if already_acked and row is not None:
            self._link.remove(row)
        return info

    def _drain(self) -> None:
        while self._connected:
            try:
                batch = self.outbox.pending(after_id=self._handed_upto, limit=_BATCH)
            except OutboxError as error:
                self._link.failed(error)
                return
            for message in batch:
                if self._hand(message.topic, message.payload, message.qos, message.retain, message.id) is None:
                    return  # connection lost: the next connect starts again from the oldest row
                self._handed_upto = message.id
            if len(batch) < _BATCH:
                return

    # -- paho callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            # Bad credentials, not authorized, ...: paho retries, but this is not a connection.
            with self._lock:
                first, self._refused = not self._refused, True
            if first:
                log.error("%s:%d refused the connection: %s; retrying", self.settings.host, self.settings.port, reason)
            self._first_attempt.set()
            return
        with self._send_lock:
            # paho keeps its own copy of every QoS 1 message left unacknowledged by the previous
            # connection and re-sends it right after this callback. The outbox re-sends those
            # rows below, in order, so paho's copies would only arrive twice and out of order.
            client.drop_out_messages()
            self._link.remove_acked()
            with self._lock:
                self._connected = True
                self._refused = self._unreachable = False
                self._connects += 1
                self._handed.clear()
                closing = self._closing
                retained = list(self._retained.items())
            self._handed_upto = 0
            self._disconnected.clear()
            log.info("connected to %s:%d", self.settings.host, self.settings.port)
            info = self._hand(self._topic(topics.STATUS), topics.STOPPED if closing else topics.ONLINE, 1, True, None)
            with self._lock:
                self._status_info = info
            for topic, state in retained:
                if state.row is None or not self._link.still_pending(state.row):
                    self._hand(topic, state.payload, state.qos, True, None)
            self._drain()
        with self._lock:
            subscribed = list(self._handlers)
        if subscribed:
            client.subscribe([(topic, 1) for topic in subscribed])
        self._acked.set()
        self._first_attempt.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, so the exception in flight is the reason.
        reason = describe_connect_error(sys.exc_info()[1], self.settings)
        with self._lock:
            first, self._unreachable = not self._unreachable, True
        if first:
            log.warning(
                "cannot reach %s:%d: %s; retrying every %g s at most",
                self.settings.host,
                self.settings.port,
                reason,
                max(1, math.ceil(self.settings.reconnect_max_s)),
            )
        self._first_attempt.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        with self._lock:
            was_connected, self._connected = self._connected, False
            closing = self._closing
        self._link.remove_acked()
        self._disconnected.set()
        if not was_connected:
            self._closed_before_connack(closing, reason)
            self._first_attempt.set()
            return
        if closing:
            log.info("disconnected from %s:%d", self.settings.host, self.settings.port)
        else:
            log.warning("disconnected from %s:%d: %s; reconnecting", self.settings.host, self.settings.port, reason)

    def _closed_before_connack(self, closing: bool, reason: ReasonCode) -> None:
        """A failed attempt: say why once per failure streak unless a refusal or connect error already did."""
        with self._lock:
            first = not (closing or self._refused or self._unreachable)
            self._unreachable = True
        if first:
            log.warning(
                "cannot reach %s:%d: it closed the connection before accepting it (%s)%s; retrying",
                self.settings.host,
                self.settings.port,
                reason,
                closed_early_hint(self.settings),
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            with self._lock:
                handler = self._handlers.get(message.topic)
            if handler is not None:
                handler(bytes(message.payload))
        except Exception:
            # A handler bug must not take paho's network thread down with it (publishing would stop).
            log.exception("handling an incoming message (mid %d) failed", message.mid)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        # MQTT 3.1.1 PUBACKs carry no reason code: reaching here means the broker has the message.
        with self._lock:
            row = self._handed.acked(mid)
            inflight = self._handed.outbox_inflight
        # One fsync per acknowledgement would make a backlog drain at the disk's pace, so
        # deletes are batched; a crash in between only means those rows go out once more.
        waiting = self._link.acknowledged(row) if row is not None else self._link.waiting()
        ready = waiting >= _ACK_BATCH or bool(waiting and not inflight)
        if ready:
            self._link.remove_acked()
        self._acked.set()

    # -- helpers -------------------------------------------------------------------------------

    def _topic(self, topic: str) -> str:
        return f"{self.settings.topic_prefix}/{checked_suffix(topic)}"

    def _remember(self, topic: str, payload: bytes, qos: int, retain: bool, row: int | None) -> None:
        if not retain:
            return
        with self._lock:
            if payload:
                self._retained[topic] = Retained(bytes(payload), qos, row)
            else:
                self._retained.pop(topic, None)  # an empty retained message clears the topic

    def _flushed(self) -> bool:
        """close(): nothing left to wait for (outbox empty and `stopped` acknowledged, if it was sent)."""
        try:
            if self.outbox.count():
                return False
        except OutboxError:
            return True
        with self._lock:
            status, connected = self._status_info, self._connected
        return not connected or status is None or status.is_published()

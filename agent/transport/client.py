"""One connection to the broker, whatever it is for: the paho callbacks, the first attempt and its outcome,
subscriptions, close.

The agent's publisher (mqtt.py) and the operator's session and subscriber (operator/) differ in what they
do with a connection, not in how they hold one: each used to wait for its first CONNACK, word a refused
subscription and close in its own way. Here it is written once. Two ways to start:

- start(): connect in the background and never block (the agent: a broker that is down must not stop
  the camera); the first attempt's outcome can be waited for; paho retries for ever.
- open(): connect and wait for the first answer, raising ConnectionError with one line when there is
  none or a refusal (the operator's tools: a wrong host or password is said at once, not retried).

After the first connection both ride out outages alike: paho reconnects with back-off, every connect
subscribes again to every topic asked for (the session expires on disconnect), and the connection's
life is logged one line per failure streak, not one per retry, unless `quiet` (a short command reports
its failures itself, as errors).
"""

from __future__ import annotations

import enum
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.transport.connection import MqttSettings, closed_early_hint, describe_connect_error, make_client

__all__ = ["Attempt", "ConnectionHooks", "ConnectionStatus", "MqttConnection", "Outcome"]

log = logging.getLogger("yolo_edge.mqtt")


class Outcome(enum.Enum):
    CONNECTED = "connected"
    REFUSED = "refused"  # the broker answered no: credentials, not authorized, ...
    UNREACHABLE = "unreachable"  # no connection was made: DNS, nothing listening, TLS
    CLOSED_EARLY = "closed early"  # the broker hung up before it answered
    NO_ANSWER = "no answer"  # nothing yet


@dataclass(frozen=True)
class Attempt:
    """How a connection's first attempt ended. detail: the broker's reason, or why it could not be reached."""

    outcome: Outcome
    detail: str = ""

    @property
    def connected(self) -> bool:
        return self.outcome is Outcome.CONNECTED

    def error(self, settings: MqttSettings, timeout_s: float) -> str | None:
        """The one line that says why it did not connect (None if it did)."""
        where = f"{settings.host}:{settings.port}"
        return {
            Outcome.CONNECTED: None,
            Outcome.REFUSED: f"{where} refused the connection: {self.detail}",
            Outcome.UNREACHABLE: f"cannot connect to {where}: {self.detail}",
            Outcome.CLOSED_EARLY: f"{where} closed the connection before accepting it{closed_early_hint(settings)}",
            Outcome.NO_ANSWER: f"{where} did not accept the connection within {timeout_s:g} s",
        }[self.outcome]


@dataclass(frozen=True)
class ConnectionStatus:
    """connected now; connects so far (the first included); refused: the broker refused the latest attempt."""

    connected: bool
    connects: int
    refused: bool


def _nothing(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class ConnectionHooks:
    """What the connection's owner hears, on paho's network thread: each must be quick and never wait.

    connected(): a CONNACK accepted the connection (called before status() says connected).
    disconnected(was_connected): the connection ended, or an attempt failed (False).
    message(message): one message on a subscribed topic; whatever it raises is logged, never raised in paho.
    published(mid, reason): the broker acknowledged (or, MQTT 5, refused) a QoS 1 message.
    """

    connected: Callable[[], None] = _nothing
    disconnected: Callable[[bool], None] = _nothing
    message: Callable[[mqtt.MQTTMessage], None] = _nothing
    published: Callable[[int, ReasonCode], None] = _nothing


class MqttConnection:
    """A paho client with the credentials and TLS of `settings`; start() or open(), subscribe(), close().

    timeout_s: what open() and subscribe_and_wait() allow the broker to answer. Configure `client`
    (a will, in-flight limits) before starting. Thread-safe.
    """

    def __init__(
        self, settings: MqttSettings, hooks: ConnectionHooks, timeout_s: float = 5.0, quiet: bool = False
    ) -> None:
        self.settings = settings
        self.where = f"{settings.host}:{settings.port}"
        self.timeout_s = timeout_s
        self._hooks = hooks
        self._quiet = quiet
        self._retry_max_s = max(1, math.ceil(settings.reconnect_max_s))
        self.client = client = make_client(settings, settings.client_id)
        client.reconnect_delay_set(min_delay=1, max_delay=self._retry_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        # _changed guards the state below and wakes the waits; it is never held while calling paho.
        self._changed = threading.Condition()
        self._first: Attempt | None = None
        self._fail_fast = False  # open(): the first attempt's failure is the caller's error, not retried
        self._connected = False
        self._connects = 0
        self._said_refused = False  # this failure streak was logged as a refusal
        self._said_unreachable = False  # ... as unreachable
        self._started = False
        self._closing = False
        self._closed = False
        self._disconnected = threading.Event()
        self._topics: dict[str, None] = {}  # subscribed again on every connect, in the order asked
        self._subacks: dict[int, list[ReasonCode]] = {}  # answers a subscribe_and_wait() has not taken yet
        self._unawaited: dict[int, list[str]] = {}  # SUBSCRIBEs whose answer only needs checking

    # -- connecting ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and return at once, even when the broker is unreachable."""
        with self._changed:
            if self._started or self._closing:
                return
            self._started = True
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive)
        self.client.loop_start()

    def open(self) -> None:
        """Connect and wait up to timeout_s for the broker's answer; ConnectionError with one line if it
        is unreachable, refuses, or does not answer (and then nothing is left running)."""
        self._fail_fast = True
        self.client.connect_timeout = self.timeout_s
        try:
            self.client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except OSError as error:  # DNS, refused, TLS handshake (ssl.SSLError is an OSError)
            raise ConnectionError(
                f"cannot connect to {self.where}: {describe_connect_error(error, self.settings)}"
            ) from error
        with self._changed:
            self._started = True
        self.client.loop_start()
        problem = self.wait_first_attempt(self.timeout_s).error(self.settings, self.timeout_s)
        if problem is not None:
            self.close()
            raise ConnectionError(problem)

    def wait_first_attempt(self, timeout_s: float) -> Attempt:
        """Wait up to `timeout_s` for the first connection attempt to end, whichever way; how it ended."""
        with self._changed:
            self._changed.wait_for(lambda: self._first is not None, timeout_s)
            return self._first or Attempt(Outcome.NO_ANSWER)

    def status(self) -> ConnectionStatus:
        with self._changed:
            return ConnectionStatus(self._connected, self._connects, self._said_refused)

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe at QoS 1 now if connected, and again on every connect; a refusal is logged."""
        with self._changed:
            self._topics.update(dict.fromkeys(topics))
            connected = self._connected
        if connected:  # otherwise the next connect subscribes them
            self._send_unawaited(list(topics))

    def subscribe_and_wait(self, topics: Sequence[str], until: float | None = None) -> None:
        """subscribe(), and wait for the broker's SUBACK until time.monotonic() reaches `until` (timeout_s from
        now by default): the broker sends the retained messages right after it. ConnectionError with one line
        if it does not come, the connection is lost meanwhile, or the broker refuses a topic."""
        topics = list(topics)
        with self._changed:
            self._topics.update(dict.fromkeys(topics))
        rc, mid = self.client.subscribe([(topic, 1) for topic in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"cannot subscribe on {self.where}: {mqtt.error_string(rc)}")
        deadline = time.monotonic() + self.timeout_s if until is None else until
        with self._changed:
            answered = self._changed.wait_for(
                lambda: mid in self._subacks or not self._connected, max(0.0, deadline - time.monotonic())
            )
            if not answered:
                self._unawaited[mid] = topics  # a late answer is checked like any other
                raise ConnectionError(f"{self.where} did not confirm the subscription within {self.timeout_s:g} s")
            granted = self._subacks.pop(mid, [])
        if not granted:
            raise ConnectionError(f"lost the connection to {self.where}")
        for topic, reason in zip(topics, granted, strict=False):
            if reason.is_failure:
                raise ConnectionError(self.refused_subscription(topic, reason))

    def refused_subscription(self, topic: str, reason: ReasonCode) -> str:
        """The one line for a subscription the broker refused: whose ACL to fix."""
        return (
            f"{self.where} refused the subscription to {topic} ({reason}): "
            f"user {self.settings.username or '(anonymous)'} needs read access in the broker's ACL"
        )

    def _send_unawaited(self, topics: list[str]) -> None:
        rc, mid = self.client.subscribe([(topic, 1) for topic in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # the connection just went: the next connect subscribes them
        with self._changed:
            granted = self._subacks.pop(mid, None)  # the answer may have come before we got here
            if granted is None:
                self._unawaited[mid] = topics
                return
        self._check_granted(topics, granted)

    def _check_granted(self, topics: list[str], granted: list[ReasonCode]) -> None:
        for topic, reason in zip(topics, granted, strict=False):
            if reason.is_failure and not self._quiet:
                log.error("%s", self.refused_subscription(topic, reason))

    # -- closing -------------------------------------------------------------------------------

    def begin_close(self) -> None:
        """From now on a lost connection is expected: logged as information, not as a warning."""
        with self._changed:
            self._closing = True

    def close(self) -> None:
        """Disconnect cleanly (the broker then does not publish the will) and stop paho's thread. Idempotent.

        What paho still holds unacknowledged is forgotten: whoever must keep it (the outbox) has it.
        """
        with self._changed:
            if self._closed or not self._started:
                self._closing = True
                return
            self._closed = self._closing = True
            was_connected = self._connected
        # paho's loop_forever keeps running after loop_stop() until every QoS > 0 message it holds is
        # acknowledged, which a broker that is gone never does.
        self.client.drop_out_messages()
        self.client.disconnect()
        if was_connected:
            self._disconnected.wait(1.0)
        self.client.loop_stop()

    # -- paho callbacks (paho's network thread): record, notify, log; never wait ------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: object
    ) -> None:
        if reason.is_failure:
            self._refused(client, reason)
            return
        self._hooks.connected()  # first: once status() says connected, the owner must be ready to send
        with self._changed:
            if self._first is None:
                self._first = Attempt(Outcome.CONNECTED)
            again = self._connects > 0
            self._connected = True
            self._connects += 1
            self._said_refused = self._said_unreachable = False
            topics = list(self._topics)
            self._changed.notify_all()
        self._disconnected.clear()
        if not self._quiet:
            log.info("%s %s", "reconnected to" if again else "connected to", self.where)
        if topics:
            self._send_unawaited(topics)

    def _refused(self, client: mqtt.Client, reason: ReasonCode) -> None:
        """A CONNACK that says no: paho would retry, but this is not a connection."""
        with self._changed:
            first = self._first is None
            if first:
                self._first = Attempt(Outcome.REFUSED, str(reason))
            say, self._said_refused = not self._said_refused, True
            self._changed.notify_all()
        if first and self._fail_fast:
            client.disconnect()  # open() raises with this answer: no retries with a password the broker refused
        elif say and not self._quiet:
            log.error("%s refused the connection: %s; retrying", self.where, reason)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this from inside its `except OSError`, so the exception in flight is the reason.
        reason = describe_connect_error(sys.exc_info()[1], self.settings)
        with self._changed:
            if self._first is None:
                self._first = Attempt(Outcome.UNREACHABLE, reason)
            say, self._said_unreachable = not self._said_unreachable, True
            self._changed.notify_all()
        if say and not self._quiet:
            log.warning("cannot reach %s: %s; retrying every %g s at most", self.where, reason, self._retry_max_s)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        with self._changed:
            was_connected, self._connected = self._connected, False
            first = self._first is None
            if first:
                self._first = Attempt(Outcome.CLOSED_EARLY)
            closing = self._closing
            # An attempt that ended before a CONNACK: said once per streak, unless a refusal or error said it.
            say_closed = not (was_connected or closing or self._said_refused or self._said_unreachable)
            if not was_connected:
                self._said_unreachable = True
            self._subacks.clear()  # no SUBACK comes for a connection that is gone
            self._unawaited.clear()
            self._changed.notify_all()
        self._hooks.disconnected(was_connected)
        self._disconnected.set()
        if self._quiet or (first and self._fail_fast):
            return
        if say_closed:
            log.warning(
                "cannot reach %s: it closed the connection before accepting it (%s)%s; retrying",
                self.where,
                reason,
                closed_early_hint(self.settings),
            )
        elif was_connected and closing:
            log.info("disconnected from %s", self.where)
        elif was_connected:
            log.warning("disconnected from %s: %s; reconnecting", self.where, reason)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode], properties: object
    ) -> None:
        with self._changed:
            topics = self._unawaited.pop(mid, None)
            if topics is None:  # subscribe_and_wait() takes it, or the sender has not noted the mid yet
                self._subacks[mid] = list(reasons)
                self._changed.notify_all()
                return
        self._check_granted(topics, list(reasons))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self._hooks.message(message)
        except Exception:
            # A handler's bug must not take paho's network thread down with it (nothing would be sent or read).
            log.exception("handling a message on %r failed", message.topic)

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, properties: object
    ) -> None:
        self._hooks.published(mid, reason)

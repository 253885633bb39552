"""One connection to the broker, whatever it is for: the paho callbacks, the attempts and their outcome,
which node and MQTT version each goes to, subscriptions, close.

The agent's publisher (mqtt.py) and the operator's session and subscriber (operator/) differ in what they
do with a connection, not in how they hold one: each used to wait for its first CONNACK, word a refused
subscription and close in its own way. Here it is written once. Two ways to start:

- start(): connect in the background and never block (the agent: a broker that is down must not stop
  the camera); the first attempt's outcome can be waited for; paho retries for ever.
- open(): connect and wait for the first answer, raising ConnectionError with one line when there is
  none or a refusal (the operator's tools: a wrong host or password is said at once, not retried).

A broker may have several nodes ([mqtt] hosts): each attempt goes where agent/transport/nodes.py says
(the first node that answers, the next in turn after a failure or a lost connection, MQTT 3.1.1 to a
node that refuses 5), and every line logged or raised names the node. open() tries each node once.

After the first connection both ride out outages alike: paho reconnects with back-off, every connect
subscribes again to every topic asked for (the session expires on disconnect), and the connection's
life is logged one line per failure streak, not one per retry, unless `quiet` (a short command reports
its failures itself, as errors).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.transport.connection import MqttSettings, closed_early_hint, describe_connect_error, make_client
from agent.transport.link import Attempt, ConnectionHooks, ConnectionStatus, Outcome
from agent.transport.nodes import Failover, Next, aim, paho_retrying_as_31, refuses_version, version_hint

__all__ = ["Attempt", "ConnectionHooks", "ConnectionStatus", "MqttConnection", "Outcome", "probe_broker"]

log = logging.getLogger("yolo_edge.mqtt")
# QoS 0 subscriptions: every session is clean, so QoS 1 would redeliver nothing after a reconnect, while
# nats-server refuses new QoS 1 subscriptions for tens of seconds after a node dies (docs/brokers.md).
SUBSCRIBE_QOS = 0


class MqttConnection:
    """A paho client with the credentials and TLS of `settings`; start() or open(), subscribe(), close().

    timeout_s: what open() and subscribe_and_wait() allow the broker (each node in open()) to answer.
    Configure `client` (a will, in-flight limits) before starting. Thread-safe.
    """

    def __init__(
        self, settings: MqttSettings, hooks: ConnectionHooks, timeout_s: float = 5.0, quiet: bool = False
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._hooks = hooks
        self._quiet = quiet
        self._retry_max_s = max(1, math.ceil(settings.reconnect_max_s))
        self._failover = Failover(settings.nodes, settings.protocol)
        self.client = client = make_client(settings, settings.client_id)
        client.reconnect_delay_set(min_delay=1, max_delay=self._retry_max_s)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        # _changed guards the state below and wakes the waits; it is never held while calling paho.
        self._changed = threading.Condition()
        self._first: Attempt | None = None  # how the first round ended: connected, or every node failed once
        self._latest: tuple[Attempt, Next | None] | None = None  # the latest attempt's end, and what follows
        self._opening = False  # open() runs: a failed attempt is the caller's error, not logged
        self._connected = False
        self._connects = 0
        self._refused_by: set[str] = set()  # nodes whose refusal was logged in this failure streak
        self._unreachable: set[str] = set()  # ... whose failure to answer was
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
        first = self.settings.nodes[0]  # on_pre_connect aims every attempt, this one too
        self.client.connect_async(first.host, first.port, self.settings.keepalive)
        self.client.loop_start()

    def open(self) -> None:
        """Connect, trying each node once until one accepts, each allowed timeout_s to answer; ConnectionError
        with one line (a part per node) if every one is unreachable, refuses or does not answer (and then
        nothing is left running)."""
        self._opening = True
        self.client.connect_timeout = self.timeout_s
        problems: dict[str, str] = {}
        while True:
            attempt, after = self._attempt_now()
            if attempt.connected:
                break
            problems[attempt.node] = attempt.error(self.settings, self.timeout_s) or ""
            if after is Next.ROUND_FAILED:
                self.begin_close()
                self.client.disconnect()  # the socket of a node that did not answer, if any
                raise ConnectionError("; ".join(problems.values()))
        with self._changed:
            self._started = True
            self._opening = False
        self.client.loop_start()

    def _attempt_now(self) -> tuple[Attempt, Next | None]:
        """One attempt on the calling thread (no paho thread runs yet): how it ended and what follows."""
        with self._changed:
            self._latest = None
            node = self._failover.upcoming
        try:
            self.client.connect(node.host, node.port, self.settings.keepalive)
        except OSError as error:  # DNS, refused, TLS handshake (ssl.SSLError is an OSError)
            return self._attempt_ended(Outcome.UNREACHABLE, describe_connect_error(error, self.settings, node))
        deadline = time.monotonic() + self.timeout_s
        while True:
            with self._changed:
                if self._latest is not None:
                    return self._latest
            if time.monotonic() >= deadline:
                return self._attempt_ended(Outcome.NO_ANSWER)
            self.client.loop(timeout=min(0.1, max(0.0, deadline - time.monotonic())))

    @property
    def where(self) -> str:
        """host:port of the node connected to, or of the latest attempt."""
        with self._changed:
            return str(self._failover.current.node)

    def wait_first_attempt(self, timeout_s: float) -> Attempt:
        """Wait up to `timeout_s` for the first round of attempts to end: connected, or every node failed once
        (a node's MQTT 5 refusal is not an end: 3.1.1 follows); how it ended."""
        with self._changed:
            self._changed.wait_for(lambda: self._first is not None, timeout_s)
            return self._first or Attempt(Outcome.NO_ANSWER, node=str(self._failover.current.node))

    def status(self) -> ConnectionStatus:
        with self._changed:
            node = str(self._failover.current.node)
            return ConnectionStatus(self._connected, self._connects, bool(self._refused_by), node)

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe now if connected, and again on every connect; a refusal is logged."""
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
        rc, mid = self.client.subscribe([(topic, SUBSCRIBE_QOS) for topic in topics])
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
        rc, mid = self.client.subscribe([(topic, SUBSCRIBE_QOS) for topic in topics])
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

    def _on_pre_connect(self, client: mqtt.Client, userdata: object) -> None:
        with self._changed:
            if paho_retrying_as_31(client) and self._failover.attempt_open:
                return
            target = self._failover.next_attempt()
        aim(client, target)

    def _attempt_ended(
        self, outcome: Outcome, detail: str = "", version_refused: bool = False
    ) -> tuple[Attempt, Next | None]:
        """The attempt under way failed: tell the failover, note how it ended; what follows."""
        with self._changed:
            attempt = Attempt(outcome, detail, str(self._failover.current.node))
            after = self._failover.ended(version_refused)
            if after is not Next.NOTHING:
                self._latest = (attempt, after)
            if after is Next.ROUND_FAILED and self._first is None:
                self._first = attempt
            self._changed.notify_all()
        return attempt, after

    def _then(self, retrying: str = "retrying") -> str:
        """What follows a failure, for a log line: `retrying` with one node, else the next node's name."""
        with self._changed:
            return f"trying {self._failover.upcoming} next" if self._failover.several else retrying

    def _say(self, said: set[str], node: str) -> bool:
        """Note that `node` failed this way; True to log it: the first time in a failure streak (one line per
        node and streak), unless quiet, in open() (its error says it) or closing."""
        with self._changed:
            first, _ = node not in said, said.add(node)
            return first and not (self._quiet or self._opening or self._closing)

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: object
    ) -> None:
        if reason.is_failure:
            self._refused(reason)
            return
        self._hooks.connected()  # first: once status() says connected, the owner must be ready to send
        with self._changed:
            self._failover.connected()
            target = self._failover.current
            attempt = Attempt(Outcome.CONNECTED, node=str(target.node))
            self._first = self._first or attempt
            self._latest = (attempt, None)
            again = self._connects > 0
            self._connected = True
            self._connects += 1
            self._refused_by.clear()
            self._unreachable.clear()
            topics = list(self._topics)
            self._changed.notify_all()
        self._disconnected.clear()
        if not self._quiet:
            version = "" if target.version == mqtt.MQTTv5 else f" ({target.version_name})"
            log.info("%s %s%s", "reconnected to" if again else "connected to", target.node, version)
        if topics:
            self._send_unawaited(topics)

    def _refused(self, reason: ReasonCode) -> None:
        """A CONNACK that says no: the next attempt goes to the next node, or to this one in 3.1.1."""
        attempt, after = self._attempt_ended(Outcome.REFUSED, str(reason), refuses_version(reason))
        if after is Next.SAME_NODE_311:
            log.debug("%s refused MQTT 5 (%s): trying MQTT 3.1.1", attempt.node, reason)
        elif self._say(self._refused_by, attempt.node):
            hint = version_hint(str(reason), self.settings.protocol)
            log.error("%s refused the connection: %s%s; %s", attempt.node, reason, hint, self._then())

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this from inside its `except OSError`, so the exception in flight is the reason.
        with self._changed:
            node = self._failover.current.node
        reason = describe_connect_error(sys.exc_info()[1], self.settings, node)
        attempt, _ = self._attempt_ended(Outcome.UNREACHABLE, reason)
        if self._say(self._unreachable, attempt.node):
            then = self._then(f"retrying every {self._retry_max_s:g} s at most")
            log.warning("cannot reach %s: %s; %s", attempt.node, reason, then)

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
            node, closing = str(self._failover.current.node), self._closing
            self._subacks.clear()  # no SUBACK comes for a connection that is gone
            self._unawaited.clear()
            self._changed.notify_all()
        if was_connected:
            with self._changed:
                after = self._failover.ended(version_refused=False)
        else:  # before a CONNACK (after a refusal the attempt is over: NOTHING), as some answer a version they lack
            after = self._attempt_ended(Outcome.CLOSED_EARLY, version_refused=True)[1]
        self._hooks.disconnected(was_connected)
        self._disconnected.set()
        if self._quiet:
            return
        if after is Next.SAME_NODE_311:
            log.debug("%s closed the connection on an MQTT 5 CONNECT (%s): trying MQTT 3.1.1", node, reason)
        elif after in (Next.NEXT_NODE, Next.ROUND_FAILED) and self._say(self._unreachable, node):
            log.warning(
                "cannot reach %s: it closed the connection before accepting it (%s)%s; %s",
                node,
                reason,
                closed_early_hint(self.settings),
                self._then(),
            )
        elif was_connected and closing:
            log.info("disconnected from %s", node)
        elif was_connected:
            log.warning("disconnected from %s: %s; %s", node, reason, self._then("reconnecting"))

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


def probe_broker(settings: MqttSettings, timeout_s: float = 5.0) -> str:
    """Connect once and disconnect (`check`): the node that accepted; ConnectionError with one line if none did.

    Uses `<client_id>-check` as client id: the broker would otherwise drop a running agent with
    the same id to let this one in.
    """
    checking = replace(settings, client_id=f"{settings.client_id}-check")
    probe = MqttConnection(checking, ConnectionHooks(), timeout_s, quiet=True)
    probe.open()
    try:
        return probe.where
    finally:
        probe.close()

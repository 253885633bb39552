"""One short MQTT connection that fails fast, no outbox: what the operator's fleet tools speak.

The agent's MqttPublisher (agent/transport/mqtt.py) is built to run for months: it reconnects forever,
stores what it sends and never blocks. A fleet command is the opposite: it connects once,
subscribes to wildcards across devices, sends a few commands and must fail fast with one line
when the broker is unreachable, refuses the password or the ACL refuses a subscription. It shares
the agent's client factory (connection.py), so credentials and TLS behave exactly as they do for the agent.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.transport.connection import MqttSettings, closed_early_hint, describe_connect_error, make_client

__all__ = ["MqttSession", "Received"]


@dataclass(frozen=True)
class Received:
    """One MQTT message as a session saw it. at: time.time() on arrival; retained: from the broker's store."""

    topic: str
    payload: bytes
    retained: bool
    at: float


_LOST = object()  # queued when the connection drops: later waits end with an error, not a silent timeout


class MqttSession:
    """connect() (or `with`), subscribe(), publish(), then read messages(); close() at the end.

    timeout: seconds allowed for the broker to answer a connect, a subscribe or a publish.
    """

    def __init__(self, settings: MqttSettings, timeout: float = 5.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.where = f"{settings.host}:{settings.port}"
        self._client = client = make_client(settings, settings.client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._inbox: queue.Queue[Received | object] = queue.Queue()
        self._changed = threading.Condition()
        self._connack: ReasonCode | None = None
        self._closed_early = False  # the broker closed the socket without a CONNACK
        self._connected = False
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._started = False

    def connect(self) -> MqttSession:
        """Connect and wait for the broker's answer; ConnectionError with one line if there is none or a refusal."""
        self._client.connect_timeout = self.timeout
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except OSError as error:  # DNS, refused, TLS handshake (ssl.SSLError is an OSError)
            raise ConnectionError(
                f"cannot connect to {self.where}: {describe_connect_error(error, self.settings)}"
            ) from error
        self._started = True
        self._client.loop_start()
        with self._changed:
            self._changed.wait_for(lambda: self._connack is not None or self._closed_early, self.timeout)
            reason, closed_early = self._connack, self._closed_early
        if reason is None and closed_early:
            raise ConnectionError(
                f"{self.where} closed the connection before accepting it{closed_early_hint(self.settings)}"
            )
        if reason is None:
            raise ConnectionError(f"{self.where} did not accept the connection within {self.timeout:g} s")
        if reason.is_failure:
            raise ConnectionError(f"{self.where} refused the connection: {reason}")
        return self

    def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK (the broker sends the retained messages right after it)."""
        rc, mid = self._client.subscribe([(topic, 1) for topic in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"cannot subscribe on {self.where}: {mqtt.error_string(rc)}")
        with self._changed:
            if not self._changed.wait_for(lambda: mid in self._subacks or not self._connected, self.timeout):
                raise ConnectionError(f"{self.where} did not confirm the subscription within {self.timeout:g} s")
            granted = self._subacks.pop(mid, [])
        if not granted:
            raise ConnectionError(f"lost the connection to {self.where}")
        for topic, reason in zip(topics, granted, strict=False):
            if reason.is_failure:
                raise ConnectionError(
                    f"{self.where} refused the subscription to {topic} ({reason}): "
                    f"user {self.settings.username or '(anonymous)'} needs read access in the broker's ACL"
                )

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1).

        An MQTT 3.1.1 broker acknowledges a publish its ACL denies just the same and drops it,
        so this proves delivery to the broker, not permission.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as error:
            raise ConnectionError(f"cannot publish to {topic} on {self.where}: {error}") from error
        if not info.is_published():
            raise ConnectionError(f"{self.where} did not acknowledge {topic} within {self.timeout:g} s")

    def messages(self, until: float) -> Iterator[Received]:
        """Messages received so far and then as they come, until time.monotonic() reaches `until`.

        Raises ConnectionError if the connection drops meanwhile.
        """
        while True:
            remaining = until - time.monotonic()
            try:
                item = self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is _LOST:
                raise ConnectionError(f"lost the connection to {self.where}")
            assert isinstance(item, Received)
            yield item

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttSession:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- paho callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        with self._changed:
            if self._connack is None:
                self._connack = reason
            self._connected = not reason.is_failure
            self._changed.notify_all()
        if reason.is_failure:
            client.disconnect()  # one answer is enough: no retries with a password the broker refused

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        with self._changed:
            was_connected, self._connected = self._connected, False
            self._closed_early = self._connack is None
            self._changed.notify_all()
        if was_connected:
            self._inbox.put(_LOST)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        with self._changed:
            self._subacks[mid] = reasons
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(Received(message.topic, bytes(message.payload), bool(message.retain), time.time()))

"""A subscriber that stays: the operator's long-running tools (the Prometheus exporter) read through it.

MqttSession (session.py) is built for a command that runs for seconds and must fail fast; an
exporter runs for months and must ride out broker restarts. This one fails fast only on the first
connection (a wrong host, password or ACL is one line at start), then lets paho reconnect for ever
and subscribes again on every connect (a session that expires on disconnect forgets its subscriptions), so the
broker re-sends its retained messages and the tool's picture is whole again after an outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.transport.connection import MqttSettings, closed_early_hint, describe_connect_error, make_client
from agent.transport.session import Received

__all__ = ["Subscriber"]

log = logging.getLogger(__name__)


class Subscriber:
    """connect() (or `with`), then every message on `topics` goes to `on_message` from paho's thread.

    on_connection: called with True on every connect and False on every loss (for a `connected` gauge).
    timeout: seconds the first connect and its SUBACK may take.
    """

    def __init__(
        self,
        settings: MqttSettings,
        topics: list[str],
        on_message: Callable[[Received], None],
        on_connection: Callable[[bool], None] = lambda connected: None,
        timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.timeout = timeout
        self.where = f"{settings.host}:{settings.port}"
        self._on_message_cb = on_message
        self._on_connection_cb = on_connection
        self._client = client = make_client(settings, settings.client_id)
        client.reconnect_delay_set(1, max(1, int(settings.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._changed = threading.Condition()
        self._first_connack: ReasonCode | None = None
        self._closed_early = False
        self._first_suback: list[ReasonCode] | None = None
        self._subscribe_mids: set[int] = set()
        self._started = False

    def connect(self) -> Subscriber:
        """Connect and subscribe; ConnectionError with one line if the broker is unreachable or refuses either."""
        self._client.connect_timeout = self.timeout
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except OSError as error:  # DNS, refused, TLS handshake (ssl.SSLError is an OSError)
            raise ConnectionError(
                f"cannot connect to {self.where}: {describe_connect_error(error, self.settings)}"
            ) from error
        self._started = True
        self._client.loop_start()
        try:
            self._wait_first_subscription()
        except ConnectionError:
            self.close()
            raise
        return self

    def _wait_first_subscription(self) -> None:
        deadline = time.monotonic() + self.timeout
        with self._changed:
            self._changed.wait_for(lambda: self._first_connack is not None or self._closed_early, self.timeout)
            reason = self._first_connack
            if reason is None and self._closed_early:
                raise ConnectionError(
                    f"{self.where} closed the connection before accepting it{closed_early_hint(self.settings)}"
                )
            if reason is None:
                raise ConnectionError(f"{self.where} did not accept the connection within {self.timeout:g} s")
            if reason.is_failure:
                raise ConnectionError(f"{self.where} refused the connection: {reason}")
            remaining = max(0.0, deadline - time.monotonic())
            if not self._changed.wait_for(lambda: self._first_suback is not None, remaining):
                raise ConnectionError(f"{self.where} did not confirm the subscription within {self.timeout:g} s")
            granted = self._first_suback or []
        for topic, code in zip(self.topics, granted, strict=False):
            if code.is_failure:
                raise ConnectionError(self._refused(topic, code))

    def _refused(self, topic: str, code: ReasonCode) -> str:
        return (
            f"{self.where} refused the subscription to {topic} ({code}): "
            f"user {self.settings.username or '(anonymous)'} needs read access in the broker's ACL"
        )

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
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
            first = self._first_connack is None
            if first:
                self._first_connack = reason
            self._changed.notify_all()
        if reason.is_failure:
            if first:
                client.disconnect()  # the start fails with this answer: no retries with a refused password
            else:
                log.warning("%s refused the reconnection: %s; trying again", self.where, reason)
            return
        if not first:
            log.info("reconnected to %s", self.where)
        rc, mid = client.subscribe([(topic, 1) for topic in self.topics])
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            with self._changed:
                self._subscribe_mids.add(mid)
        self._on_connection_cb(True)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        with self._changed:
            self._closed_early = self._first_connack is None
            self._changed.notify_all()
        if self._started and self._first_suback is not None:
            log.warning("lost the connection to %s (%s); reconnecting", self.where, reason)
        self._on_connection_cb(False)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        with self._changed:
            if mid not in self._subscribe_mids:
                return
            self._subscribe_mids.discard(mid)
            first = self._first_suback is None
            if first:
                self._first_suback = list(reasons)
            self._changed.notify_all()
        if not first:
            for topic, code in zip(self.topics, reasons, strict=False):
                if code.is_failure:
                    log.error("%s", self._refused(topic, code))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = Received(message.topic, bytes(message.payload), bool(message.retain), time.time())
        try:
            self._on_message_cb(received)
        except Exception:  # a bug in the handler is logged with its traceback; it must not end the subscription
            log.exception("handling a message on %s failed", message.topic)

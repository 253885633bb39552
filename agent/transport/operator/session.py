"""One short MQTT connection that fails fast, no outbox: what the fleet commands (list, set, deploy) speak.

The agent's MqttPublisher (agent/transport/mqtt.py) is built to run for months: it reconnects forever,
stores what it sends and never blocks. A fleet command is the opposite: it connects once,
subscribes to wildcards across devices, sends a few commands and must fail fast with one line
when the broker is unreachable, refuses the password or the ACL refuses a subscription. Nothing is
logged: every failure is the command's error line.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import paho.mqtt.client as mqtt

from agent.transport.client import ConnectionHooks, MqttConnection
from agent.transport.connection import MqttSettings

__all__ = ["MqttSession", "Received"]


@dataclass(frozen=True)
class Received:
    """One MQTT message as a session saw it. at: time.time() on arrival; retained: from the broker's store."""

    topic: str
    payload: bytes
    retained: bool
    at: float

    @classmethod
    def of(cls, message: mqtt.MQTTMessage) -> Received:
        return cls(message.topic, bytes(message.payload), bool(message.retain), time.time())


_LOST = object()  # queued when the connection drops: later waits end with an error, not a silent timeout


class MqttSession:
    """connect() (or `with`), subscribe(), publish(), then read messages(); close() at the end.

    timeout: seconds allowed for the broker to answer a connect, a subscribe or a publish.
    """

    def __init__(self, settings: MqttSettings, timeout: float = 5.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._inbox: queue.Queue[Received | object] = queue.Queue()
        hooks = ConnectionHooks(
            disconnected=lambda was_connected: self._inbox.put(_LOST) if was_connected else None,
            message=lambda message: self._inbox.put(Received.of(message)),
        )
        self._link = MqttConnection(settings, hooks, timeout, quiet=True)

    @property
    def where(self) -> str:
        """host:port of the broker node connected to (of the latest attempt before)."""
        return self._link.where

    def connect(self) -> MqttSession:
        """Connect and wait for the broker's answer; ConnectionError with one line if there is none or a refusal."""
        self._link.open()
        return self

    def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK (the broker sends the retained messages right after it)."""
        self._link.subscribe_and_wait(topics)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1).

        An MQTT 3.1.1 broker acknowledges a publish its ACL denies just the same and drops it,
        so this proves delivery to the broker, not permission.
        """
        info = self._link.client.publish(topic, payload, qos=qos, retain=retain)
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
        self._link.close()

    def __enter__(self) -> MqttSession:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

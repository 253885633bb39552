"""What agent/transport/client.py's connection and its owner say to each other: the hooks it calls, how an
attempt ended, where it stands."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.transport.connection import MqttSettings, closed_early_hint
from agent.transport.nodes import version_hint

__all__ = ["Attempt", "ConnectionHooks", "ConnectionStatus", "Outcome"]


class Outcome(enum.Enum):
    CONNECTED = "connected"
    REFUSED = "refused"  # the broker answered no: credentials, not authorized, ...
    UNREACHABLE = "unreachable"  # no connection was made: DNS, nothing listening, TLS
    CLOSED_EARLY = "closed early"  # the broker hung up before it answered
    NO_ANSWER = "no answer"  # nothing yet


@dataclass(frozen=True)
class Attempt:
    """How a connection attempt ended. detail: the broker's reason, or why it was not reached; node: host:port."""

    outcome: Outcome
    detail: str = ""
    node: str = ""

    @property
    def connected(self) -> bool:
        return self.outcome is Outcome.CONNECTED

    def error(self, settings: MqttSettings, timeout_s: float) -> str | None:
        """The one line that says why it did not connect (None if it did)."""
        where = self.node or str(settings.nodes[0])
        hint = version_hint(self.detail, settings.protocol)
        return {
            Outcome.CONNECTED: None,
            Outcome.REFUSED: f"{where} refused the connection: {self.detail}{hint}",
            Outcome.UNREACHABLE: f"cannot connect to {where}: {self.detail}",
            Outcome.CLOSED_EARLY: f"{where} closed the connection before accepting it{closed_early_hint(settings)}",
            Outcome.NO_ANSWER: f"{where} did not accept the connection within {timeout_s:g} s",
        }[self.outcome]


@dataclass(frozen=True)
class ConnectionStatus:
    """connected now; connects so far (the first included); refused: a broker refused an attempt since the
    last connection; node: host:port of the node connected to, or of the latest attempt."""

    connected: bool
    connects: int
    refused: bool
    node: str


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

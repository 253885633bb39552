"""Which broker node to try next, and in which MQTT version: the failover and the protocol fallback.

A clustered broker is reached through any of its nodes ([mqtt] hosts). A connection takes the first
node that answers and, when an attempt fails or the connection is lost, the next in turn; paho's
back-off paces the attempts (agent/transport/client.py). With protocol `auto` every node is spoken
MQTT 5 first: one that refuses it (CONNACK "Unsupported protocol version", as NATS answers) or hangs
up right after the CONNECT (brokers that do not parse it) is tried again with 3.1.1, and one that
then accepts is spoken 3.1.1 from then on.

paho 2.x takes host, port and version in connect() and keeps them for every reconnect: nothing public
changes them in between. aim() sets them from paho's on_pre_connect callback, the one moment paho
reads them for the coming attempt, as paho itself changes its version when it falls back to 3.1.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "AUTO",
    "Aim",
    "Failover",
    "Next",
    "Node",
    "aim",
    "paho_retrying_as_31",
    "refuses_version",
    "version_hint",
    "version_name",
]

AUTO = "auto"
_VERSIONS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
_NAMES = {mqtt.MQTTv5: "MQTT 5", mqtt.MQTTv311: "MQTT 3.1.1", mqtt.MQTTv31: "MQTT 3.1"}
_UNSUPPORTED_VERSION = 0x84  # CONNACK reason; paho reads a 3.1.1 broker's return code 1 as this too
_UNSUPPORTED_NAME = "Unsupported protocol version"  # its str()


@dataclass(frozen=True)
class Node:
    """One broker node; str() is `host:port` (`[v6]:port`), the name every log line and error gives it."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Aim:
    """One connection attempt: the node and paho's protocol constant (mqtt.MQTTv5 or mqtt.MQTTv311)."""

    node: Node
    version: int

    @property
    def version_name(self) -> str:
        return version_name(self.version)


class Next(enum.Enum):
    """What follows the end of an attempt or of a connection."""

    SAME_NODE_311 = "the same node in MQTT 3.1.1"  # auto: the node refused MQTT 5
    NEXT_NODE = "the next node"
    ROUND_FAILED = "every node failed once"  # since the last connection: the next attempt starts over
    LOST = "the connection was lost"  # it was connected: the next node
    NOTHING = "nothing"  # no attempt was under way (the close that follows a refusal)


class Failover:
    """The node and version of each attempt, from how the ones before ended. Not thread-safe: the
    connection calls it under its own lock.

    protocol: "auto", "5" or "3.1.1" ([mqtt] protocol).
    """

    def __init__(self, nodes: Sequence[Node], protocol: str) -> None:
        if not nodes:
            raise ValueError("a connection needs at least one broker node")
        self.nodes = tuple(nodes)
        self.protocol = protocol
        self._index = 0
        self._speaks_311: set[Node] = set()  # auto: nodes that refused MQTT 5 and accepted 3.1.1
        self._fallback = False  # the next attempt is the same node in 3.1.1
        self._open: Aim | None = None  # the attempt under way
        self._up = False  # connected
        self._failed = 0  # attempts failed in this round, a fallback's first half not counted
        self.current = Aim(self.nodes[0], self._version_for(self.nodes[0]))  # the latest attempt's aim

    @property
    def several(self) -> bool:
        return len(self.nodes) > 1

    @property
    def attempt_open(self) -> bool:
        return self._open is not None

    @property
    def upcoming(self) -> Node:
        """The node the next attempt goes to."""
        return self.nodes[self._index]

    def next_attempt(self) -> Aim:
        node = self.nodes[self._index]
        self._open = self.current = Aim(node, self._version_for(node))
        return self.current

    def connected(self) -> None:
        if self._open is not None and self.protocol == AUTO and self._open.version == mqtt.MQTTv311:
            self._speaks_311.add(self._open.node)
        self._open, self._up, self._fallback, self._failed = None, True, False, 0

    def ended(self, version_refused: bool) -> Next:
        """The attempt under way failed, or the connection ended.

        version_refused: the broker refused the attempt's MQTT version, or closed the connection before
        answering its CONNECT (which is how a broker that does not parse MQTT 5 answers it).
        """
        if self._up:
            self._up = False
            self._advance()
            return Next.LOST
        attempt, self._open = self._open, None
        if attempt is None:
            return Next.NOTHING
        if version_refused and self.protocol == AUTO and attempt.version == mqtt.MQTTv5:
            self._fallback = True
            return Next.SAME_NODE_311
        self._fallback = False
        self._advance()
        self._failed += 1
        if self._failed < len(self.nodes):
            return Next.NEXT_NODE
        self._failed = 0
        return Next.ROUND_FAILED

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self.nodes)

    def _version_for(self, node: Node) -> int:
        if self.protocol != AUTO:
            return _VERSIONS[self.protocol]
        return mqtt.MQTTv311 if self._fallback or node in self._speaks_311 else mqtt.MQTTv5


def aim(client: mqtt.Client, target: Aim) -> None:
    """Point paho's coming attempt at `target` (from on_pre_connect, before paho opens the socket)."""
    client._host, client._port = target.node.host, target.node.port
    if client._protocol != target.version:
        client._protocol = target.version
        if target.version != mqtt.MQTTv5:
            client._clean_session = True  # what Client() sets for 3.1.1; a client made for MQTT 5 has none


def paho_retrying_as_31(client: mqtt.Client) -> bool:
    """paho answers a 3.1.1 CONNACK "unacceptable protocol version" by trying MQTT 3.1 at once, within the
    same attempt: on_pre_connect must then leave its aim alone, or the two would loop without a pause."""
    return client._protocol == mqtt.MQTTv31


def refuses_version(reason: ReasonCode) -> bool:
    return reason.value == _UNSUPPORTED_VERSION


def version_name(version: int) -> str:
    return _NAMES.get(version, f"MQTT protocol level {version}")


def version_hint(detail: str, protocol: str) -> str:
    """What to change when a broker refused the one MQTT version [mqtt] protocol insists on ("" otherwise)."""
    if protocol == AUTO or detail.lower() != _UNSUPPORTED_NAME.lower():
        return ""
    return f'; it does not speak MQTT {protocol}: set [mqtt] protocol = "auto"'

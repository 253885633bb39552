"""The broker connection: settings from the [mqtt] section, the paho client factory, and why an attempt failed.

The agent's publisher and the operator's fleet client both connect through make_client, so
credentials, TLS and socket options behave the same on both sides.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.transport.nodes import Node

__all__ = ["MqttSettings", "describe_connect_error", "make_client"]


class MqttConfigLike(Protocol):
    """What MqttSettings.from_config reads: the [mqtt] config section, without importing the config module."""

    protocol: str
    prefix: str
    device_id: str
    keepalive: int
    username: str | None
    password: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    tls_insecure: bool
    reconnect_max_s: float

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]: ...


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection. topic_prefix is `<prefix>/<device>`; times in seconds.

    TLS is on when tls_ca or tls_cert is set; tls_insecure skips the host name check. hosts: a broker's
    nodes, tried in turn (host and port are the first); protocol: "auto", "5" or "3.1.1" (agent/transport/nodes.py).
    """

    host: str
    port: int
    topic_prefix: str
    client_id: str
    hosts: tuple[Node, ...] = ()
    protocol: str = "auto"
    keepalive: int = 60
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_insecure: bool = False
    reconnect_max_s: float = 60.0
    max_inflight: int = 50  # unacknowledged QoS 1 messages on the wire; paho queues the rest in order

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes in the order tried: hosts, else host and port alone."""
        return self.hosts or (Node(self.host, self.port),)

    @classmethod
    def from_config(cls, mqtt_config: MqttConfigLike) -> MqttSettings:
        """Settings from the [mqtt] section: topics under `<prefix>/<device_id>`, client id = device id."""
        c = mqtt_config
        nodes = tuple(Node(host, port) for host, port in c.nodes)
        return cls(
            host=nodes[0].host,
            port=nodes[0].port,
            topic_prefix=f"{c.prefix}/{c.device_id}",
            client_id=c.device_id,
            hosts=nodes,
            protocol=c.protocol,
            keepalive=c.keepalive,
            username=c.username,
            password=c.password,
            tls_ca=c.tls_ca,
            tls_cert=c.tls_cert,
            tls_key=c.tls_key,
            tls_insecure=c.tls_insecure,
            reconnect_max_s=c.reconnect_max_s,
        )


def make_client(settings: MqttSettings, client_id: str) -> mqtt.Client:
    """A paho client with the credentials and TLS of `settings`, made for MQTT 5 (response topics and
    correlation data) unless settings.protocol is 3.1.1; agent/transport/nodes.py changes the version per node."""
    version = mqtt.MQTTv311 if settings.protocol == "3.1.1" else mqtt.MQTTv5
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:
            client.tls_set(
                ca_certs=_str(settings.tls_ca), certfile=_str(settings.tls_cert), keyfile=_str(settings.tls_key)
            )
        except (ssl.SSLError, OSError, ValueError) as error:
            files = ", ".join(f"{k} {v}" for k, v in _tls_files(settings).items())
            raise ConnectionError(
                f"cannot load the TLS files ({files}): {error}; they must be PEM files (a CA certificate, "
                "and a client certificate with its unencrypted key)"
            ) from error
        if settings.tls_insecure:
            client.tls_insecure_set(True)
    client.on_socket_open = _no_delay
    return client


def _tls_files(settings: MqttSettings) -> dict[str, Path]:
    named = {"[mqtt] tls_ca": settings.tls_ca, "[mqtt] tls_cert": settings.tls_cert, "[mqtt] tls_key": settings.tls_key}
    return {key: path for key, path in named.items() if path is not None}


def describe_connect_error(error: BaseException | None, settings: MqttSettings, node: Node | None = None) -> str:
    """Why an attempt to `node` (default: the first) failed, with what to change when it is the TLS set-up."""
    node = node or settings.nodes[0]
    if error is None:
        return "no reason given"
    if isinstance(error, ssl.SSLCertVerificationError):
        hint = (
            f"check that [mqtt] tls_ca {settings.tls_ca} is the CA that signed the broker's certificate"
            if "hostname" not in str(error).lower() and "ip address mismatch" not in str(error).lower()
            else f"connect by a name the broker's certificate holds (now [mqtt] host {node.host}), "
            "or set tls_insecure = true (testing only)"
        )
        return f"TLS: the broker's certificate was rejected ({error.verify_message}); {hint}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error}; does the broker expect TLS on port {node.port}, and a client certificate?"
    hint = closed_early_hint(settings) if isinstance(error, (ConnectionResetError, BrokenPipeError)) else ""
    return f"{str(error) or type(error).__name__}{hint}"  # ConnectionResetError() says nothing by itself


def closed_early_hint(settings: MqttSettings) -> str:
    """What to check when the broker hangs up before answering CONNECT: with TLS 1.3 a missing client
    certificate shows only then, as the broker's alert after the handshake seemed to succeed."""
    if settings.tls and settings.tls_cert is None:
        return "; if the broker requires a client certificate, set [mqtt] tls_cert and tls_key"
    return ""


def _no_delay(_client: mqtt.Client, _userdata: object, sock: Any) -> None:
    """Send each publish at once: with Nagle on, an event queued behind a frame's detections waited
    for a delayed ACK, about 40 ms (benchmarks/broker_load.py measured events p99 88 ms, 10 ms without)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)

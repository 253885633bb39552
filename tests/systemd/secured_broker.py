"""A real Mosquitto running the shipped systemd/mosquitto-yolo-edge.conf and mosquitto.acl with a password file.

Only its port and file paths are changed; acl_rules() reads the shipped ACL's rules. Client is one
logged-in MQTT client that records what it receives; MQTT 3.1.1 unless told otherwise, since a 3.1.1
broker drops a denied publish silently and the tests must prove the ACL, not the client, stops it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import HomeAssistantConfig, MqttConfig
from tests.broker import Broker, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "systemd" / "mosquitto.acl"
CONF = ROOT / "systemd" / "mosquitto-yolo-edge.conf"
PREFIX = MqttConfig().prefix  # the ACL is written for the default prefixes
HA_PREFIX = HomeAssistantConfig().discovery_prefix
PASSWORDS = {"operator": "op-secret", "homeassistant": "ha-secret", "dashboard": "d-secret"}
PASSWORDS |= {"cam-a": "a-secret", "cam-b": "b-secret", "acl-agent": "agent-secret"}
WAIT_S = 5.0

needs_mosquitto = pytest.mark.skipif(
    mosquitto_binary() is None or shutil.which("mosquitto_passwd") is None,
    reason="mosquitto and mosquitto_passwd are needed (apt install mosquitto mosquitto-clients)",
)


def acl_rules() -> list[tuple[str, str, str]]:
    """(section, access, topic) of every rule; section is `pattern` for pattern lines, else the `user NAME` above."""
    rules, section = [], ""
    for line in ACL.read_text().splitlines():
        words = line.split()
        if words[:1] == ["user"]:
            section = line.strip()
        elif words[:1] in (["topic"], ["pattern"]):
            assert len(words) == 3, f"{ACL.name}: `{line}` should be `{words[0]} read|write TOPIC`"
            rules.append(("pattern" if words[0] == "pattern" else section, words[1], words[2]))
    return rules


def granted(section: str, access: str) -> set[str]:
    return {topic for where, how, topic in acl_rules() if where == section and how == access}


def shipped_config(password_file: Path) -> str:
    """The shipped snippet for a test broker: Broker() adds its own 127.0.0.1 listeners, the files are ours."""
    text = CONF.read_text()
    lines = ("listener 1883", "listener 9001\nprotocol websockets", "allow_anonymous false")
    for line in (*lines, "password_file /etc/mosquitto/yolo-edge.passwd"):
        assert f"\n{line}\n" in text, f"{CONF.name} should hold `{line}`"
    text = text.replace("\nlistener 1883\n", "\n").replace("\nlistener 9001\nprotocol websockets\n", "\n")
    text = text.replace("/etc/mosquitto/yolo-edge.passwd", str(password_file))
    return text.replace("/etc/mosquitto/yolo-edge.acl", str(ACL))


def start_secured(workdir: Path) -> Broker:
    """The started broker, every user of PASSWORDS in its password file."""
    password_file = workdir / "passwd"
    for index, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(password_file), user, password],
            check=True,
            capture_output=True,
            timeout=10,
        )
    # As root, Mosquitto switches to its own user, which cannot read pytest's private temporary directory.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    config = run_as + shipped_config(password_file)
    return Broker(workdir, extra_config=config, allow_anonymous=False, websockets=True).start()


@dataclass(frozen=True)
class Got:
    topic: str
    payload: bytes


class Client:
    """One logged-in MQTT client that records what it receives. connect() returns the CONNACK's reason."""

    def __init__(
        self,
        broker: Broker,
        user: str | None,
        password: str | None = None,
        websockets: bool = False,
        protocol: int = mqtt.MQTTv311,
    ) -> None:
        self.broker = broker
        self.port = broker.ws_port if websockets else broker.port
        self.received: list[Got] = []
        self.subacks: list[list[ReasonCode]] = []
        self._changed = threading.Condition()
        self._connack: ReasonCode | None = None
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{user}-{uuid.uuid4().hex[:6]}",
            protocol=protocol,
            transport="websockets" if websockets else "tcp",
        )
        if user is not None:
            self.client.username_pw_set(user, password if password is not None else PASSWORDS[user])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, props: object):
        with self._changed:
            self._connack = reason
            self._changed.notify_all()
        if reason.is_failure:
            client.disconnect()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list, props: object) -> None:
        with self._changed:
            self.subacks.append(reasons)
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append(Got(message.topic, bytes(message.payload)))
            self._changed.notify_all()

    def connect(self) -> ReasonCode:
        self.client.connect(self.broker.host, self.port, keepalive=10)
        self.client.loop_start()
        with self._changed:
            assert self._changed.wait_for(lambda: self._connack is not None, WAIT_S), "no CONNACK"
            assert self._connack is not None
            return self._connack

    def subscribe(self, *topics: str, qos: int = 1) -> list[ReasonCode]:
        count = len(self.subacks)
        self.client.subscribe([(topic, qos) for topic in topics])
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.subacks) > count, WAIT_S), "no SUBACK"
            return self.subacks[count]

    def publish(self, topic: str, payload: str, retain: bool = False, properties: Properties | None = None) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain, properties=properties).wait_for_publish(WAIT_S)

    def wait_for(self, topic: str, payload: str) -> list[Got]:
        """Everything received up to and including (topic, payload)."""
        wanted = Got(topic, payload.encode())
        with self._changed:
            if not self._changed.wait_for(lambda: wanted in self.received, WAIT_S):
                raise AssertionError(f"{topic} {payload!r} did not arrive; got {self.received}")
            return self.received[: self.received.index(wanted) + 1]

    def wait_until(self, what: str, predicate: Callable[[list[Got]], bool], timeout: float) -> list[Got]:
        """Everything received so far, once predicate(it) holds (checked on each message and every 0.1 s,
        so that it may depend on more than messages, a process still running for one)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.received):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted(set(self.topics()))
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; got messages on {seen}")
                self._changed.wait(min(remaining, 0.1))
            return list(self.received)

    def topics(self) -> list[str]:
        return [got.topic for got in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

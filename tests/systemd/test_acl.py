"""systemd/mosquitto.acl and mosquitto-yolo-edge.conf on a real Mosquitto with a password file.

The broker runs the shipped snippet (only its port and file paths changed) and reads the shipped ACL
file itself. MQTT 3.1.1 brokers drop a publish the ACL denies and still acknowledge it, so a denial
is checked by what a privileged subscriber receives. No fixed sleeps prove an absence: each client
sends its forbidden messages first and then one it may send; messages from one client reach a
subscriber in order, so once the allowed one arrived, any forbidden one would have arrived before it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.cli import main
from agent.config import MqttConfig
from tests.broker import Broker, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "systemd" / "mosquitto.acl"
CONF = ROOT / "systemd" / "mosquitto-yolo-edge.conf"
PREFIX = MqttConfig().prefix  # the ACL is written for the default prefix
PASSWORDS = {"operator": "op-secret", "homeassistant": "ha-secret", "dashboard": "d-secret"}
PASSWORDS |= {"cam-a": "a-secret", "cam-b": "b-secret"}
WAIT_S = 5.0
NO = "Not authorized"
# Everything the agent publishes under its own <prefix>/<device>/, and outside it.
DEVICE_TOPICS = ("status", "detections", "events", "stats", "presence", "snapshot", "settings", "set/result")
DEVICE_TOPICS += ("deploy/state",)

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None or shutil.which("mosquitto_passwd") is None,
    reason="mosquitto and mosquitto_passwd are needed (apt install mosquitto mosquitto-clients)",
)


def shipped_config(password_file: Path) -> str:
    """The shipped snippet for a test broker: Broker() adds its own 127.0.0.1 listeners, the files are ours."""
    text = CONF.read_text()
    lines = ("listener 1883", "listener 9001\nprotocol websockets", "allow_anonymous false")
    for line in (*lines, "password_file /etc/mosquitto/yolo-edge.passwd"):
        assert f"\n{line}\n" in text, f"{CONF.name} should hold `{line}`"
    text = text.replace("\nlistener 1883\n", "\n").replace("\nlistener 9001\nprotocol websockets\n", "\n")
    text = text.replace("/etc/mosquitto/yolo-edge.passwd", str(password_file))
    return text.replace("/etc/mosquitto/yolo-edge.acl", str(ACL))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    workdir = tmp_path_factory.mktemp("acl")
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
    broker = Broker(workdir, extra_config=config, allow_anonymous=False, websockets=True).start()
    yield broker
    broker.stop()


@dataclass(frozen=True)
class Got:
    topic: str
    payload: bytes


class Client:
    """One logged-in MQTT 3.1.1 client that records what it receives. connect() returns the CONNACK's reason."""

    def __init__(self, broker: Broker, user: str | None, password: str | None = None, websockets: bool = False) -> None:
        self.broker = broker
        self.port = broker.ws_port if websockets else broker.port
        self.received: list[Got] = []
        self.subacks: list[list[ReasonCode]] = []
        self._changed = threading.Condition()
        self._connack: ReasonCode | None = None
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{user}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv311,
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

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        count = len(self.subacks)
        self.client.subscribe([(topic, 1) for topic in topics])
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.subacks) > count, WAIT_S), "no SUBACK"
            return self.subacks[count]

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def wait_for(self, topic: str, payload: str) -> list[Got]:
        """Everything received up to and including (topic, payload)."""
        wanted = Got(topic, payload.encode())
        with self._changed:
            if not self._changed.wait_for(lambda: wanted in self.received, WAIT_S):
                raise AssertionError(f"{topic} {payload!r} did not arrive; got {self.received}")
            return self.received[: self.received.index(wanted) + 1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def login(secured: Broker) -> Iterator:
    """login(user) -> a connected Client; all closed after the test."""
    clients: list[Client] = []

    def connect(user: str, websockets: bool = False) -> Client:
        client = Client(secured, user, websockets=websockets)
        clients.append(client)
        reason = client.connect()
        assert not reason.is_failure, f"{user} was refused: {reason}"
        return client

    yield connect
    for client in clients:
        client.close()


def topics(received: list[Got]) -> list[str]:
    return [got.topic for got in received]


def test_the_acl_is_written_for_the_default_prefix() -> None:
    rules = [line.split() for line in ACL.read_text().splitlines() if line.startswith(("topic ", "pattern "))]
    assert rules, "no rules"
    for rule in rules:
        assert rule[-1].startswith((f"{PREFIX}/", "homeassistant/")), rule
        assert "%c" not in rule[-1], "client ids are not authenticated; rules use %u"


def test_a_device_writes_its_own_topics_and_nothing_else(login) -> None:
    watcher = login("homeassistant")  # it reads both trees
    watcher.subscribe(f"{PREFIX}/#", "homeassistant/#")
    cam_a = login("cam-a")
    forbidden = [
        f"{PREFIX}/cam-b/events",
        f"{PREFIX}/cam-b/status",
        f"{PREFIX}/cam-a/set",
        f"{PREFIX}/cam-b/set",
        f"{PREFIX}/cam-a/deploy",
        f"{PREFIX}/cam-b/deploy",
        f"{PREFIX}/cam-b/snapshot/request",
        f"{PREFIX}/cam-a/unknown",
        "homeassistant/device/cam-b/config",
        "homeassistant/status",
        "elsewhere/cam-a/events",
    ]
    for topic in forbidden:
        cam_a.publish(topic, "forbidden")
    allowed = [f"{PREFIX}/cam-a/{name}" for name in DEVICE_TOPICS] + ["homeassistant/device/cam-a/config"]
    for topic in allowed:
        cam_a.publish(topic, "allowed")
    got = watcher.wait_for(allowed[-1], "allowed")
    assert topics(got) == allowed, "only its own topics got through, in order"


def test_the_operator_alone_commands_and_a_device_reads_only_its_own_commands(login) -> None:
    cam_a = login("cam-a")
    cam_a.subscribe(
        f"{PREFIX}/cam-a/set", f"{PREFIX}/cam-a/deploy", f"{PREFIX}/cam-a/snapshot/request", "homeassistant/status"
    )
    # Granted or not (Mosquitto 2.0 grants and filters), nothing of another device may come through these.
    cam_a.subscribe(f"{PREFIX}/cam-b/set", f"{PREFIX}/cam-b/deploy", f"{PREFIX}/+/stats", f"{PREFIX}/#")
    operator, home_assistant, cam_b = login("operator"), login("homeassistant"), login("cam-b")
    operator.subscribe(f"{PREFIX}/#")

    cam_b.publish(f"{PREFIX}/cam-b/stats", "{}")  # cam-a may not read it
    cam_b.publish(f"{PREFIX}/cam-a/set", '{"confidence": 0.01}')  # nor take commands from a device
    operator.wait_for(f"{PREFIX}/cam-b/stats", "{}")
    home_assistant.publish(f"{PREFIX}/cam-a/set", '{"confidence": 0.02}')  # a dashboard does not command
    home_assistant.publish(f"{PREFIX}/cam-a/deploy", "{}")
    home_assistant.publish("homeassistant/status", "online")
    operator.publish(f"{PREFIX}/cam-b/set", '{"confidence": 0.5}')
    operator.publish(f"{PREFIX}/cam-b/deploy", '{"url": "https://x/b.tgz"}')
    operator.publish(f"{PREFIX}/cam-b/status", "offline")  # the operator does not speak for a device
    operator.publish(f"{PREFIX}/cam-a/deploy", '{"url": "https://x/a.tgz"}')
    operator.publish(f"{PREFIX}/cam-a/snapshot/request", "")
    operator.publish(f"{PREFIX}/cam-a/set", '{"confidence": 0.5}')

    got = cam_a.wait_for(f"{PREFIX}/cam-a/set", '{"confidence": 0.5}')
    assert sorted((g.topic, g.payload) for g in got) == sorted(
        [
            ("homeassistant/status", b"online"),
            (f"{PREFIX}/cam-a/deploy", b'{"url": "https://x/a.tgz"}'),
            (f"{PREFIX}/cam-a/snapshot/request", b""),
            (f"{PREFIX}/cam-a/set", b'{"confidence": 0.5}'),
        ]
    )
    seen = operator.wait_for(f"{PREFIX}/cam-a/set", '{"confidence": 0.5}')
    assert f"{PREFIX}/cam-b/status" not in topics(seen)
    assert topics(seen).count(f"{PREFIX}/cam-a/set") == 1, "neither cam-b's nor Home Assistant's set got through"


def test_the_dashboard_over_websockets_reads_every_device_and_sends_only_set_and_snapshot_requests(login) -> None:
    dashboard = login("dashboard", websockets=True)  # the page's way in: the WebSocket listener
    dashboard.subscribe(f"{PREFIX}/#")
    cam_a = login("cam-a")
    cam_a.subscribe(f"{PREFIX}/cam-a/set", f"{PREFIX}/cam-a/deploy", f"{PREFIX}/cam-a/snapshot/request")
    cam_a.publish(f"{PREFIX}/cam-a/stats", '{"fps": 5}')
    dashboard.wait_for(f"{PREFIX}/cam-a/stats", '{"fps": 5}')

    dashboard.publish(f"{PREFIX}/cam-a/deploy", '{"url": "https://x/a.tgz"}')  # deploy stays the operator's
    dashboard.publish(f"{PREFIX}/cam-a/status", "offline")  # nor does it speak for a device
    dashboard.publish("homeassistant/status", "online")
    dashboard.publish(f"{PREFIX}/cam-a/snapshot/request", "")
    dashboard.publish(f"{PREFIX}/cam-a/set", '{"confidence": 0.4, "request_id": "d1"}')
    got = cam_a.wait_for(f"{PREFIX}/cam-a/set", '{"confidence": 0.4, "request_id": "d1"}')
    assert topics(got) == [f"{PREFIX}/cam-a/snapshot/request", f"{PREFIX}/cam-a/set"]
    seen = dashboard.wait_for(f"{PREFIX}/cam-a/set", '{"confidence": 0.4, "request_id": "d1"}')
    assert f"{PREFIX}/cam-a/status" not in topics(seen) and f"{PREFIX}/cam-a/deploy" not in topics(seen)


def test_home_assistant_reads_devices_and_their_discovery(login) -> None:
    home_assistant = login("homeassistant")
    home_assistant.subscribe(f"{PREFIX}/+/status", f"{PREFIX}/+/presence", "homeassistant/device/+/config")
    cam_a = login("cam-a")
    cam_a.publish("homeassistant/device/cam-a/config", '{"dev": {}}')
    cam_a.publish(f"{PREFIX}/cam-a/presence", "{}")
    cam_a.publish(f"{PREFIX}/cam-a/status", "online")
    got = home_assistant.wait_for(f"{PREFIX}/cam-a/status", "online")
    assert topics(got)[-3:] == [
        "homeassistant/device/cam-a/config",
        f"{PREFIX}/cam-a/presence",
        f"{PREFIX}/cam-a/status",
    ]


@pytest.mark.parametrize(
    ("user", "password"),
    [("cam-a", "b-secret"), ("operator", ""), ("nobody", "x"), (None, None)],
    ids=["wrong password", "empty password", "unknown user", "anonymous"],
)
def test_a_wrong_login_is_refused(secured: Broker, user: str | None, password: str | None) -> None:
    client = Client(secured, user, password)
    try:
        reason = client.connect()
    finally:
        client.close()
    assert reason.is_failure and str(reason) == NO, reason


def test_fleet_lists_devices_as_the_operator(
    secured: Broker, login, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cam_b = login("cam-b")
    cam_b.publish(f"{PREFIX}/cam-b/status", "online", retain=True)
    secret = tmp_path / "operator.password"
    secret.write_text(PASSWORDS["operator"] + "\n")
    broker = ["--host", secured.host, "--port", str(secured.port), "--wait", "0.3"]
    assert main(["fleet", *broker, "--username", "operator", "--password-file", str(secret)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["cam-b", "online"]

    secret.write_text("wrong")
    assert main(["fleet", *broker, "--username", "operator", "--password-file", str(secret)]) == 2
    err = capsys.readouterr().err
    assert err == f"yolo-edge-agent fleet: broker error: {secured.host}:{secured.port} refused the connection: {NO}\n"

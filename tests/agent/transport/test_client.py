"""The one MQTT connection core (agent/transport/client.py) against a real Mosquitto, and each of its users.

One broker for the module, with Mosquitto's dynamic security plugin: anonymous clients may subscribe to
`allowed/#` only, and any user name is refused. The plain acl_file the project ships never refuses a
subscription (Mosquitto 2.0 grants it and delivers nothing), but the plugin, EMQX and HiveMQ answer
`Not authorized` in the SUBACK, and that answer must read the same whichever client gets it.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.transport.client import ConnectionHooks, MqttConnection, Outcome
from agent.transport.connection import MqttSettings
from agent.transport.operator import MqttSession, Subscriber
from agent.transport.outbox import Outbox
from tests.agent.transport import test_mqtt
from tests.agent.transport.test_mqtt import wait_until
from tests.broker import Broker, free_port

publishers = test_mqtt.publishers  # the fixture, shared

PLUGIN = next(
    (p for p in Path("/usr/lib").glob("**/mosquitto_dynamic_security.so") if p.is_file()),
    None,
)
pytestmark = pytest.mark.skipif(PLUGIN is None, reason="Mosquitto's dynamic security plugin is needed (apt mosquitto)")

# Dynamic security's own file: nobody but the anonymous group, which may subscribe to allowed/# alone.
DYNSEC = {
    "defaultACLAccess": {
        "publishClientSend": True,
        "publishClientReceive": True,
        "subscribe": False,
        "unsubscribe": True,
    },
    "clients": [],
    "groups": [{"groupname": "anonymous", "roles": [{"rolename": "reader"}]}],
    "roles": [{"rolename": "reader", "acls": [{"acltype": "subscribePattern", "topic": "allowed/#", "allow": True}]}],
    "anonymousGroup": "anonymous",
}
REFUSED_TOPIC = "denied/cam1/set"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    workdir = tmp_path_factory.mktemp("dynsec")
    (workdir / "dynsec.json").write_text(json.dumps(DYNSEC))
    # As root, Mosquitto switches to its own user, which cannot read pytest's private temporary directory.
    config = f"plugin {PLUGIN}\nplugin_opt_config_file {workdir / 'dynsec.json'}\n"
    running = Broker(workdir, extra_config=config + ("user root\n" if os.geteuid() == 0 else "")).start()
    yield running
    running.stop()


def settings(port: int, **overrides: object) -> MqttSettings:
    values: dict = {"keepalive": 10, "reconnect_max_s": 1.0} | overrides
    return MqttSettings("127.0.0.1", port, "denied/cam1", f"test-{uuid.uuid4().hex[:8]}", **values)


def refused_subscription(broker: Broker) -> str:
    return (
        f"{broker.host}:{broker.port} refused the subscription to {REFUSED_TOPIC} (Not authorized): "
        "user (anonymous) needs read access in the broker's ACL"
    )


def test_open_fails_with_one_line_saying_how_the_first_attempt_ended(broker: Broker) -> None:
    closed = free_port()
    failing = {
        "refused credentials": (
            settings(broker.port, username="cam", password="wrong"),
            f"127.0.0.1:{broker.port} refused the connection: Not authorized",
        ),
        "nothing listens": (settings(closed), f"cannot connect to 127.0.0.1:{closed}: [Errno 111] Connection refused"),
    }
    for case, (target, expected) in failing.items():
        connection = MqttConnection(target, ConnectionHooks(), timeout_s=5.0, quiet=True)
        with pytest.raises(ConnectionError) as raised:
            connection.open()
        assert str(raised.value) == expected, case
        assert not connection.status().connected, case

    connection = MqttConnection(settings(broker.port), ConnectionHooks(), timeout_s=5.0, quiet=True)
    connection.open()
    try:
        assert connection.status().connected and connection.status().connects == 1
        assert connection.wait_first_attempt(0).outcome is Outcome.CONNECTED
    finally:
        connection.close()
    assert not connection.status().connected


def test_start_never_blocks_and_the_first_attempt_ends_the_wait_whichever_way(broker: Broker) -> None:
    cases = {
        "connected": (settings(broker.port), Outcome.CONNECTED, ""),
        "refused credentials": (
            settings(broker.port, username="cam", password="wrong"),
            Outcome.REFUSED,
            "Not authorized",
        ),
        "nothing listens": (settings(free_port()), Outcome.UNREACHABLE, "[Errno 111] Connection refused"),
    }
    connections = {case: MqttConnection(target, ConnectionHooks()) for case, (target, _, _) in cases.items()}
    try:
        for connection in connections.values():
            connection.start()
        for case, (_, outcome, detail) in cases.items():
            # 30 s: a failure ends the wait at once, so only a broken wait would use it up.
            attempt = connections[case].wait_first_attempt(30.0)
            assert (attempt.outcome, attempt.detail) == (outcome, detail), case
            assert connections[case].status().refused is (outcome is Outcome.REFUSED), case
    finally:
        for connection in connections.values():
            connection.close()


def test_a_refused_subscription_reads_the_same_in_every_client(
    broker: Broker, tmp_path: Path, publishers, caplog: pytest.LogCaptureFixture
) -> None:
    expected = refused_subscription(broker)
    # The fleet's commands: the command fails with the line.
    with MqttSession(settings(broker.port), timeout=5.0) as session:
        session.subscribe(["allowed/#"])  # the plugin does grant what it allows: the refusal below is the topic's
        with pytest.raises(ConnectionError) as raised:
            session.subscribe(["allowed/x", REFUSED_TOPIC])
        assert str(raised.value) == expected
    # The exporter: it does not start.
    with pytest.raises(ConnectionError) as raised:
        Subscriber(settings(broker.port), ["allowed/#", REFUSED_TOPIC], lambda message: None).connect()
    assert str(raised.value) == expected
    # The agent keeps running (its events still go out): the line is logged, once per SUBACK.
    publisher = publishers(settings(broker.port), Outbox(tmp_path / "outbox.db"))
    publisher.subscribe("set", lambda payload: None)

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "yolo_edge.mqtt" and r.levelno == logging.ERROR]

    wait_until("the refusal logged", lambda: bool(logged()), timeout=10.0)
    assert logged() == [expected]
    assert publisher.health().connected

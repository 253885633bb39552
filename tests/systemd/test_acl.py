"""systemd/mosquitto.acl and mosquitto-yolo-edge.conf on a real Mosquitto with a password file.

The broker runs the shipped snippet (only its port and file paths changed) and reads the shipped ACL
file itself. MQTT 3.1.1 brokers drop a publish the ACL denies and still acknowledge it, so a denial
is checked by what a privileged subscriber receives. No fixed sleeps prove an absence: each client
sends its forbidden messages first and then one it may send; messages from one client reach a
subscriber in order, so once the allowed one arrived, any forbidden one would have arrived before it.
The device lines are checked against agent/transport/topics.py both ways; test_acl_agent.py runs the
agent itself through the ACL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.transport import topics as names
from agent.transport.topics import PUBLISHED, REPLY, SUBSCRIBED, device_topic, ha_discovery_topic
from tests.broker import Broker
from tests.systemd.secured_broker import (
    ACL,
    HA_PREFIX,
    PASSWORDS,
    PREFIX,
    Client,
    Got,
    acl_rules,
    granted,
    needs_mosquitto,
)

NO = "Not authorized"

pytestmark = needs_mosquitto


def topics(received: list[Got]) -> list[str]:
    return [got.topic for got in received]


def test_the_acl_is_written_for_the_default_prefix() -> None:
    rules = acl_rules()
    assert rules, "no rules"
    for rule in rules:
        assert rule[-1].startswith((f"{PREFIX}/", f"{HA_PREFIX}/")), rule
        assert "%c" not in rule[-1], "client ids are not authenticated; rules use %u"


def test_every_topic_name_in_topics_py_is_in_its_lists() -> None:
    """A topic added to topics.py but to neither list would miss its ACL line and its end-to-end check."""
    constants = {name: value for name, value in vars(names).items() if name.isupper() and isinstance(value, str)}
    listed = {*PUBLISHED, *SUBSCRIBED, REPLY, names.HA_STATUS}
    assert {name for name, value in constants.items() if value not in listed} == set()
    assert len(set(PUBLISHED)) == len(PUBLISHED) and not set(PUBLISHED) & set(SUBSCRIBED)


def test_the_device_lines_are_the_topics_the_agent_speaks() -> None:
    """Both ways: a topic without its line is dropped by the broker, a line without a topic is a hole."""
    writes = {device_topic(PREFIX, "%u", name) for name in (*PUBLISHED, f"{REPLY}/#")}
    writes.add(ha_discovery_topic(HA_PREFIX, "%u"))
    reads = {device_topic(PREFIX, "%u", name) for name in SUBSCRIBED} | {f"{HA_PREFIX}/{names.HA_STATUS}"}
    assert {access for where, access, _ in acl_rules() if where == "pattern"} == {"read", "write"}
    for access, wanted in (("write", writes), ("read", reads)):
        lines = granted("pattern", access)
        missing, extra = sorted(wanted - lines), sorted(lines - wanted)
        assert not missing, f"{ACL.name} lacks `pattern {access}` for {missing} (agent/transport/topics.py)"
        assert not extra, f"{ACL.name} has `pattern {access}` for {extra}, which agent/transport/topics.py lacks"


def test_the_operator_may_send_every_command_the_agent_takes() -> None:
    assert granted("user operator", "write") == {device_topic(PREFIX, "+", name) for name in SUBSCRIBED}
    assert granted("user dashboard", "write") == {
        device_topic(PREFIX, "+", n) for n in (names.SET, names.SNAPSHOT_REQUEST)
    }


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
    allowed = [device_topic(PREFIX, "cam-a", name) for name in (*PUBLISHED, f"{REPLY}/fleet-1")]
    allowed.append(ha_discovery_topic(HA_PREFIX, "cam-a"))
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

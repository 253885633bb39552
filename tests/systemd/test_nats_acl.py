"""docs/brokers.md's NATS config for a yolo-edge fleet, as written on that page, on a real nats-server.

The page's two blocks (fences whose first line is `# nats-server: FILE`) are read from the page itself,
so what a user copies is what is tested. The ACL block must grant each user what the shipped
systemd/mosquitto.acl grants (which test_acl.py holds to agent/transport/topics.py), in NATS's
subjects; `nats-server -t` must accept both blocks; and on a real nats-server with JetStream, one per
module, the users must be able to do what the page says and nothing more, the real agent included,
logged in as the page's device. A refusal is proven by a later message through the same subscription
that must come after it, never by a wait.

Subscriptions are checked at QoS 1 (the SUBACK: those need `$MQTT.sub.>`) and then receive at QoS 0:
nats-server 2.9 serves a QoS 1 subscription from a JetStream consumer that was measured to miss a few
percent of messages (tests/agent/transport/test_cluster.py), while QoS 0 subscriptions got every one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.transport import topics
from agent.transport.topics import device_topic, ha_discovery_topic
from tests.agent.agent_process import LOOP_FPS, AgentProcess, agent_env, broker_args
from tests.agent.transport.test_mqtt_tls import issue, make_ca
from tests.broker import free_port
from tests.systemd.secured_broker import HA_PREFIX, PREFIX, Client, Got, acl_rules, granted

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "brokers.md"
NATS = shutil.which("nats-server")
DEVICE = "garage"  # the page's device
PASSWORDS = {user: f"{user}-secret" for user in ("operator", "dashboard", "homeassistant", DEVICE)}
READY_S = 30.0  # JetStream up and the MQTT streams made
AGENT_S = 60.0  # the model loaded and the agent through its first frames, on a loaded machine
ARRIVE_S = 10.0  # a ceiling for messages between clients of one local server

needs_nats = pytest.mark.skipif(NATS is None, reason="nats-server is not installed (apt install nats-server)")


def doc_blocks() -> dict[str, str]:
    """FILE -> the block's text, for every fenced block of the page that starts with `# nats-server: FILE`."""
    found = re.findall(r"^```\n(# nats-server: (\S+)\n.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    blocks = {name: text for text, name in found}
    assert set(blocks) == {"nats-server.conf", "nats-yolo-edge-acl.conf"}, f"{DOC.name} has blocks {sorted(blocks)}"
    return blocks


def permissions(acl: str) -> dict[str, dict[str, set[str]]]:
    """user -> {"publish": subjects, "subscribe": subjects, "types": connection types}, read off the ACL block."""
    users: dict[str, dict[str, set[str]]] = {}
    for chunk in re.split(r'\buser: "', acl)[1:]:
        name = chunk.split('"', 1)[0]
        lists = {}
        for key, pattern in (
            ("publish", r"publish: \{allow: \[(.*?)\]\}"),
            ("subscribe", r"subscribe: \{allow: \[(.*?)\]\}"),
            ("types", r"allowed_connection_types: \[(.*?)\]"),
        ):
            match = re.search(pattern, chunk, re.DOTALL)
            assert match, f"user {name}: no `{key}` list in the shape the page uses"
            lists[key] = set(re.findall(r'"([^"]+)"', match.group(1)))
        users[name] = lists
    return users


def subjects(topic: str, subscribing: bool) -> set[str]:
    """The NATS subjects of an MQTT topic or filter. Subscribing to `a/#` is two NATS subscriptions, `a.>`
    and `a` itself, and nats-server refuses the MQTT subscription unless both are allowed; a publish names
    one topic, so `a/#` there needs `a.>` alone."""
    subject = topic.replace("/", ".").replace("+", "*").replace("#", ">")
    if subject.endswith(".>") and subscribing:
        return {subject, subject[:-2]}
    return {subject}


def mosquitto_grants(section: str, device: str | None = None) -> dict[str, set[str]]:
    """What systemd/mosquitto.acl lets `section` do, as NATS subjects (`pattern` lines for a device)."""
    wanted: dict[str, set[str]] = {"publish": set(), "subscribe": {"$MQTT.sub.>"}}  # QoS 1 delivery, see the page
    for access, key in (("write", "publish"), ("read", "subscribe")):
        for topic in granted(section, access):
            wanted[key] |= subjects(topic.replace("%u", device or "%u"), subscribing=key == "subscribe")
    return wanted


def test_the_acl_grants_each_user_what_the_mosquitto_acl_does() -> None:
    """Both ways: a missing subject breaks the agent or a tool, an extra one is a hole."""
    users = permissions(doc_blocks()["nats-yolo-edge-acl.conf"])
    assert set(users) == {"operator", "dashboard", "homeassistant", DEVICE}
    sections = {where for where, _, _ in acl_rules() if where != "pattern"}
    assert sections == {f"user {name}" for name in users if name != DEVICE}, "a Mosquitto user the page lacks"
    for name, grants in users.items():
        expected = mosquitto_grants("pattern", DEVICE) if name == DEVICE else mosquitto_grants(f"user {name}")
        for key in ("publish", "subscribe"):
            missing, extra = sorted(expected[key] - grants[key]), sorted(grants[key] - expected[key])
            assert not missing and not extra, f"{name} {key}: missing {missing}, extra {extra}"
        # No NATS client may use these logins: `$MQTT.sub.>` would let it read others' QoS 1 deliveries.
        assert grants["types"] == ({"MQTT_WS"} if name == "dashboard" else {"MQTT"}), name


# --- nats-server itself ------------------------------------------------------------------------


def certificates(directory: Path) -> dict[str, Path]:
    """The page's certificate paths -> files openssl made (nats-server -t loads them)."""
    ca = make_ca(directory, "ca")
    cert, key = issue(directory, "nats-a", ca)
    return {"/etc/nats-certs/ca.crt": ca[0], "/etc/nats-certs/nats-a.crt": cert, "/etc/nats-certs/nats-a.key": key}


def check(config: Path) -> subprocess.CompletedProcess[str]:
    assert NATS is not None
    return subprocess.run([NATS, "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)


@needs_nats
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the certificates; `make test` installs it")
def test_nats_server_accepts_the_page_config_and_would_refuse_a_mistake(tmp_path: Path) -> None:
    blocks = doc_blocks()
    node = blocks["nats-server.conf"]
    for page_path, made in certificates(tmp_path).items():
        assert page_path in node, page_path
        node = node.replace(page_path, str(made))
    node = node.replace("/var/lib/nats-server", str(tmp_path / "jetstream"))
    (tmp_path / "nats-yolo-edge-acl.conf").write_text(blocks["nats-yolo-edge-acl.conf"])
    config = tmp_path / "nats-server.conf"
    config.write_text(node)
    result = check(config)
    assert result.returncode == 0 and "is valid" in result.stdout + result.stderr, result

    # The check reads what it is given: a connection type nats-server does not know fails it.
    acl = blocks["nats-yolo-edge-acl.conf"].replace('"MQTT_WS"', '"MQTT_WEBSOCKET"')
    (tmp_path / "nats-yolo-edge-acl.conf").write_text(acl)
    assert check(config).returncode != 0


@dataclass(frozen=True)
class NatsListeners:
    """Where a test nats-server listens, shaped as Client wants a broker: MQTT on port, MQTT over WebSockets
    on ws_port (paho's default path, /mqtt, is nats-server's)."""

    host: str
    port: int
    ws_port: int


def with_test_passwords(acl: str) -> str:
    """The page's ACL with PASSWORDS in place of its bcrypt placeholders (plain ones: only the test knows them)."""
    for user, password in PASSWORDS.items():
        acl, count = re.subn(rf'(user: "{user}", password: )"[^"]*"', rf'\1"{password}"', acl)
        assert count == 1, user
    return acl


def granted_then_qos0(client: Client, *filters: str) -> None:
    """Subscribe at QoS 1 and check nats-server grants it, then receive at QoS 0 (see the module's docstring)."""
    refused = [f for f, reason in zip(filters, client.subscribe(*filters), strict=True) if reason.is_failure]
    assert not refused, f"{refused} refused at QoS 1"
    client.subscribe(*filters, qos=0)


def logged_in(listeners: Any, user: str, websockets: bool = False) -> Client:
    client = Client(listeners, user, PASSWORDS[user], websockets=websockets)
    reason = client.connect()
    assert not reason.is_failure, f"{user} was refused: {reason}"
    return client


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsListeners]:
    """One nats-server, JetStream on, MQTT and MQTT over WebSockets on free loopback ports, the page's ACL."""
    assert NATS is not None
    workdir = tmp_path_factory.mktemp("nats-acl")
    listeners = NatsListeners("127.0.0.1", free_port(), free_port())
    (workdir / "acl.conf").write_text(with_test_passwords(doc_blocks()["nats-yolo-edge-acl.conf"]))
    config = workdir / "node.conf"
    config.write_text(
        f'server_name: "acl-test"\nlisten: "127.0.0.1:-1"\njetstream {{ store_dir: "{workdir / "js"}" }}\n'
        f'mqtt {{ listen: "127.0.0.1:{listeners.port}" }}\n'
        f'websocket {{ listen: "127.0.0.1:{listeners.ws_port}", no_tls: true }}\ninclude "acl.conf"\n'
    )
    log = workdir / "nats.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([NATS, "-c", str(config)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + READY_S
        while True:  # answers once it listens and JetStream has made the MQTT streams
            assert process.poll() is None, f"nats-server exited: {log.read_text()[-2000:]}"
            try:
                logged_in(listeners, "operator").close()
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"nats-server did not take MQTT logins: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield listeners
    finally:
        process.terminate()
        process.wait(10)


def at(name: str, device: str = DEVICE) -> str:
    return device_topic(PREFIX, device, name)


@needs_nats
def test_each_user_may_do_what_the_page_says_and_nothing_more(nats: NatsListeners) -> None:
    clients = []
    try:
        watcher, operator, device = (logged_in(nats, user) for user in ("homeassistant", "operator", DEVICE))
        dashboard = logged_in(nats, "dashboard", websockets=True)
        clients += [watcher, operator, device, dashboard]
        # Home Assistant's subscriptions, the operator's and the device's own, all at QoS 1 (through $MQTT.sub.).
        granted_then_qos0(watcher, f"{PREFIX}/#", f"{HA_PREFIX}/#")
        granted_then_qos0(operator, f"{PREFIX}/#")
        granted_then_qos0(device, *[at(name) for name in topics.SUBSCRIBED], f"{HA_PREFIX}/{topics.HA_STATUS}")
        assert device.subscribe(at(topics.SET, "porch"))[0].is_failure, "a device may read another's commands"

        # Refused first, on the subscriptions they would come through; then everything allowed.
        device.publish(at(topics.STATUS, "porch"), "offline")
        device.publish(at(topics.SET, "porch"), '{"request_id": "device-set"}')
        device.publish(at(topics.SET), '{"request_id": "own-set"}')
        device.publish(ha_discovery_topic(HA_PREFIX, "porch"), "{}")
        watcher.publish(at(topics.SET), '{"request_id": "ha-set"}')
        dashboard.publish(at(topics.DEPLOY), '{"request_id": "dashboard-deploy"}')
        operator.publish(at(topics.STATUS), "offline")
        allowed = [at(name) for name in topics.PUBLISHED] + [at(f"{topics.REPLY}/op-1")]
        allowed.append(ha_discovery_topic(HA_PREFIX, DEVICE))
        for topic in allowed:
            device.publish(topic, "ok", retain=topic == at(topics.STATUS))
        watcher.publish(f"{HA_PREFIX}/{topics.HA_STATUS}", "online")
        dashboard.publish(at(topics.SET), '{"request_id": "dashboard-set"}')
        operator.publish(at(topics.DEPLOY), '{"request_id": "operator-deploy"}')

        seen = watcher.wait_until(
            "every allowed publish at Home Assistant",
            lambda got: {g.topic for g in got if g.payload == b"ok"} >= set(allowed),
            ARRIVE_S,
        )
        got = device.wait_until(
            "the dashboard's set, the operator's deploy and Home Assistant's status at the device",
            lambda got: (
                {g.payload for g in got}
                >= {b'{"request_id": "dashboard-set"}', b'{"request_id": "operator-deploy"}', b"online"}
            ),
            ARRIVE_S,
        )
        assert Got(at(topics.STATUS, "porch"), b"offline") not in seen
        assert Got(ha_discovery_topic(HA_PREFIX, "porch"), b"{}") not in seen
        assert Got(at(topics.STATUS), b"offline") not in seen, "the operator wrote a device's status"
        for refused in ("device-set", "own-set", "ha-set", "dashboard-deploy"):
            assert f'"{refused}"'.encode() not in b"".join(g.payload for g in got), f"{refused} reached the device"
        late = logged_in(nats, "operator")  # retained, and found by a wildcard subscription
        clients.append(late)
        late.subscribe(f"{PREFIX}/+/{topics.STATUS}", qos=0)
        late.wait_for(at(topics.STATUS), "ok")
        wrong = Client(nats, DEVICE, "not-its-password")
        clients.append(wrong)
        assert wrong.connect().is_failure
    finally:
        for client in clients:
            client.close()


@needs_nats
def test_the_agent_logged_in_as_the_device_works_through_the_acl(
    nats: NatsListeners, tmp_path: Path, fixture_onnx: Path, sample_video: tuple[Path, list]
) -> None:
    watcher, operator = logged_in(nats, "homeassistant"), logged_in(nats, "operator")
    try:
        granted_then_qos0(watcher, f"{PREFIX}/#", f"{HA_PREFIX}/#")
        args = ["run", "--source", str(sample_video[0]), "--loop", "--model", str(fixture_onnx)]
        args += broker_args(nats.host, nats.port, DEVICE)
        login = {"mqtt_username": DEVICE, "mqtt_password": PASSWORDS[DEVICE]}
        env = agent_env(tmp_path / "state", source_fps=LOOP_FPS, stats_interval=1, **login)
        with AgentProcess(args, env, tmp_path) as agent:
            wanted = {at(topics.STATUS), at(topics.STATS), ha_discovery_topic(HA_PREFIX, DEVICE)}
            watcher.wait_until(
                "the agent's status, stats and discovery",
                lambda got: {g.topic for g in got} >= wanted or not agent.running,
                AGENT_S,
            )
            assert agent.running, agent.describe()
            # The agent's own command subscription is QoS 1, served by the consumer that can miss a message:
            # an operator sends again what was not answered, as `yolo-edge-fleet set` users do.
            request = uuid.uuid4().hex[:8]
            for attempt in range(1, 4):
                operator.publish(at(topics.SET), f'{{"request_id": "{request}"}}')
                try:
                    watcher.wait_until(
                        "the answer to the operator's set",
                        lambda got: any(request.encode() in g.payload for g in got if g.topic == at(topics.SET_RESULT)),
                        ARRIVE_S,
                    )
                    break
                except AssertionError:
                    if attempt == 3:
                        raise AssertionError(f"three sets unanswered: {agent.describe()}") from None
            assert agent.stop()[0] == 0, agent.describe()
        assert "(MQTT 3.1.1)" in agent.stderr and "refused" not in agent.stderr, agent.stderr[-3000:]
        statuses = [g.payload for g in watcher.received if g.topic == at(topics.STATUS)]
        assert topics.ONLINE in statuses and statuses[-1] == topics.STOPPED, statuses
    finally:
        watcher.close()
        operator.close()

"""The real agent through the shipped ACL and password file, logged in as its device id, as docs/security.md says.

Home Assistant's user, subscribed to everything, must get every topic the agent publishes
(agent/transport/topics.py), an answer on an MQTT 5 response topic under `reply/`, and its discovery
config; and nothing the ACL refuses: another device writing on the agent's topics, Home Assistant's
`set`, the dashboard's `deploy`. A refusal is proven by a later message that must come after it,
never by a wait. One agent, looping a video of moving shapes with a zone, serves the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.transport import topics
from agent.transport.topics import device_topic, ha_discovery_topic
from tests.agent.agent_process import LOOP_FPS, AgentProcess, agent_env, broker_args
from tests.broker import Broker
from tests.systemd.secured_broker import HA_PREFIX, PASSWORDS, PREFIX, Client, Got, needs_mosquitto

pytestmark = needs_mosquitto

DEVICE = "acl-agent"  # its user name in the password file
ZONE = """
[zones.right_half]
polygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
inertia = 2

[lines.middle]
points = [[0.5, 1.0], [0.5, 0.0]]
"""
EVERYTHING_S = 60.0  # the model loads and the shapes enter the zone; generous for a loaded machine
ANSWER_S = 20.0  # a ceiling: the frame loop takes a command between two frames
REPLY_TOPIC = device_topic(PREFIX, DEVICE, f"{topics.REPLY}/operator-1")
DISCOVERY = ha_discovery_topic(HA_PREFIX, DEVICE)


def at(name: str) -> str:
    return device_topic(PREFIX, DEVICE, name)


def bodies(received: list[Got], topic: str) -> list[Any]:
    return [json.loads(got.payload) for got in received if got.topic == topic and got.payload]


def answered(received: list[Got], topic: str, request_id: str) -> bool:
    return any(body.get("request_id") == request_id for body in bodies(received, topic))


def watch(
    watcher: Client, agent: AgentProcess, what: str, predicate: Callable[[list[Got]], bool], timeout: float
) -> list[Got]:
    """watcher.wait_until(...), failing at once if the agent exits, with its stderr in the failure."""
    try:
        got = watcher.wait_until(what, lambda got: predicate(got) or not agent.running, timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{agent.describe()}") from None
    assert agent.running, agent.describe()
    return got


@pytest.fixture(scope="module")
def watcher(secured: Broker) -> Iterator[Client]:
    """Home Assistant's user on both trees, subscribed before the agent starts so nothing passes it by."""
    client = Client(secured, "homeassistant")
    assert not client.connect().is_failure
    client.subscribe(f"{PREFIX}/#", f"{HA_PREFIX}/#")
    yield client
    client.close()


@pytest.fixture(scope="module")
def agent(
    secured: Broker, watcher: Client, tmp_path_factory: pytest.TempPathFactory, fixture_onnx: Path, sample_video
) -> Iterator[AgentProcess]:
    workdir = tmp_path_factory.mktemp("acl-agent")
    config = workdir / "agent.toml"
    config.write_text(ZONE)
    args = ["run", "--config", str(config), "--source", str(sample_video[0]), "--loop", "--model", str(fixture_onnx)]
    args += broker_args(secured.host, secured.port, DEVICE)
    login = {"mqtt_username": DEVICE, "mqtt_password": PASSWORDS[DEVICE]}
    env = agent_env(workdir / "state", source_fps=LOOP_FPS, stats_interval=1, **login)
    online = Got(at(topics.STATUS), b"online")
    with AgentProcess(args, env, workdir) as process:
        watch(watcher, process, "the agent online", lambda got: online in got, EVERYTHING_S)
        yield process
        assert process.stop()[0] == 0, process.describe()


@pytest.fixture
def operator(secured: Broker) -> Iterator[Client]:
    """The operator over MQTT 5, so that a `set` can carry a response topic."""
    client = Client(secured, "operator", protocol=mqtt.MQTTv5)
    assert not client.connect().is_failure
    yield client
    client.close()


def test_every_topic_the_agent_publishes_reaches_home_assistant(agent: AgentProcess, watcher: Client, operator) -> None:
    ask = Properties(PacketTypes.PUBLISH)
    ask.ResponseTopic, ask.CorrelationData = REPLY_TOPIC, b"op-1"
    operator.publish(at(topics.SET), '{"request_id": "op-set"}', properties=ask)
    operator.publish(at(topics.DEPLOY), '{"request_id": "op-deploy"}')  # refused by the agent, answered on deploy/state

    wanted = [at(name) for name in topics.PUBLISHED] + [REPLY_TOPIC, DISCOVERY]
    got = watch(
        watcher,
        agent,
        "a message on every topic the agent publishes",
        lambda got: {g.topic for g in got} >= set(wanted) and answered(got, at(topics.DEPLOY_STATE), "op-deploy"),
        EVERYTHING_S,
    )
    assert answered(got, at(topics.SET_RESULT), "op-set") and answered(got, REPLY_TOPIC, "op-set")
    commands = {at(name) for name in topics.SUBSCRIBED}  # the operator's, which the watcher reads too
    strays = {g.topic for g in got if g.topic.startswith((at(""), f"{HA_PREFIX}/"))} - set(wanted) - commands
    assert strays == set(), "the agent published on a topic agent/transport/topics.py does not list"
    # Nothing the agent sent was refused: the broker's MQTT 5 PUBACKs said so in a stats message sent after all of it.
    count = len(bodies(got, at(topics.STATS)))
    later = watch(watcher, agent, "a later stats", lambda got: len(bodies(got, at(topics.STATS))) > count, ANSWER_S)
    assert bodies(later, at(topics.STATS))[-1]["mqtt"]["refused_by_broker"] == 0, agent.describe()


def test_what_the_acl_refuses_reaches_neither_the_agent_nor_home_assistant(
    agent: AgentProcess, watcher: Client, login
) -> None:
    cam_b, home_assistant, dashboard = login("cam-b"), login("homeassistant"), login("dashboard")
    # Another device speaking for the agent, and commanding it.
    cam_b.publish(at(topics.STATUS), "offline")
    cam_b.publish(at(topics.EVENTS), '{"seq": -1}')
    cam_b.publish(at(topics.SET), '{"request_id": "cam-b-set"}')
    home_assistant.publish(at(topics.SET), '{"request_id": "ha-set"}')  # Home Assistant reads, never commands
    dashboard.publish(at(topics.DEPLOY), '{"request_id": "dashboard-deploy"}')  # deploy stays the operator's
    dashboard.publish(at(topics.SET), '{"request_id": "dashboard-set"}')

    # Each refused message was handled by the broker before the dashboard's set was sent, and the agent
    # answers commands in the order they arrive: had any got through, it would be here by now.
    got = watch(
        watcher,
        agent,
        "the dashboard's set answered",
        lambda got: answered(got, at(topics.SET_RESULT), "dashboard-set"),
        ANSWER_S,
    )
    assert Got(at(topics.STATUS), b"offline") not in got and Got(at(topics.EVENTS), b'{"seq": -1}') not in got
    for request_id in ("cam-b-set", "ha-set"):
        assert not answered(got, at(topics.SET_RESULT), request_id), f"{request_id} reached the agent"
    assert not answered(got, at(topics.DEPLOY_STATE), "dashboard-deploy"), "the dashboard's deploy reached the agent"

"""The agent's MQTT side, started for `run`: the publisher over its outbox, the command inbox, the
deployer, and the Home Assistant announcement. Everything started is put on the caller's ExitStack,
in the order that closes it safely (paho's thread before the outbox it sends from)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.control.commands import CommandInbox
from agent.control.deploy.active_bundle import StartupModel
from agent.control.deploy.deployer import Deployer, DeploySettings
from agent.control.response_topics import ResponseTopics
from agent.pipeline.detector import Detector
from agent.runtime.startup import load_model
from agent.transport import topics
from agent.transport.discovery import (
    DiscoveryAnnouncer,
    DiscoveryDevice,
    classes_of_interest,
    discovery_payload,
    discovery_topic,
    package_version,
    project_url,
)
from agent.transport.discovery_record import DiscoveryRecord, announced, with_removals
from agent.transport.encoding import dumps

if TYPE_CHECKING:  # paho is imported only where MQTT is used: a dry run and `bench` never load it
    from agent.transport.mqtt import MqttPublisher

# How long `run` waits for its first connection attempt before reading frames: a video's first
# frames come at once, and their QoS 0 detections would be dropped while still connecting.
FIRST_CONNECT_WAIT_S = 3.0


def mqtt_publisher(config: AgentConfig, stack: ExitStack, detector: Detector) -> tuple[MqttPublisher, CommandInbox]:
    """The started MQTT publisher (its first connection attempt over, or FIRST_CONNECT_WAIT_S gone) and the
    inbox its command topics feed; both, and the discovery announcer (if on), are closed by `stack`."""
    from agent.transport.connection import MqttSettings
    from agent.transport.mqtt import MqttPublisher
    from agent.transport.outbox import Outbox

    mqtt, agent = config.mqtt, config.agent
    outbox = stack.enter_context(
        Outbox(agent.state_dir / "outbox.sqlite3", agent.outbox_max_messages, agent.outbox_max_age_s)
    )
    publisher = MqttPublisher(MqttSettings.from_config(mqtt), outbox)
    # On the stack right after the outbox, so it is closed before it, however `run` ends: paho's thread
    # must not outlive the outbox it sends from. Closing a publisher never started does nothing.
    stack.callback(publisher.close, timeout=3.0)
    # Replies are QoS 0: commands from the network must not be able to fill the outbox that holds the events.
    inbox = CommandInbox(
        detector.names,
        lambda payload: publisher.publish(topics.SET_RESULT, payload, qos=0),
        ResponseTopics(publisher.settings.topic_prefix, publisher.publish_reply),
    )
    if config.remote.settings:
        publisher.subscribe(topics.SET, inbox.on_set, replies=True)
    if config.snapshot.enabled:
        publisher.subscribe(topics.SNAPSHOT_REQUEST, inbox.on_snapshot_request)
    _home_assistant(config, publisher, detector, stack)
    publisher.start().wait_first_attempt(FIRST_CONNECT_WAIT_S)  # a refusal or an unreachable host ends it at once
    return publisher, inbox


def deployer_for(config: AgentConfig, publisher: MqttPublisher, startup: StartupModel, stack: ExitStack) -> Deployer:
    """Take `deploy` commands; states go out retained on `deploy/state` (QoS 0: re-sent on every connect)."""
    deployer = Deployer(
        DeploySettings.from_config(config.deploy, config.agent.state_dir),
        lambda path: load_model(config, path)[0],
        lambda payload, retain: publisher.publish(topics.DEPLOY_STATE, payload, qos=0, retain=retain),
        startup,
        ResponseTopics(publisher.settings.topic_prefix, publisher.publish_reply),
    )
    stack.callback(deployer.close)  # publishes a deployment it cuts short: before the publisher closes
    publisher.subscribe(topics.DEPLOY, deployer.on_deploy, replies=True)
    return deployer


def _home_assistant(config: AgentConfig, publisher: MqttPublisher, detector: Detector, stack: ExitStack) -> None:
    """Announce the device to Home Assistant (before start(): it goes out once connected), or remove it."""
    ha, device_id = config.homeassistant, config.mqtt.device_id
    topic = discovery_topic(ha.discovery_prefix, device_id)
    if not ha.discovery:
        # Removes what an earlier run announced; a no-op on the broker when there is nothing.
        publisher.publish_absolute(topic, b"", qos=1, retain=True)
        return
    labels = classes_of_interest(detector.names, ha.classes, config.model.classes)
    prefix, name = publisher.settings.topic_prefix, detector.identity.name
    tracked = config.tracking.enabled  # zones and lines count tracked objects: without tracking they have none
    zones = tuple((zone.name, zone.labels or labels) for zone in config.zones) if tracked else ()
    lines = tuple(line.name for line in config.lines.lines) if tracked else ()
    device = DiscoveryDevice(device_id, prefix, name, labels, package_version(), project_url(), zones, lines)
    # Entities of components gone since the last run (a line taken out of the config) are removed:
    # the retained message names them with their platform alone for as long as this run lasts.
    record = DiscoveryRecord(config.agent.state_dir)
    body = discovery_payload(device)
    payload = dumps(with_removals(body, record.load()))
    record.save(announced(body))
    announcer = DiscoveryAnnouncer(lambda t, p: publisher.publish_absolute(t, p, qos=1, retain=True), topic, payload)
    stack.callback(announcer.close)  # its timer publishes: stopped before the publisher closes
    publisher.subscribe(f"{ha.discovery_prefix}/{topics.HA_STATUS}", announcer.on_ha_status, absolute=True)
    announcer.announce()  # retained: the publisher also sends it again on every connect

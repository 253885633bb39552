"""The fleet tools' broker connection: the agent's [mqtt] section, a client id of the tool's own."""

from __future__ import annotations

import os
from dataclasses import replace

from agent.config import MqttConfig
from agent.transport.connection import MqttSettings
from agent.transport.operator import MqttSession

__all__ = ["fleet_session", "fleet_settings"]


def fleet_settings(mqtt: MqttConfig) -> MqttSettings:
    """The connection settings of `mqtt` with a client id of the tool's own, topics under the bare prefix."""
    # A client id of its own: run on a Pi, the device id would make the broker drop the agent.
    client_id = f"yolo-edge-fleet-{os.getpid()}-{os.urandom(3).hex()}"
    return replace(MqttSettings.from_config(mqtt), client_id=client_id, topic_prefix=mqtt.prefix)


def fleet_session(mqtt: MqttConfig, timeout: float) -> MqttSession:
    """An unconnected session to the broker of `mqtt` (every device)."""
    return MqttSession(fleet_settings(mqtt), timeout)

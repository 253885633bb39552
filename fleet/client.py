"""The fleet tools' broker connection: the agent's [mqtt] section, a client id of the tool's own."""

from __future__ import annotations

import os
from dataclasses import replace

from agent.config import MqttConfig
from agent.transport.connection import MqttSettings
from agent.transport.session import MqttSession

__all__ = ["fleet_session"]


def fleet_session(mqtt: MqttConfig, timeout: float) -> MqttSession:
    """An unconnected session to the broker of `mqtt`, topics under the bare prefix (every device)."""
    # A client id of its own: run on a Pi, the device id would make the broker drop the agent.
    client_id = f"yolo-edge-fleet-{os.getpid()}-{os.urandom(3).hex()}"
    settings = replace(MqttSettings.from_config(mqtt), client_id=client_id, topic_prefix=mqtt.prefix)
    return MqttSession(settings, timeout)

"""Every MQTT topic the project speaks, as suffixes under `<prefix>/<device>/` (docs/topics.md).

No other module spells a topic: publishers, subscribers, Home Assistant discovery and the
fleet tools all name them from here, so a rename is one line and a typo is a NameError.
"""

from __future__ import annotations

# What the agent publishes.
STATUS = "status"  # online / offline (last will) / stopped, retained
DETECTIONS = "detections"
EVENTS = "events"  # per-label presence events, sequenced through the outbox
PRESENCE = "presence"  # the open presences, retained
STATS = "stats"  # retained
SNAPSHOT = "snapshot"  # JPEG, retained
SETTINGS = "settings"  # the runtime settings in force, retained
SET_RESULT = "set/result"
DEPLOY_STATE = "deploy/state"

# What the agent subscribes to.
SET = "set"
SNAPSHOT_REQUEST = "snapshot/request"
DEPLOY = "deploy"

# Home Assistant's birth message, under its discovery prefix.
HA_STATUS = "status"

# The payloads of STATUS.
ONLINE = b"online"
OFFLINE = b"offline"
STOPPED = b"stopped"


def device_topic(prefix: str, device: str, suffix: str) -> str:
    """`<prefix>/<device>/<suffix>`."""
    return f"{prefix}/{device}/{suffix}"


def checked_suffix(topic: str) -> str:
    """`topic` if it may be published to; ValueError for an empty one or one with a wildcard or NUL."""
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"invalid MQTT topic {topic!r}: must be non-empty without +, # or NUL")
    return topic

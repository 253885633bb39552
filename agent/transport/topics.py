"""Every MQTT topic the project speaks, as suffixes under `<prefix>/<device>/` (docs/topics.md).

No other module spells a topic: publishers, subscribers, Home Assistant discovery and the
fleet tools all name them from here, so a rename is one line and a typo is a NameError.
PUBLISHED and SUBSCRIBED are what the shipped ACL (systemd/mosquitto.acl) and the dashboard's
topic list are tested against (tests/systemd/test_acl.py, tests/fleet/test_dashboard_topics.py):
a topic added here and not there fails a test instead of being dropped by the broker.
"""

from __future__ import annotations

# What the agent publishes.
STATUS = "status"  # online / offline (last will) / stopped, retained
DETECTIONS = "detections"
EVENTS = "events"  # per-label presence events, sequenced through the outbox
OBJECTS = "objects"  # per-object new / update / end, sequenced through the outbox
ZONES = "zones"  # per-zone counts by label, retained
LINES = "lines"  # per-line crossing counts by direction and label, retained
PRESENCE = "presence"  # the open presences, retained
STATS = "stats"  # retained
SNAPSHOT = "snapshot"  # JPEG, retained
SNAPSHOT_CLEAN = "snapshot/clean"  # the same frame as SNAPSHOT with nothing drawn, JPEG, retained
SETTINGS = "settings"  # the runtime settings in force, retained
SET_RESULT = "set/result"
DEPLOY_STATE = "deploy/state"

# What the agent subscribes to.
SET = "set"
SNAPSHOT_REQUEST = "snapshot/request"
DEPLOY = "deploy"

# The subtree of MQTT 5 response topics the agent answers on: `<prefix>/<device>/reply/...`.
REPLY = "reply"

# Home Assistant's birth message, under its discovery prefix.
HA_STATUS = "status"

# Every topic the agent publishes under `<prefix>/<device>/` (besides answers under REPLY).
PUBLISHED: tuple[str, ...] = (
    STATUS,
    DETECTIONS,
    EVENTS,
    OBJECTS,
    ZONES,
    LINES,
    PRESENCE,
    STATS,
    SNAPSHOT,
    SNAPSHOT_CLEAN,
    SETTINGS,
    SET_RESULT,
    DEPLOY_STATE,
)
# Every topic the agent subscribes to under `<prefix>/<device>/` (besides HA_STATUS under Home Assistant's prefix).
SUBSCRIBED: tuple[str, ...] = (SET, SNAPSHOT_REQUEST, DEPLOY)

# The payloads of STATUS.
ONLINE = b"online"
OFFLINE = b"offline"
STOPPED = b"stopped"


def device_topic(prefix: str, device: str, suffix: str) -> str:
    """`<prefix>/<device>/<suffix>`."""
    return f"{prefix}/{device}/{suffix}"


def ha_discovery_topic(discovery_prefix: str, device: str) -> str:
    """Where the agent announces itself to Home Assistant: `<discovery_prefix>/device/<device>/config`."""
    return f"{discovery_prefix}/device/{device}/config"


def checked_suffix(topic: str) -> str:
    """`topic` if it may be published to; ValueError for an empty one or one with a wildcard or NUL."""
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"invalid MQTT topic {topic!r}: must be non-empty without +, # or NUL")
    return topic

"""The agent's configuration: defaults < TOML file < environment < command line.

keys.py says how one key is read and checked, sections.py declares every section and key,
load.py reads the layers and validates them together. Import from here.
"""

from agent.config.keys import ConfigError
from agent.config.load import ENV_PREFIX, PASSWORD_ENV, load_config
from agent.config.sections import (
    DEVICE_ID_RE,
    LOG_LEVELS,
    PRECISIONS,
    SECTIONS,
    AgentConfig,
    AgentSectionConfig,
    DeployConfig,
    EventsConfig,
    HomeAssistantConfig,
    ModelConfig,
    MotionConfig,
    MqttConfig,
    RemoteConfig,
    SnapshotConfig,
    SourceConfig,
    StatsConfig,
    TrackingConfig,
    default_device_id,
    default_state_dir,
)
from agent.config.zones import ZoneConfig

__all__ = [
    "DEVICE_ID_RE",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "PASSWORD_ENV",
    "PRECISIONS",
    "SECTIONS",
    "AgentConfig",
    "AgentSectionConfig",
    "ConfigError",
    "DeployConfig",
    "EventsConfig",
    "HomeAssistantConfig",
    "ModelConfig",
    "MotionConfig",
    "MqttConfig",
    "RemoteConfig",
    "SnapshotConfig",
    "SourceConfig",
    "StatsConfig",
    "TrackingConfig",
    "ZoneConfig",
    "default_device_id",
    "default_state_dir",
    "load_config",
]

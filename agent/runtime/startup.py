"""What a starting agent reads from its config: the source, the model (a deployed bundle or `[model]
path`), the scene and the runtime settings. Shared by `run` and `check`, so `check` fails on exactly
what would stop `run`."""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentConfig
from agent.control.deploy.active_bundle import StartupModel, load_startup_model
from agent.control.remote_settings import RuntimeSettings
from agent.pipeline.detector import Detector, LoadReport, label_ids, load_detector
from agent.pipeline.precision_cache import PrecisionCache
from agent.pipeline.sources import FrameSource, open_source


def load_model(config: AgentConfig, path: Path) -> tuple[Detector, LoadReport]:
    """The model at `path` with the configured precision policy, threads and thresholds (deployed ones too)."""
    model = config.model
    detector, report = load_detector(
        path,
        model.precision,
        model.threads or 0,
        confidence=model.confidence,
        iou=model.iou,
        classes=model.classes,
        class_confidence=dict(model.class_confidence),
        max_detections=model.max_detections,
        precision_cache=PrecisionCache(config.agent.state_dir),
    )
    # Labels are only known once the model is: checked here so `check` reports them too.
    label_ids(detector.names, config.homeassistant.classes, "homeassistant.classes")
    return detector, report


def startup_model(config: AgentConfig) -> tuple[Detector, LoadReport, StartupModel]:
    """The deployed bundle recorded in the state directory if it still verifies, else `[model] path`."""
    assert config.model.path is not None  # load_config(require_model=True)
    (detector, report), startup = load_startup_model(
        config.agent.state_dir, config.deploy.enabled, config.model.path, lambda path: load_model(config, path)
    )
    return detector, report, startup


def open_configured_source(config: AgentConfig) -> FrameSource:
    c = config.source
    return open_source(c.uri, c.loop, c.fps, c.reconnect_max_s, c.stall_timeout_s)


def runtime_settings(config: AgentConfig) -> RuntimeSettings:
    """What `set` may change, as the config starts it; max_fps and publish_detections start unlimited and on."""
    model = config.model
    return RuntimeSettings(model.confidence, model.iou, model.classes, model.class_confidence)

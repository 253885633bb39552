"""A frame loop put together as `yolo-edge-agent run` does (agent/runtime/run.py), for tests and
benchmarks that run it in-process with their own source, detector and publisher."""

from __future__ import annotations

import threading

from agent.control.deploy.switchover import Deployments, ModelSwitch
from agent.pipeline.detector import Detector
from agent.runtime.loop import AgentLoop, FrameSourceLike, LoopHooks, LoopSettings, RemoteControl
from agent.runtime.reporter import Reporter, ReportSettings
from agent.scene.scene import Scene, SceneSettings
from agent.system.board import BoardHealth
from agent.transport.publisher import Publisher


def frame_loop(
    source: FrameSourceLike,
    detector: Detector,
    publisher: Publisher,
    settings: LoopSettings | None = None,
    *,
    scene: SceneSettings | None = None,
    report: ReportSettings | None = None,
    control: RemoteControl | None = None,
    deployments: Deployments | None = None,
    hooks: LoopHooks | None = None,
    stop: threading.Event | None = None,
) -> AgentLoop:
    """scene: None = motion gating and tracking off (presence only)."""
    settings = settings or LoopSettings()
    return AgentLoop(
        source,
        ModelSwitch(detector, deployments),
        Scene(scene or SceneSettings.presence_only(), detector.names),
        Reporter(publisher, report or ReportSettings(), BoardHealth(refresh_s=settings.stats_interval)),
        settings,
        control=control,
        hooks=hooks or LoopHooks(),
        stop=stop,
    )

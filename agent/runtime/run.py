"""`yolo-edge-agent run`: start what the config asks for, run the frame loop, shut down in order.

The ExitStack closes what was started, newest first, however the run ends: the notifier, the
deployer, the announcer, the publisher (paho's thread), the outbox, the source.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import ExitStack, closing

from agent.config import AgentConfig
from agent.control.deploy.deployer import Deployer
from agent.control.deploy.switchover import ModelSwitch
from agent.pipeline.results import FrameResult
from agent.pipeline.snapshot import SnapshotSettings
from agent.runtime.connect import deployer_for, mqtt_publisher
from agent.runtime.line_store import LineStore
from agent.runtime.loop import AgentLoop, LoopHooks, LoopSettings, RemoteControl
from agent.runtime.reporter import Reporter, ReportSettings
from agent.runtime.startup import open_configured_source, runtime_settings, startup_model
from agent.scene.scene import Scene, scene_settings
from agent.system.board import BoardHealth
from agent.system.code_pages import release_startup_pages
from agent.system.notify import SystemdNotifier
from agent.transport.publisher import Publisher, StdoutPublisher
from agent.transport.stats_schema import Stats

log = logging.getLogger("yolo_edge.agent")


def command_run(config: AgentConfig, max_frames: int, dry_run: bool) -> int:
    # The imports are done: what their loading touched in the libraries is not needed again (code_pages).
    release_startup_pages()
    source = open_configured_source(config)
    with ExitStack() as stack:
        stack.enter_context(source)
        detector, _, startup = startup_model(config)
        control = RemoteControl(runtime_settings(config))
        deployer: Deployer | None = None
        publisher: Publisher
        if dry_run:  # no broker: no commands come in, and Home Assistant is not told about a dry run
            publisher = StdoutPublisher(f"{config.mqtt.prefix}/{config.mqtt.device_id}")
            stack.callback(publisher.close, timeout=3.0)
        else:
            publisher, inbox = mqtt_publisher(config, stack, detector)
            control = RemoteControl(control.runtime, inbox)
            if config.deploy.enabled:
                deployer = deployer_for(config, publisher, startup, stack)
                deployer.announce_startup(detector.identity)
        stop = threading.Event()
        notifier = stack.enter_context(closing(SystemdNotifier()))
        models = ModelSwitch(detector, deployer)
        hooks = _service_hooks(notifier, models, config.agent.ready_timeout_s, source.name)

        def request_stop(signum: int, _frame: object) -> None:
            log.info("%s received: stopping", signal.Signals(signum).name)
            notifier.stopping()
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        snapshot = config.snapshot
        line_store = LineStore(config.agent.state_dir)
        report = ReportSettings(
            detections_qos=config.mqtt.detections_qos,
            publish_empty=config.mqtt.publish_empty,
            snapshot=SnapshotSettings(snapshot.width, snapshot.quality, snapshot.draw_regions)
            if snapshot.enabled
            else None,
        )
        loop = AgentLoop(
            source,
            models,
            # Zone labels are checked against the model now; a model deployed later with other labels keeps
            # the zones, whose unknown labels then count nothing.
            Scene(scene_settings(config, detector.names), detector.names, line_store.load()),
            Reporter(publisher, report, BoardHealth(refresh_s=config.stats.interval), line_store),
            LoopSettings(config.source.max_frame_age, config.stats.interval, max_frames),
            control=control,
            hooks=hooks,
            stop=stop,
        )
        # Started: nor is what building the session and connecting touched.
        release_startup_pages()
        try:
            counters = loop.run()
        finally:
            notifier.stopping()
    log.info("stopped after %d frames (%d stale, %d dropped)", counters.processed, counters.stale, counters.dropped)
    return 0


def _service_hooks(notifier: SystemdNotifier, models: ModelSwitch, ready_timeout_s: float, camera: str) -> LoopHooks:
    """What systemd hears: watchdog pings while the loop is healthy (frames or not), READY with the first
    processed frame or, without one, after ready_timeout_s, and a status line with every stats message."""
    ticks_from = time.monotonic()
    waiting_for_camera = False

    def tick() -> None:
        nonlocal waiting_for_camera
        notifier.alive()
        if not notifier.is_ready and time.monotonic() - ticks_from >= ready_timeout_s:
            # Ready without a frame: the agent runs and reports; the camera is the source's to wait for.
            waiting_for_camera = True
            log.warning(
                "no frame from %s within %g s; reporting ready, waiting for the camera",
                camera,
                ready_timeout_s,
            )
            notifier.ready(f"waiting for the camera ({camera}): no frame yet")

    def frame_done(_result: FrameResult) -> None:
        nonlocal waiting_for_camera
        status = f"running {models.detector.identity.precision}, first frame processed"
        if waiting_for_camera:
            waiting_for_camera = False
            notifier.status(status)
        notifier.ready(status)

    def stats_done(stats: Stats) -> None:
        assert stats.mqtt is not None and stats.frames is not None  # the agent's own stats say both
        broker = "connected" if stats.mqtt.connected else "broker unreachable"
        precision = models.detector.identity.precision  # a deployment may have changed it
        notifier.status(f"{stats.fps} fps, {precision}, {broker}, {stats.frames.processed} frames")

    return LoopHooks(on_tick=tick, on_frame=frame_done, on_stats=stats_done)

"""yolo-edge-agent: run | check | bench | fleet.

Errors a user can cause (config, source, model, broker) become one line and
exit code 2 before anything starts, so systemd's Restart=on-failure acts and
the journal says what to fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, closing
from pathlib import Path
from typing import TYPE_CHECKING

from agent.bundle import BundleError
from agent.config import AgentConfig, ConfigError, load_config
from agent.control.commands import CommandInbox
from agent.control.deploy.active_bundle import StartupModel, load_startup_model
from agent.control.deploy.deployer import Deployer, DeploySettings
from agent.control.remote_settings import RuntimeSettings
from agent.control.response_topics import ResponseTopics
from agent.pipeline.capture import SourceError
from agent.pipeline.detector import Detector, LoadReport, label_ids, load_detector
from agent.pipeline.inference import ModelLoadError
from agent.pipeline.loop import AgentLoop, LoopSettings
from agent.pipeline.precision_cache import PrecisionCache
from agent.pipeline.results import FrameResult
from agent.pipeline.snapshot import SnapshotSettings
from agent.pipeline.sources import FrameSource, open_source
from agent.scene.scene import Scene, scene_settings
from agent.system.notify import SystemdNotifier
from agent.system.opencv_threads import opencv_on_calling_thread
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
from agent.transport.outbox import OutboxError
from agent.transport.payloads import dumps
from agent.transport.publisher import Publisher, StdoutPublisher

if TYPE_CHECKING:  # paho is imported only where MQTT is used: a dry run and `bench` never load it
    from agent.transport.mqtt import MqttPublisher

log = logging.getLogger("yolo_edge.agent")

EXIT_USER_ERROR = 2
CHECK_TIMEOUT_S = 5.0
# How long `run` waits for its first connection attempt before reading frames: a video's first
# frames come at once, and their QoS 0 detections would be dropped while still connecting.
FIRST_CONNECT_WAIT_S = 3.0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config file (see systemd/agent.example.toml)")
    parser.add_argument("--source", help="camera index or /dev/videoN, rtsp/http URL, video file, folder, picamera2")
    parser.add_argument("--model", type=Path, help="bundle directory or .onnx file")
    parser.add_argument("--precision", choices=("auto", "int8", "fp32"))
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (0 = all cores)")
    parser.add_argument("--mqtt-host")
    parser.add_argument("--mqtt-port", type=int)
    parser.add_argument("--device-id")
    parser.add_argument("--loop", action="store_true", default=None, help="restart a video file or folder at its end")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-edge-agent", description="YOLO detections from a camera to MQTT.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the detector and publish over MQTT")
    _add_common(run)
    run.add_argument("--max-frames", type=int, default=0, help="stop cleanly after N processed frames")
    run.add_argument("--dry-run", action="store_true", help="print messages as JSON lines instead of MQTT")
    check = commands.add_parser("check", help="validate config, source, model and broker, then exit")
    _add_common(check)
    bench = commands.add_parser("bench", help="per-stage latency table, FP32 vs INT8")
    _add_common(bench)
    bench.add_argument("--frames", type=int, default=100, help="frames per precision (default 100)")
    # Listed here for --help only: main() hands `fleet ...` to fleet/cli.py before this parser runs, so
    # the fleet package (and paho with it) is imported only when the alias is used.
    commands.add_parser(
        "fleet", add_help=False, help="the operator's tool (list, set, deploy, dashboard, exporter): yolo-edge-fleet"
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[tuple[str, str], object]:
    return {
        ("source", "uri"): args.source,
        ("source", "loop"): args.loop,
        ("model", "path"): args.model,
        ("model", "precision"): args.precision,
        ("model", "threads"): args.threads,
        ("mqtt", "host"): args.mqtt_host,
        ("mqtt", "port"): args.mqtt_port,
        ("mqtt", "device_id"): args.device_id,
    }


def configure_logging(level: str) -> None:
    # journald stamps every line itself; a terminal needs the time.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=level.upper(), format=f"{stamp}%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # OpenCV and FFmpeg print to stderr on every failed reopen; the source logs one line instead.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass


def _detector(config: AgentConfig, path: Path) -> tuple[Detector, LoadReport]:
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


def _startup_detector(config: AgentConfig) -> tuple[Detector, LoadReport, StartupModel]:
    """The deployed bundle recorded in the state directory if it still verifies, else `[model] path`."""
    assert config.model.path is not None  # load_config(require_model=True)
    (detector, report), startup = load_startup_model(
        config.agent.state_dir, config.deploy.enabled, config.model.path, lambda path: _detector(config, path)
    )
    return detector, report, startup


def _deployer(config: AgentConfig, publisher: MqttPublisher, startup: StartupModel, stack: ExitStack) -> Deployer:
    """Take `deploy` commands; states go out retained on `deploy/state` (QoS 0: re-sent on every connect)."""
    deployer = Deployer(
        DeploySettings.from_config(config.deploy, config.agent.state_dir),
        lambda path: _detector(config, path)[0],
        lambda payload, retain: publisher.publish(topics.DEPLOY_STATE, payload, qos=0, retain=retain),
        startup,
        ResponseTopics(publisher.settings.topic_prefix, publisher.publish_reply),
    )
    stack.callback(deployer.close)  # publishes a deployment it cuts short: before the publisher closes
    publisher.subscribe(topics.DEPLOY, deployer.on_deploy, replies=True)
    return deployer


def _runtime_settings(config: AgentConfig) -> RuntimeSettings:
    """What `set` may change, as the config starts it; max_fps and publish_detections start unlimited and on."""
    model = config.model
    return RuntimeSettings(model.confidence, model.iou, model.classes, model.class_confidence)


def _mqtt_publisher(config: AgentConfig, stack: ExitStack, detector: Detector) -> tuple[MqttPublisher, CommandInbox]:
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
    zones = tuple((zone.name, zone.labels or labels) for zone in config.zones) if config.tracking.enabled else ()
    device = DiscoveryDevice(device_id, prefix, name, labels, package_version(), project_url(), zones)
    announcer = DiscoveryAnnouncer(
        lambda t, p: publisher.publish_absolute(t, p, qos=1, retain=True), topic, dumps(discovery_payload(device))
    )
    stack.callback(announcer.close)  # its timer publishes: stopped before the publisher closes
    publisher.subscribe(f"{ha.discovery_prefix}/{topics.HA_STATUS}", announcer.on_ha_status, absolute=True)
    announcer.announce()  # retained: the publisher also sends it again on every connect


def command_run(config: AgentConfig, max_frames: int, dry_run: bool) -> int:
    topic_prefix = f"{config.mqtt.prefix}/{config.mqtt.device_id}"
    source = _open_configured_source(config)
    with ExitStack() as stack:
        stack.enter_context(source)
        detector, _, startup = _startup_detector(config)
        inbox: CommandInbox | None = None
        deployer: Deployer | None = None
        publisher: Publisher
        # Whatever goes wrong from here on, the stack closes what was started, newest first: the notifier,
        # the deployer, the announcer, the publisher (paho's thread), the outbox, the source.
        if dry_run:  # no broker: no commands come in, and Home Assistant is not told about a dry run
            publisher = StdoutPublisher(topic_prefix)
            stack.callback(publisher.close, timeout=3.0)
        else:
            publisher, inbox = _mqtt_publisher(config, stack, detector)
            if config.deploy.enabled:
                deployer = _deployer(config, publisher, startup, stack)
                deployer.announce_startup(detector.identity)
        stop = threading.Event()
        notifier = stack.enter_context(closing(SystemdNotifier()))

        def request_stop(signum: int, _frame: object) -> None:
            log.info("%s received: stopping", signal.Signals(signum).name)
            notifier.stopping()
            stop.set()

        ticks_from = time.monotonic()
        waiting_for_camera = False

        def tick() -> None:
            nonlocal waiting_for_camera
            notifier.alive()
            if not notifier.is_ready and time.monotonic() - ticks_from >= config.agent.ready_timeout_s:
                # Ready without a frame: the agent runs and reports; the camera is the source's to wait for.
                waiting_for_camera = True
                log.warning(
                    "no frame from %s within %g s; reporting ready, waiting for the camera",
                    source.name,
                    config.agent.ready_timeout_s,
                )
                notifier.ready(f"waiting for the camera ({source.name}): no frame yet")

        def frame_done(result: FrameResult) -> None:
            nonlocal waiting_for_camera
            status = f"running {loop.detector.identity.precision}, first frame processed"
            if waiting_for_camera:
                waiting_for_camera = False
                notifier.status(status)
            notifier.ready(status)

        def stats_done(stats: dict) -> None:
            broker = "connected" if stats["mqtt"]["connected"] else "broker unreachable"
            precision = loop.detector.identity.precision  # a deployment may have changed it
            notifier.status(f"{stats['fps']} fps, {precision}, {broker}, {stats['frames']['processed']} frames")

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        snapshot = config.snapshot
        settings = LoopSettings(
            max_frame_age=config.source.max_frame_age,
            stats_interval=config.stats.interval,
            end_after=config.events.end_after,
            detections_qos=config.mqtt.detections_qos,
            publish_empty=config.mqtt.publish_empty,
            max_frames=max_frames,
            snapshot=SnapshotSettings(snapshot.width, snapshot.quality) if snapshot.enabled else None,
        )
        loop = AgentLoop(
            source,
            detector,
            publisher,
            settings,
            stop=stop,
            on_frame=frame_done,
            on_tick=tick,
            on_stats=stats_done,
            inbox=inbox,
            runtime=_runtime_settings(config),
            deployer=deployer,
            scene_factory=_scene_factory(config, detector),
        )
        try:
            counters = loop.run()
        finally:
            notifier.stopping()
    log.info("stopped after %d frames (%d stale, %d dropped)", counters.processed, counters.stale, counters.dropped)
    return 0


def _scene_factory(config: AgentConfig, detector: Detector) -> Callable[[Mapping[int, str]], Scene] | None:
    """Motion gating, tracking and zones as configured; zone labels are checked against the model now (a
    model deployed later with other labels keeps the zones, whose unknown labels then count nothing)."""
    settings = scene_settings(config, detector.names)
    if settings is None:
        return None
    return lambda names: Scene(settings, names)


def _open_configured_source(config: AgentConfig) -> FrameSource:
    c = config.source
    return open_source(c.uri, c.loop, c.fps, c.reconnect_max_s, c.stall_timeout_s)


def command_check(config: AgentConfig) -> int:
    print("config: ok" + (f" ({config.config_file})" if config.config_file else " (defaults)"))
    with _open_configured_source(config) as src:
        src.probe(CHECK_TIMEOUT_S)
        print(f"source: ok ({src.name}, first frame received)")
    detector, report, startup = _startup_detector(config)
    scene_settings(config, detector.names)  # the zones' labels against the model's
    identity = detector.identity
    timing = ", ".join(f"{p} {t:.1f} ms" for p, t in report.timings_ms.items())
    print(f"model: ok ({identity.name} {identity.precision}, sha256 verified{'; ' + timing if timing else ''})")
    if startup.deployed is not None:
        print(f"model: the deployed bundle {startup.path} ([model] path is the fallback)")
    elif startup.fallback_reason is not None:
        print(f"model: [model] path {startup.path}; {startup.fallback_reason}")
    from agent.transport.connection import MqttSettings, probe_broker

    probe_broker(MqttSettings.from_config(config.mqtt), CHECK_TIMEOUT_S)
    print(f"broker: ok ({config.mqtt.host}:{config.mqtt.port})")
    shown = ",".join((topics.STATUS, topics.DETECTIONS, topics.EVENTS, topics.STATS))
    print(f"topics: {config.mqtt.prefix}/{config.mqtt.device_id}/{{{shown}}}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fleet"]:  # the operator's tool: no model or source, its own broker options (fleet/cli.py)
        from fleet.cli import ALIAS_PROG
        from fleet.cli import main as fleet_main

        return fleet_main(argv[1:], ALIAS_PROG)
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, overrides=_overrides(args), require_model=True)
    except ConfigError as error:
        print(f"yolo-edge-agent: config error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    configure_logging(config.agent.log_level)
    opencv_on_calling_thread()
    try:
        if args.command == "run":
            return command_run(config, args.max_frames, args.dry_run)
        if args.command == "check":
            return command_check(config)
        from agent.pipeline.bench import command_bench

        return command_bench(config, args.frames, args.source)
    except ConfigError as error:
        print(f"yolo-edge-agent: config error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (SourceError, BundleError, ModelLoadError, OutboxError) as error:
        print(f"yolo-edge-agent: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ConnectionError as error:
        print(f"yolo-edge-agent: broker error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""yolo-edge-agent: run | check | bench | fleet.

Errors a user can cause (config, source, model, broker) become one line and
exit code 2 before anything starts, so systemd's Restart=on-failure acts and
the journal says what to fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from agent.bundle import BundleError
from agent.config import AgentConfig, ConfigError, load_config
from agent.pipeline.capture import SourceError
from agent.pipeline.inference import ModelLoadError
from agent.runtime.run import command_run
from agent.runtime.startup import open_configured_source, startup_model
from agent.scene.scene import scene_settings
from agent.system.opencv_threads import opencv_on_calling_thread
from agent.transport import topics
from agent.transport.outbox import OutboxError

log = logging.getLogger("yolo_edge.agent")

EXIT_USER_ERROR = 2
CHECK_TIMEOUT_S = 5.0


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


def command_check(config: AgentConfig) -> int:
    print("config: ok" + (f" ({config.config_file})" if config.config_file else " (defaults)"))
    with open_configured_source(config) as src:
        src.probe(CHECK_TIMEOUT_S)
        print(f"source: ok ({src.name}, first frame received)")
    detector, report, startup = startup_model(config)
    scene_settings(config, detector.names)  # the zones' labels against the model's
    identity = detector.identity
    timing = ", ".join(f"{p} {t:.1f} ms" for p, t in report.timings_ms.items())
    print(f"model: ok ({identity.name} {identity.precision}, sha256 verified{'; ' + timing if timing else ''})")
    if startup.deployed is not None:
        print(f"model: the deployed bundle {startup.path} ([model] path is the fallback)")
    elif startup.fallback_reason is not None:
        print(f"model: [model] path {startup.path}; {startup.fallback_reason}")
    from agent.transport.client import probe_broker
    from agent.transport.connection import MqttSettings

    node = probe_broker(MqttSettings.from_config(config.mqtt), CHECK_TIMEOUT_S)
    print(f"broker: ok ({node})")
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

"""`make demo`: the main job end to end on this machine.

fixture weights -> bundle (FP32 + validated INT8) -> a local Mosquitto -> the
agent on a generated sample video -> every message as a subscriber receives
it -> the latency summary from the agent's final stats.

    python -m benchmarks.demo [--mqtt-host H --mqtt-port P] [--out demo-out]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from benchmarks.fixture.make_shapes import write_dataset
from benchmarks.fixture.video import write_shapes_video

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11n.pt"
BIN = Path(sys.executable).parent
DEMO_CONFIG = """\
[zones.right_half]
polygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
inertia = 2

[lines.middle]
points = [[0.5, 1.0], [0.5, 0.0]]  # drawn upwards: moving right, into right_half, is `in`
"""


def start_local_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    from benchmarks.mosquitto import Broker

    broker = Broker(workdir).start()
    return broker.process, broker.port


def short(topic: str, payload: bytes) -> str:
    text = payload.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        return f"{topic:<32} {text}"
    if topic.endswith("/detections"):
        found = ", ".join(
            f"{d['label']} {d['confidence']:.2f}" + (f" #{d['track_id'][-6:]}" if d.get("track_id") else "")
            for d in body["detections"]
        )
        return f"{topic:<32} frame {body['frame']:>4}: {found}  ({body['latency_ms']['total']:.1f} ms)"
    if topic.endswith("/stats"):
        frames = body["frames"]
        gated = ""
        if "detected" in frames:
            gated = f", detector on {frames['detected']} (motion skipped {frames['motion_skipped']})"
        return f"{topic:<32} fps {body['fps']}, processed {frames['processed']}{gated}, rss {body['rss_mb']} MB"
    if topic.endswith("/objects") and body.get("type") == "cross":
        return f"{topic:<32} cross  {body['label']} #{body['id'][-6:]} crossed {body['line']} ({body['direction']})"
    if topic.endswith("/lines"):
        counts = "; ".join(
            f"{line} in {sum(d['in'].values())} out {sum(d['out'].values())}" for line, d in body["lines"].items()
        )
        return f"{topic:<32} {counts}"
    if topic.endswith("/objects"):
        zones = f" in {','.join(body['zones'])}" if body["zones"] else ""
        entered = f" (entered {','.join(body['entered_zones'])})" if body["entered_zones"] else ""
        dwell = "".join(f", {seconds:.1f} s in {zone}" for zone, seconds in body.get("dwell_s", {}).items())
        label = f"{body['label']} #{body['id'][-6:]} {body['score']:.2f}"
        return f"{topic:<32} {body['type']:<6} {label}{zones}{entered}{dwell}"
    return f"{topic:<32} {text}"


def subscribe(host: str, port: int, prefix: str, received: list, ready: threading.Event) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="yolo-edge-demo-viewer")

    def on_connect(client, userdata, flags, reason, properties):
        client.subscribe(f"{prefix}/#", qos=1)

    def on_subscribe(client, userdata, mid, reasons, properties):
        ready.set()

    def on_message(client, userdata, message):
        received.append((message.topic, message.payload))
        print(short(message.topic, message.payload), flush=True)

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(host, port)
    client.loop_start()
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--mqtt-host", default=None)
    parser.add_argument("--mqtt-port", type=int, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    print("== 1/4 fixture dataset and sample video (regenerated from their seeds)")
    data_yaml = write_dataset(args.out / "shapes", splits={"train": (0, 200), "val": (100_000, 100)})
    video = args.out / "sample.avi"
    write_shapes_video(video, frames=150)

    print("== 2/4 convert the fixture model into a bundle")
    bundle = args.out / "bundle"
    subprocess.run([BIN / "yolo-edge-convert", WEIGHTS, "--out", bundle, "--calib", data_yaml, "--force"], check=True)

    broker = None
    host, port = args.mqtt_host, args.mqtt_port
    if host is None and port is None:
        broker, port = start_local_broker(args.out)
        host = "127.0.0.1"
        print(f"== 3/4 local Mosquitto on {host}:{port}")
    else:
        host, port = host or "localhost", port or 1883
        print(f"== 3/4 using the broker at {host}:{port}")

    received: list[tuple[str, bytes]] = []
    ready = threading.Event()
    prefix = "yolo-edge/demo"
    viewer = subscribe(host, port, prefix, received, ready)
    if not ready.wait(10):
        print(f"cannot subscribe at {host}:{port}", file=sys.stderr)
        return 1
    # One zone, the right half of the frame: `objects` say who entered it, `zones` counts it; one line
    # down the middle counts who crossed it, each way.
    config = args.out / "agent.toml"
    config.write_text(DEMO_CONFIG)
    try:
        print("== 4/4 agent on the sample video; messages as the subscriber receives them")
        subprocess.run(
            [
                BIN / "yolo-edge-agent",
                "run",
                "--config",
                config,
                "--source",
                video,
                "--model",
                bundle,
                "--mqtt-host",
                host,
                "--mqtt-port",
                str(port),
                "--device-id",
                "demo",
            ],
            check=True,
            env={**os.environ, "YOLO_EDGE_AGENT_STATE_DIR": str(args.out / "state")},
        )
        time.sleep(1.0)  # let the last messages reach the viewer
    finally:
        viewer.loop_stop()
        viewer.disconnect()
        if broker is not None:
            broker.terminate()
            broker.wait(5)

    stats = [json.loads(p) for t, p in received if t.endswith("/stats")]
    if not stats:
        print("no stats arrived", file=sys.stderr)
        return 1
    final = stats[-1]
    print("\n== latency summary (agent's final stats window, ms)")
    print(f"{'stage':<12}{'p50':>8}{'p95':>8}{'max':>8}")
    for stage, values in final["latency_ms"].items():
        print(f"{stage:<12}{values['p50']:>8.2f}{values['p95']:>8.2f}{values['max']:>8.2f}")
    counts = {}
    for topic, _ in received:
        counts[topic.rsplit("/", 1)[1]] = counts.get(topic.rsplit("/", 1)[1], 0) + 1
    print(
        f"model {final['model']['name']} {final['model']['precision']}; fps {final['fps']}; "
        f"messages: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}"
    )
    print(f"bundle report: {bundle / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Motion regions: what detecting on native-resolution crops finds, and costs, against the whole frame.

    python -m benchmarks.regions_bench [--seconds 90] [--fps 5] [--threads 1] [--at-once 1]
                                       [--workdir DIR] [--out benchmarks/results]

A generated 1080p video (benchmarks/fixture/far_video.py: the fixture's shapes, 40 to 400 px high, a
few at a time moving across a still textured background) is played at its fps by the real agent
(`yolo-edge-agent run`, own process and state directory, a real Mosquitto) four times: the whole
frame letterboxed into the fixture weights converted at 640 and at 320 (`[motion] regions = false`),
and `[motion] regions = true` with each of those bundles. Motion gating is on in all four (the
defaults), INT8, the same threads. Measured: recall on the true boxes per object size over the frames
that ran the detector (the `detections` messages), the share of all frames each object was found
on, false positives, the agent's CPU seconds (the child's user + sys from os.wait4), detector frames
and crops per frame (stats). The contenders play one after another (--at-once N: N at a time): each must
keep up with the video, every frame of the file processed and none dropped, for the CPU to compare, and
on a 2-core machine four at once dropped up to half of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from benchmarks.fixture.far_video import FarScene, plan_far_scene, write_far_video
from benchmarks.machine import load_average, logical_cpus, process_cpu_seconds
from benchmarks.mosquitto import Broker
from benchmarks.regions_ceiling import ceiling
from benchmarks.regions_report import write_outputs
from benchmarks.regions_scoring import Score, Seen, parse_detections, score_run
from benchmarks.tables import progress

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PREFIX = "yolo-edge"
CONFIG = """\
[source]
fps = {fps}

[model]
precision = "int8"
threads = {threads}

[mqtt]
publish_empty = true

[stats]
interval = 1.0

[motion]
regions = {regions}
"""
CPU_SAMPLE_S = 1.0
SETTLE_S = 10.0


@dataclass(frozen=True)
class Contender:
    name: str
    imgsz: int
    regions: bool

    @property
    def device(self) -> str:
        return self.name.replace(" ", "-")


# Heaviest with lightest when two run at once: regions at 640 may run several 640 crops a frame.
CONTENDERS = (
    Contender("whole 640", 640, False),
    Contender("regions 320", 320, True),
    Contender("regions 640", 640, True),
    Contender("whole 320", 320, False),
)


@dataclass
class Run:
    """One agent child. cpu_s: user + sys at exit (os.wait4); samples: (seconds since start, CPU so far)."""

    contender: Contender
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    returncode: int | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    stderr: str = ""


class Observer:
    """A subscriber on every contender's detections, stats and status; keeps each message with when it came."""

    def __init__(self, host: str, port: int, devices: list[str]) -> None:
        self._lock = threading.Lock()
        self._messages: dict[tuple[str, str], list[tuple[float, dict]]] = {}
        self._devices = devices
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="yolo-edge-regions-bench")

        def on_connect(client, userdata, flags, reason, properties):  # type: ignore[no-untyped-def]
            kinds = ("detections", "stats", "status")
            client.subscribe([(f"{PREFIX}/{d}/{kind}", 0) for d in devices for kind in kinds])

        def on_subscribe(client, userdata, mid, reasons, properties):  # type: ignore[no-untyped-def]
            ready.set()

        def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
            _, device, kind = message.topic.split("/")
            text = message.payload.decode("utf-8", errors="replace")
            body = json.loads(text) if text.startswith("{") else {"text": text}
            with self._lock:
                self._messages.setdefault((device, kind), []).append((time.monotonic(), body))

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError(f"cannot subscribe at {host}:{port}")

    def messages(self, device: str, kind: str) -> list[tuple[float, dict]]:
        with self._lock:
            return list(self._messages.get((device, kind), []))

    def last_stats(self, device: str) -> dict:
        stats = self.messages(device, "stats")
        return stats[-1][1] if stats else {}

    def seen(self, device: str) -> dict[int, Seen]:
        """Video frame index -> that detector frame's detections."""
        return dict(parse_detections(body) for _, body in self.messages(device, "detections"))

    def settle(self, devices: list[str]) -> None:
        """Wait (bounded) until each device's `stopped` status came: its last messages came before it."""
        deadline = time.monotonic() + SETTLE_S
        for device in devices:
            while time.monotonic() < deadline:
                if any(body.get("text") == "stopped" for _, body in self.messages(device, "status")):
                    break
                time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def agent_version() -> str:
    """The last commit of agent/, and whether the checkout's agent/ differs from it: what the runs ran."""
    try:
        last = subprocess.run(["git", "log", "-1", "--format=%h %cI", "--", "agent/"], cwd=ROOT, capture_output=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "agent/"], cwd=ROOT, capture_output=True)
    except OSError:
        return "unknown (no git)"
    if last.returncode or not last.stdout.strip():
        return "unknown (not a git checkout)"
    changed = len(dirty.stdout.decode().splitlines())
    return last.stdout.decode().strip() + (f", with {changed} uncommitted file(s) in agent/" if changed else "")


def prepare_video(workdir: Path, scene: FarScene) -> Path:
    # Named by what it shows, so a --workdir never serves a video of another plan.
    digest = hashlib.sha256(repr(scene).encode()).hexdigest()[:12]
    path = workdir / f"far-{scene.frames}f-{scene.fps:g}fps-{digest}.avi"
    if path.exists():
        progress(f"reusing {path}")
        return path
    progress(f"writing {path} ({scene.frames} frames, 1920x1080, {len(scene.objects)} objects)")
    write_far_video(path, scene)
    return path


def start(run: Run, bundle: Path, video: Path, fps: float, threads: int, broker: Broker, state: Path) -> None:
    state.mkdir(parents=True)
    config = state / "agent.toml"
    config.write_text(CONFIG.format(fps=fps, threads=threads, regions=str(run.contender.regions).lower()))
    command = [str(BIN / "yolo-edge-agent"), "run", "--config", str(config), "--source", str(video)]
    command += ["--model", str(bundle), "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)]
    command += ["--device-id", run.contender.device]
    env = {**os.environ, "YOLO_EDGE_AGENT_STATE_DIR": str(state), "PYTHONPATH": str(ROOT)}
    run.started = time.monotonic()
    run.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=open(state / "stderr", "wb"))  # noqa: SIM115


def reap(run: Run, state: Path) -> None:
    """Wait for the child with os.wait4, which gives its own user + sys CPU; sample it meanwhile."""
    assert run.proc is not None
    pid = run.proc.pid
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(CPU_SAMPLE_S):
            try:
                run.samples.append((time.monotonic() - run.started, process_cpu_seconds(pid)))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(pid, 0)
    stop.set()
    sampler.join()
    run.proc.returncode = run.returncode = os.waitstatus_to_exitcode(status)
    run.wall_s = time.monotonic() - run.started
    run.cpu_s = usage.ru_utime + usage.ru_stime
    run.samples.append((run.wall_s, run.cpu_s))
    run.stderr = (state / "stderr").read_text(errors="replace")


def play(
    runs: list[Run],
    bundles: dict[int, Path],
    video: Path,
    scene: FarScene,
    args: argparse.Namespace,
    broker: Broker,
    observer: Observer,
    states: Path,
) -> None:
    """Run the contenders `args.at_once` at a time, printing progress every 10 s."""
    for first in range(0, len(runs), args.at_once):
        batch = runs[first : first + args.at_once]
        progress(f"playing {video.name} ({scene.frames / scene.fps:g} s): {', '.join(r.contender.name for r in batch)}")
        for run in batch:
            start(
                run, bundles[run.contender.imgsz], video, scene.fps, args.threads, broker, states / run.contender.device
            )
        reapers = [threading.Thread(target=reap, args=(r, states / r.contender.device)) for r in batch]
        for reaper in reapers:
            reaper.start()
        began = time.monotonic()
        while any(reaper.is_alive() for reaper in reapers):
            for reaper in reapers:
                reaper.join(timeout=10.0 / len(reapers))
            parts = []
            for run in batch:
                frames = observer.last_stats(run.contender.device).get("frames", {})
                cpu = run.samples[-1][1] if run.samples else 0.0
                counts = ", ".join(
                    f"{key} {frames.get(key, '-')}" for key in ("processed", "detected", "regions", "dropped")
                )
                parts.append(f"{run.contender.name}: {counts}, cpu {cpu:.1f} s")
            progress(f"{time.monotonic() - began:5.0f} s; " + "; ".join(parts))
        observer.settle([r.contender.device for r in batch])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.regions_bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=90.0, help="video length (default 90: every size as every class)"
    )
    parser.add_argument("--fps", type=float, default=5.0, help="video and agent frame rate (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of every agent (default 1)")
    parser.add_argument("--at-once", type=int, default=1, help="agents playing at the same time (default 1)")
    parser.add_argument("--workdir", type=Path, help="keep the bundles and video here for reruns (default: temporary)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.seconds < 10 or args.fps <= 0 or args.threads < 1 or not 1 <= args.at_once <= len(CONTENDERS):
        parser.error(f"--seconds >= 10, --fps > 0, --threads >= 1, --at-once 1..{len(CONTENDERS)}")
    os.environ["YOLO_OFFLINE"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    scene = plan_far_scene(args.seconds, args.fps)
    facts = {
        "cores": logical_cpus(),
        "load average at start (1/5/15 min)": load_average(),
        "agent code": agent_version(),
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="regions-bench-") as temp:
        workdir = (args.workdir or Path(temp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        from benchmarks.motion_bench import prepare_bundle  # the same conversion as the motion benchmark's

        bundles = {size: prepare_bundle(workdir, args.threads, size) for size in (320, 640)}
        video = prepare_video(workdir, scene)
        runs = [Run(c) for c in CONTENDERS]
        broker = Broker(Path(temp)).start()
        observer = Observer(broker.host, broker.port, [r.contender.device for r in runs])
        try:
            play(runs, bundles, video, scene, args, broker, observer, Path(temp) / "state")
        finally:
            observer.close()
            broker.stop()
        if all(r.returncode == 0 for r in runs):
            progress("the ceiling: each bundle on one crop centred on each object, every third frame")
            ceilings = {size: ceiling(bundles[size], video, scene, args.threads) for size in (640, 320)}
    failed = [r for r in runs if r.returncode != 0]
    for run in failed:
        print(f"regions_bench: {run.contender.name} exited {run.returncode}:\n{run.stderr[-2000:]}", file=sys.stderr)
    if failed:
        return 1
    facts["load average at end"] = load_average()
    facts["benchmark wall time"] = f"{time.monotonic() - started:.0f} s (conversions and video included)"
    if args.workdir is not None:
        # Every run's detections messages, for a look at what the tables sum up.
        dump = {r.contender.name: [b for _, b in observer.messages(r.contender.device, "detections")] for r in runs}
        (args.workdir / "regions_bench_detections.json").write_text(json.dumps(dump))
    scores: dict[str, Score] = {}
    for run in runs:
        seen = observer.seen(run.contender.device)
        scores[run.contender.name] = score_run(scene, seen)
    write_outputs(args, argv, scene, facts, runs, scores, observer, ceilings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

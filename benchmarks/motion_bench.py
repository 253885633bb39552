"""Motion gating: what the gate saves on a camera-like video, and what it costs in missed objects.

    python -m benchmarks.motion_bench [--seconds 150] [--fps 10] [--precisions fp32,int8] [--imgsz 320]
                                      [--threads 1] [--workdir DIR] [--out benchmarks/results]

A generated video (benchmarks/fixture/still_video.py: still textured scene, sensor noise, light drift,
objects crossing, one that stops and stays, one light jump) is played at its fps by the real agent
(`yolo-edge-agent run`, own process and state directory, a real Mosquitto), gated (the defaults) and
with `[motion] enabled = false`, all runs at once on the same video and threads, so load hits them
alike; one pair per precision and model input size (the fixture weights converted at each). Measured:
the detector's share of frames (stats), the agent's CPU seconds (the child's user + sys from
os.wait4), and the `objects` messages: every `new` of the ungated run must come in the gated run
(same label, within 0.5 s of video time, same zones entered), and the object that stops keeps one id
through its still stretch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.arguments import int_list
from benchmarks.fixture.still_video import StillScene, plan_scene, write_still_video
from benchmarks.machine import load_average, logical_cpus, process_cpu_seconds
from benchmarks.mosquitto import Broker
from benchmarks.motion_compare import Observer, compare_objects, stationary_kept
from benchmarks.motion_report import write_outputs
from benchmarks.tables import progress

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11n.pt"
ZONE = "lower_half"
CONFIG = """\
[source]
fps = {fps}

[model]
precision = "{precision}"
threads = {threads}

[stats]
interval = 1.0

[motion]
enabled = {gated}

[zones.{zone}]
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
"""
TARGET_CPU_RATIO = 0.35
# Each gated run is compared with the ungated run of the same model, not with FP32: an INT8 drop of up to this
# many points is accepted (the fixture, trained at 256, loses 1.5 at 640 on the benchmark's 16 images).
MAX_MAP_DROP = 2.0
NEW_WITHIN_S = 0.5
CPU_SAMPLE_S = 1.0


@dataclass
class Run:
    """One agent child. cpu_s: user + sys at exit (os.wait4); samples: (seconds since start, cpu so far)."""

    name: str
    precision: str
    imgsz: int
    gated: bool
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    returncode: int | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    stderr: str = ""

    @property
    def device(self) -> str:
        return self.name.replace(" ", "-").replace(",", "")

    @property
    def model(self) -> str:
        """What the gated and ungated run of a pair share: precision and input size."""
        return f"{self.precision} {self.imgsz}"


def prepare_bundle(workdir: Path, threads: int, imgsz: int) -> Path:
    """The fixture weights converted at `imgsz` by the real command; reused from --workdir when it is there."""
    out = workdir / f"motion-bundle-{imgsz}"
    if (out / "manifest.json").exists():
        progress(f"reusing {out}")
        return out
    from benchmarks.converter_bench import run_convert
    from benchmarks.fixture.make_shapes import write_dataset

    data_yaml = write_dataset(workdir / "motion-shapes", splits={"train": (0, 64), "val": (100_000, 16)})
    options = ["--imgsz", str(imgsz), "--calib-size", "64", "--val-size", "16", "--threads", str(threads)]
    options += ["--max-map-drop", str(MAX_MAP_DROP), "--force"]
    run_convert(WEIGHTS, out, data_yaml, options)
    return out


def prepare_video(workdir: Path, scene: StillScene) -> Path:
    path = workdir / f"still-{scene.seconds:g}s-{scene.fps:g}fps.avi"
    if path.exists():
        progress(f"reusing {path}")
        return path
    progress(f"writing {path} ({scene.frames} frames, 640x480)")
    write_still_video(path, scene)
    return path


def start(
    run: Run, bundles: dict[int, Path], video: Path, scene: StillScene, threads: int, broker: Broker, state: Path
) -> None:
    state.mkdir(parents=True)
    config = state / "agent.toml"
    gated = "true" if run.gated else "false"
    config.write_text(CONFIG.format(fps=scene.fps, precision=run.precision, threads=threads, gated=gated, zone=ZONE))
    command = [str(BIN / "yolo-edge-agent"), "run", "--config", str(config), "--source", str(video)]
    command += ["--model", str(bundles[run.imgsz]), "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)]
    command += ["--device-id", run.device]
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


def watch(runs: list[Run], observer: Observer, scene: StillScene, reapers: list[threading.Thread]) -> None:
    """Progress every 10 s: video time played and each run's detector frames and CPU so far."""
    began = time.monotonic()
    while any(t.is_alive() for t in reapers):
        for t in reapers:
            t.join(timeout=10.0 / len(reapers))
        played = min(time.monotonic() - began, scene.seconds)
        parts = []
        for run in runs:
            stats = observer.last_stats(run.device)
            frames = stats.get("frames", {}) if stats else {}
            cpu = run.samples[-1][1] if run.samples else 0.0
            parts.append(
                f"{run.name}: detector {frames.get('detected', '-')}/{frames.get('processed', '-')}, cpu {cpu:.1f} s"
            )
        progress(f"{played:5.0f}/{scene.seconds:g} s of video; " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.motion_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="video length (default 150)")
    parser.add_argument("--fps", type=float, default=10.0, help="video and agent frame rate (default 10)")
    parser.add_argument(
        "--precisions", default="fp32,int8", help="one gated and one ungated run each (default fp32,int8)"
    )
    parser.add_argument(
        "--imgsz",
        type=int_list(64, "model input sizes"),
        default=(320,),
        help="model input sizes, one gated and one ungated run each (default 320)",
    )
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of every run (default 1)")
    parser.add_argument("--workdir", type=Path, help="keep the bundle and video here for reruns (default: temporary)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in ("fp32", "int8") for p in precisions):
        parser.error(f"--precisions: fp32, int8 or fp32,int8, not {args.precisions!r}")
    sizes = args.imgsz
    if any(size % 32 for size in sizes):
        parser.error(f"--imgsz: multiples of 32 (the models' stride), not {','.join(map(str, sizes))}")
    if args.seconds < 30 or args.fps <= 0 or args.threads < 1:
        parser.error("--seconds must be >= 30 (the scenario needs room), --fps > 0, --threads >= 1")
    os.environ["YOLO_OFFLINE"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    scene = plan_scene(args.seconds, args.fps)
    facts = {"cores": logical_cpus(), "load average at start (1/5/15 min)": load_average()}
    with tempfile.TemporaryDirectory(prefix="motion-bench-") as temp:
        workdir = (args.workdir or Path(temp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        bundles = {size: prepare_bundle(workdir, args.threads, size) for size in sizes}
        video = prepare_video(workdir, scene)
        runs = [
            Run(f"{p} {size} {'gated' if g else 'ungated'}", p, size, g)
            for size in sizes
            for p in precisions
            for g in (True, False)
        ]
        broker = Broker(Path(temp)).start()
        observer = Observer(broker.host, broker.port, [r.device for r in runs])
        try:
            progress(f"{len(runs)} agents at once on {video.name}, {scene.seconds:g} s at {scene.fps:g} fps")
            states = {r.name: Path(temp) / "state" / r.device for r in runs}
            for run in runs:
                start(run, bundles, video, scene, args.threads, broker, states[run.name])
            reapers = [threading.Thread(target=reap, args=(r, states[r.name])) for r in runs]
            for t in reapers:
                t.start()
            watch(runs, observer, scene, reapers)
            observer.settle(runs)
        finally:
            observer.close()
            broker.stop()
    failed = [r for r in runs if r.returncode != 0]
    for run in failed:
        print(f"motion_bench: {run.name} exited {run.returncode}:\n{run.stderr[-2000:]}", file=sys.stderr)
    if failed:
        return 1
    facts["load average at end"] = load_average()
    facts["model"] = (
        f"tests/assets/shapes_yolo11n.pt converted at {', '.join(map(str, sizes))} (FP32 + INT8 bundles; INT8 "
        f"accepted up to a {MAX_MAP_DROP:g}-point mAP50-95 drop: each gated run is compared with the same model "
        "ungated)"
    )
    if args.workdir is not None:
        # Every run's objects messages, for a look at what the tables sum up.
        dump = {r.name: observer.objects(r.device) for r in runs}
        (args.workdir / "motion_bench_objects.json").write_text(json.dumps(dump, indent=1))
    results = {}
    for model in dict.fromkeys(r.model for r in runs):
        gated, ungated = (next(r for r in runs if r.model == model and r.gated is g) for g in (True, False))
        results[model] = (
            gated,
            ungated,
            compare_objects(observer.objects(ungated.device), observer.objects(gated.device), scene.fps, NEW_WITHIN_S),
            {r.name: stationary_kept(observer.objects(r.device), scene) for r in (gated, ungated)},
        )
    write_outputs(args, argv, scene, facts, results, observer, TARGET_CPU_RATIO, NEW_WITHIN_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())

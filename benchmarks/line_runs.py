"""The two counters of the line benchmark on one scenario video: the agent, and Ultralytics' ObjectCounter.

Ours: the real agent (`yolo-edge-agent run --dry-run`, its own process and state directory) with the
scenario's line configured twice, once per anchor (the default bottom centre, and the box centre that
ObjectCounter uses), playing the video at its frame rate as a camera would; its `cross` events are read
from the JSON lines a dry run prints. Theirs: `ultralytics.solutions.ObjectCounter` (its own tracker)
with the same ONNX model and the same segment as its two-point `region`, fed every frame; its crossings
are the frames where its IN / OUT counts rise, mapped to our directions (line_scoring.ultralytics_direction).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fixture.line_scenarios import FPS, HEIGHT, WIDTH, LineScenario
from benchmarks.line_scoring import Crossing, ultralytics_direction
from benchmarks.ultralytics_int8 import offline_environment

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = ("bottom_center", "center")  # each a line of its own in the agent's config, named after its anchor
AGENT_TIMEOUT_S = 300.0
CONFIG = """\
[source]
fps = {fps}

[model]
threads = {threads}

[lines]
reset = "never"

[lines.bottom_center]
points = {points}

[lines.center]
points = {points}
anchor = "center"
"""


@dataclass(frozen=True)
class AgentRun:
    """What one agent child found: anchor -> its crossings; frames processed and dropped (its last stats)."""

    crossings: dict[str, list[Crossing]]
    processed: int
    dropped: int


@dataclass
class AgentChild:
    scenario: LineScenario
    state: Path
    process: subprocess.Popen[bytes]


def start_agent(scenario: LineScenario, video: Path, model: Path, state: Path, threads: int) -> AgentChild:
    """The agent on `video` in the background, with an empty state directory of its own."""
    state.mkdir(parents=True)
    config = state / "agent.toml"
    points = json.dumps([list(p) for p in scenario.line])
    config.write_text(CONFIG.format(fps=FPS, threads=threads, points=points))
    env = {key: value for key, value in os.environ.items() if not key.startswith("YOLO_EDGE_")}
    env |= {"YOLO_EDGE_AGENT_STATE_DIR": str(state), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "agent.cli", "run", "--dry-run", "--config", str(config)]
    command += ["--source", str(video), "--model", str(model)]
    with open(state / "stdout", "wb") as out, open(state / "stderr", "wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=state)
    return AgentChild(scenario, state, process)


def finish_agent(child: AgentChild) -> AgentRun:
    """Wait for the child; its cross events per anchor. SystemExit with its stderr if it failed."""
    try:
        code = child.process.wait(AGENT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()
        code = None
    if code != 0:
        stderr = (child.state / "stderr").read_text(errors="replace")[-2000:]
        raise SystemExit(f"line_bench: the agent on {child.scenario.name} ended with {code}:\n{stderr}")
    crossings: dict[str, list[Crossing]] = {anchor: [] for anchor in ANCHORS}
    stats: dict = {}
    for text in (child.state / "stdout").read_text().splitlines():
        message = json.loads(text)
        payload = message["payload"]
        if message["topic"].endswith("/objects") and payload.get("type") == "cross":
            # The agent numbers frames from 1; the truth indexes the video from 0.
            crossings[payload["line"]].append(Crossing(payload["frame"] - 1, payload["direction"]))
        elif message["topic"].endswith("/stats"):
            stats = payload
    frames = stats.get("frames", {})
    return AgentRun(crossings, int(frames.get("processed", 0)), int(frames.get("dropped", 0)))


def run_agents(
    jobs: list[tuple[LineScenario, Path]], model: Path, workdir: Path, threads: int, parallel: int, progress
) -> dict[str, AgentRun]:
    """scenario name -> what the agent found; at most `parallel` agents at once."""
    out: dict[str, AgentRun] = {}
    running: list[AgentChild] = []
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < parallel:
            scenario, video = pending.pop(0)
            running.append(start_agent(scenario, video, model, workdir / "state" / scenario.name, threads))
        child = running.pop(0)
        out[child.scenario.name] = run = finish_agent(child)
        found = ", ".join(f"{a} {len(c)}" for a, c in run.crossings.items())
        progress(
            f"agent on {child.scenario.name}: {run.processed} of {child.scenario.frames} frames processed, "
            f"{run.dropped} dropped; crossings {found}"
        )
    return out


def go_offline(config_dir: Path) -> None:
    """Ultralytics offline, installing nothing, quiet, with settings of its own: it reads these when first
    imported, so this comes before anything imports it (shapely, which ObjectCounter checks for, must be there)."""
    if "ultralytics" in sys.modules:
        raise RuntimeError("go_offline() must run before ultralytics is imported")
    os.environ.update(offline_environment({}, config_dir))


def default_tracker() -> str:
    from ultralytics.solutions.config import SolutionConfig

    return SolutionConfig().tracker


def tracker_settings(name: str) -> dict:
    """The settings of one of Ultralytics' tracker files (tracktrack.yaml, bytetrack.yaml, ...)."""
    import ultralytics
    import yaml

    return yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "trackers" / name).read_text())


@dataclass(frozen=True)
class TheirRun:
    crossings: list[Crossing]
    ms_per_frame: float


def object_counter(scenario: LineScenario, video: Path, model: Path, imgsz: int, tracker: str) -> TheirRun:
    """ObjectCounter on every frame of `video`, with the scenario's line in pixels as its region; tracker: one of
    Ultralytics' tracker files (tracker_settings)."""
    import cv2
    from ultralytics import solutions

    region = [(x * WIDTH, y * HEIGHT) for x, y in scenario.line]
    counter = solutions.ObjectCounter(
        model=str(model), region=region, imgsz=imgsz, tracker=tracker, show=False, verbose=False
    )
    capture = cv2.VideoCapture(str(video))
    crossings: list[Crossing] = []
    counts, frame, started = (0, 0), 0, time.perf_counter()
    try:
        while (image := capture.read()[1]) is not None:
            result = counter(image)
            for count, before, counted_in in ((result.in_count, counts[0], True), (result.out_count, counts[1], False)):
                direction = ultralytics_direction((region[0], region[1]), counted_in)
                crossings += [Crossing(frame, direction)] * (count - before)
            counts, frame = (result.in_count, result.out_count), frame + 1
    finally:
        capture.release()
    if frame != scenario.frames:
        raise SystemExit(f"line_bench: ObjectCounter read {frame} of the {scenario.frames} frames of {video}")
    return TheirRun(crossings, (time.perf_counter() - started) * 1e3 / max(frame, 1))

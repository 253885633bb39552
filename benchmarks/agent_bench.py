"""Agent benchmark: pipeline overhead, the agent against Ultralytics, start-up, steady-state RSS.

    python -m benchmarks.agent_bench [--imgsz 640] [--frames 200] [--rounds 3] [--threads N]
                                     [--weights PT] [--bundle DIR] [--soak N] [--out benchmarks/results]
    python -m benchmarks.agent_bench --stages fp32,int8 [--stage-threads 1,2] [--imgsz 320] ...

Follows the README's "how the benchmarks compare" (docs/benchmarks.md): every figure that has a target is a RATIO of
contenders measured side by side in this run, on the same generated video, the same FP32 model
and the same onnxruntime thread count, alternating between contenders (the order rotates every
round) and taking the median of the per-round ratios. Absolute fps on a shared machine drift;
the ratios are what to read.

Contenders (every table says which row is which):
  bare        InferenceModel.run() on tensors letterboxed before timing: inference and nothing else
  agent-inproc  AgentLoop (agent/runtime/loop.py) with the real source thread, detector and a publisher that
                builds every payload and then discards it; no process start-up
  agent-fp32  `yolo-edge-agent run --dry-run --precision fp32` in its own process
  ultralytics `YOLO(model.onnx, task="detect")(frame)` per frame in its own process
  agent-auto  `yolo-edge-agent run --dry-run` at the default precision `auto` on --bundle (INT8
              where it measured faster); skipped without --bundle. Started twice per round on one
              state directory: the first start times the precisions, the second (start-up only)
              answers from the precision cache the first wrote

Every child process gets a new, empty agent state directory (YOLO_EDGE_AGENT_STATE_DIR), never the
user's, so no start finds a precision cache it did not write itself in this run.

Peak RSS of a child is VmHWM from /proc/<pid>/status, polled while it runs (see ChildRun for why
not getrusage). Ultralytics, the agent CLI and the soak run each get their own process, so a
figure never includes the driver's memory (which holds the bare loop's tensors) or another
contender's.

--stages runs only the agent's per-stage latency (the agent-inproc row's StageTimings) for each
precision and each --stage-threads count, configurations alternating within rounds as above, and
writes agent_stages_<size>.md / .png. After each configuration's file run comes a short run on the
MJPEG test camera (--live-fps, its own process) for frame age, which a file source has none of: its
frames are stamped when the loop takes them. INT8 needs a bundle: --bundle, or else the fixture weights
(or --weights) converted at --imgsz by the real `yolo-edge-convert` (kept in --workdir).

Nothing is downloaded: without --weights the model is built from yolo11n.yaml (untrained, which
is fine for speed), every child runs with YOLO_OFFLINE=1. The export runs in a child process so
torch never loads into, nor leaves threads in, the process that times the bare loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from agent.bundle import load_bundle
from agent.config.zones import ZoneConfig
from agent.pipeline.detector import load_detector
from agent.pipeline.inference import InferenceModel, cpu_has_vnni, default_threads, is_x86
from agent.pipeline.letterbox import Letterbox
from agent.pipeline.precision_cache import CACHE_NAME
from agent.pipeline.results import STAGES, FrameResult
from agent.pipeline.sources import SourceHealth, open_source
from agent.runtime.loop import LoopHooks, LoopSettings
from agent.runtime.reporter import ReportSettings
from agent.scene.scene import SceneSettings
from agent.system.board import cpu_model, rss_mb
from agent.transport.publisher import PublisherHealth
from benchmarks.arguments import int_list
from benchmarks.fixture.video import write_shapes_video
from benchmarks.machine import load_average
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text
from tests.agent.loop_rig import frame_loop

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AGENT_CLI = BIN / "yolo-edge-agent"

# Frames run before timing starts: the first runs allocate arenas and warm caches.
WARMUP_FRAMES = 5
# Timed frames of agent-auto's cached start, which is there for its start-up only.
CACHED_START_FRAMES = 2
# The CLI contenders' config: every frame through the model, as the bare loop and Ultralytics do.
NO_SCENE_CONFIG = "[motion]\nenabled = false\n\n[tracking]\nenabled = false\n"
# The stages a frame spends in the agent after the loop picked it up.
STAGE_NAMES = tuple(s for s in STAGES if s not in ("capture", "total"))
# Inference cost of a CNN does not depend on pixel values, so the bare loop cycles this many distinct
# preprocessed tensors instead of holding all of them (200 at 640 would be ~1 GB of float32).
BARE_DISTINCT_TENSORS = 32
VIDEO_HW = (480, 640)
HWM_POLL_S = 0.05
SOAK_SAMPLE_EVERY = 500
# Children run the agent with these: every frame publishes (as with something in view, so the publish
# stage is never free) and no periodic stats message interleaves with the timed frames.
AGENT_ENV = {"YOLO_EDGE_MQTT_PUBLISH_EMPTY": "true", "YOLO_EDGE_STATS_INTERVAL": "3600"}

# Time budget planning: a contender costs its frames plus a fixed start-up (Ultralytics imports torch).
MIN_BUDGET_FRAMES = 30
PROBE_RUNS = 4
STARTUP_ESTIMATE_S = {"ultralytics": 16.0, "agent-fp32": 2.5, "agent-auto": 4.0}

TARGET_OVERHEAD_FPS_RATIO = 0.9
TARGET_OVERHEAD_PCT = 10.0
TARGET_FP32_VS_ULTRA_FPS = 1.0
TARGET_RSS_VS_ULTRA = 0.25
TARGET_AUTO_VS_ULTRA_FPS = 1.3
TARGET_STARTUP_S = 2.0
TARGET_DRIFT_MB_PER_10K = 5.0
TARGET_SOAK_RSS_MB = 200.0


# ----------------------------------------------------------------------------------------------
# Results and tables


@dataclass
class RunResult:
    """One contender in one round. fps over the timed frames only (start-up excluded)."""

    fps: float
    peak_rss_mb: float | None = None
    startup_s: float | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    between_ms: float | None = None
    note: str = ""
    # agent-auto only: the same command started again on the same state directory (see run_agent_auto).
    cached_startup_s: float | None = None
    cached_timed_again: bool = False
    # In-process runs: the source's counters at the end (frames_dropped: replaced in the newest-frame slot).
    source: SourceHealth | None = None


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_rounds(values: Sequence[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def paired_ratio(results: dict[str, list[RunResult]], top: str, bottom: str, attr: str = "fps") -> float | None:
    """Median over rounds of top/bottom, each ratio taken within one round (same load, same minute)."""
    if top not in results or bottom not in results:
        return None
    ratios = [
        getattr(a, attr) / getattr(b, attr)
        for a, b in zip(results[top], results[bottom], strict=True)
        if getattr(a, attr) and getattr(b, attr)
    ]
    return median(ratios) if ratios else None


# ----------------------------------------------------------------------------------------------
# Machine facts


def machine_facts(threads: int) -> dict[str, str]:
    load = load_average()
    return {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {default_threads()} usable by this process",
        "onnxruntime threads": str(threads),
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "load average at start (1/5/15 min)": load,
    }


# ----------------------------------------------------------------------------------------------
# Child processes


@dataclass
class ChildRun:
    """A finished child: its stdout lines with the driver's receipt time, its peak RSS, its exit code.

    Peak RSS is VmHWM of the child's own address space. getrusage's ru_maxrss for a child is not
    used as the figure: Linux folds the pre-exec address space into it, and subprocess forks (or
    vforks) from this driver, so it can report the driver's size instead of the child's (seen here:
    the agent CLI's ru_maxrss 513 MB from a 400 MB driver, its VmHWM 240 MB). maxrss_mb is kept only
    as a cross-check.
    """

    started: float
    lines: list[tuple[float, str]]
    peak_rss_mb: float
    maxrss_mb: float
    returncode: int
    stderr: str


def _read_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None  # gone, or a zombie whose memory is already released


class ChildStateDirs:
    """A new, empty agent state directory for every child process, all under one root the driver removes.

    Children must not share the user's state directory (~/.local/state/yolo-edge): its precision cache
    lets `--precision auto` skip timing from the second start on, so every round after the first would
    time a cached start. A cached start is asked for on purpose, by passing a directory again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def fresh(self, label: str) -> Path:
        self._count += 1
        path = self.root / f"{self._count:03d}-{label}"
        path.mkdir(parents=True)  # never an existing directory: it could hold a cache
        return path


def child_env(threads: int, state_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        **AGENT_ENV,
        "YOLO_OFFLINE": "1",
        "YOLO_VERBOSE": "False",
        # torch (Ultralytics' pre/postprocessing) uses OpenMP; keep it to the same thread count.
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT),
        "YOLO_EDGE_AGENT_STATE_DIR": str(state_dir),
    }


def run_child(
    cmd: Sequence[str], threads: int, state_dir: Path, on_line: Callable[[str], None] | None = None
) -> ChildRun:
    """Run cmd to completion with state_dir as its agent state directory, collecting stdout lines live (for
    start-up times) and polling VmHWM."""
    with tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=child_env(threads, state_dir),
            cwd=ROOT,
        )
        lines: list[tuple[float, str]] = []
        peak_kb = 0
        done = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:  # parsed later: the reader must not steal CPU from the child
                lines.append((time.monotonic(), line))
                if on_line is not None:
                    on_line(line)

        def poll() -> None:
            nonlocal peak_kb
            while not done.is_set():
                peak_kb = max(peak_kb, _read_hwm_kb(proc.pid) or 0)
                done.wait(HWM_POLL_S)

        threads_ = [threading.Thread(target=read, daemon=True), threading.Thread(target=poll, daemon=True)]
        for thread in threads_:
            thread.start()
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the max over every child so far.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        for thread in threads_:
            thread.join(5)
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode}:\n{tail}")
    return ChildRun(started, lines, peak_kb / 1024, usage.ru_maxrss / 1024, proc.returncode, stderr)


def worker_cmd(kind: str, *args: object) -> list[str]:
    return [sys.executable, "-m", "benchmarks.agent_bench", "--worker", kind, *map(str, args)]


# ----------------------------------------------------------------------------------------------
# Fixtures: video and models


@dataclass(frozen=True)
class Models:
    """fp32: the one FP32 ONNX model every contender runs. bundle: holds INT8 for agent-auto, or None."""

    fp32: Path
    bundle: Path | None
    input_hw: tuple[int, int]
    described: str


def prepare_models(args: argparse.Namespace, workdir: Path, state_dirs: ChildStateDirs) -> Models:
    if args.bundle is not None:
        # One FP32 model throughout: with a bundle, it is the bundle's own, so agent-auto's FP32
        # alternative and the Ultralytics row are the same file.
        bundle = load_bundle(args.bundle)
        fp32 = args.bundle / bundle.files["fp32"].path
        hw = InferenceModel(fp32, 1).info.input_hw
        if hw[0] != args.imgsz:
            progress(f"--bundle is {hw[0]}x{hw[1]}: every contender runs at that size, not --imgsz {args.imgsz}")
        precisions = "+".join(sorted(bundle.files))
        return Models(fp32, args.bundle, hw, f"bundle {args.bundle} ({bundle.model_name}, {precisions})")
    target = workdir / f"model{args.imgsz}.onnx"
    source = args.weights or "yolo11n.yaml (untrained)"
    if not target.exists():
        progress(f"exporting {source} to ONNX at {args.imgsz} (Ultralytics, in a child process)")
        run = run_child(
            worker_cmd("export", args.weights or "-", args.imgsz, workdir, target), 1, state_dirs.fresh("export")
        )
        json.loads(run.lines[-1][1])  # the worker's last line confirms the file
    hw = InferenceModel(target, 1).info.input_hw
    return Models(target, None, hw, f"{source} exported to FP32 ONNX at {hw[0]}x{hw[1]}")


def probe_fps(model_path: Path, threads: int) -> float:
    """A few bare runs on a constant tensor: enough to size the run, never reported."""
    model = InferenceModel(model_path, threads)
    tensor = np.full((1, 3, *model.info.input_hw), 0.5, np.float32)
    model.run(tensor)
    started = time.perf_counter()
    for _ in range(PROBE_RUNS):
        model.run(tensor)
    return PROBE_RUNS / (time.perf_counter() - started)


def plan_frames(args: argparse.Namespace, models: Models) -> int:
    """--frames, or fewer when the measured speed says the rounds would overrun --budget minutes.

    The budget exists because this machine may be shared (a loaded 2-core VM runs YOLO11n at 640 at
    2-3 fps, where 200 frames x 4 contenders x 3 rounds is a quarter of an hour); frames are cut, not
    rounds, since alternating rounds are what make the ratios fair.
    """
    if args.budget <= 0:
        return args.frames
    fps = probe_fps(models.fp32, args.threads)
    contenders = ["bare", "agent-inproc", "agent-fp32", "ultralytics"] + (["agent-auto"] if models.bundle else [])
    fixed = args.rounds * sum(STARTUP_ESTIMATE_S.get(name, 0.5) for name in contenders)
    # Agent rows run a little under bare speed; 1.15 covers that and the driver's own work.
    per_frame = 1.15 * args.rounds * len(contenders) / fps
    progress(f"probe: {fps:.2f} fps bare")
    return fit_budget(args, per_frame, fixed)


def fit_budget(args: argparse.Namespace, per_frame_s: float, fixed_s: float) -> int:
    """--frames, or as many as fit in --budget minutes at per_frame_s seconds per frame (all rounds) plus fixed_s."""
    estimate = fixed_s + per_frame_s * (args.frames + WARMUP_FRAMES)
    progress(f"--frames {args.frames} would take about {estimate / 60:.1f} min")
    if estimate <= args.budget * 60:
        return args.frames
    frames = max(MIN_BUDGET_FRAMES, int((args.budget * 60 - fixed_s) / per_frame_s) - WARMUP_FRAMES)
    if frames < args.frames:
        progress(
            f"--budget {args.budget:g} min: timing {frames} frames per contender and round instead of "
            f"{args.frames} (pass --budget 0 to keep --frames)"
        )
        return frames
    return args.frames


def prepare_video(workdir: Path, frames: int) -> Path:
    path = workdir / f"shapes_{frames}.avi"
    if not path.exists():
        progress(f"writing a {VIDEO_HW[1]}x{VIDEO_HW[0]} video of {frames} frames")
        write_shapes_video(path, frames=frames, height=VIDEO_HW[0], width=VIDEO_HW[1])
    return path


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    try:
        while len(frames) < count:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(image)
    finally:
        cap.release()
    return frames


def preprocessed_tensors(video: Path, input_hw: tuple[int, int], count: int) -> list[np.ndarray]:
    letterbox = Letterbox(input_hw)
    # Letterbox returns a reused buffer: copy, or every tensor would be the last frame.
    return [letterbox(image)[0].copy() for image in read_frames(video, count)]


# ----------------------------------------------------------------------------------------------
# Contenders


class DiscardPublisher:
    """The Publisher interface with no transport: payloads are still built (that is agent work)."""

    def __init__(self) -> None:
        self._seq = 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        pass

    def publish_sequenced(self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False) -> int:
        self._seq += 1
        build(self._seq)
        return self._seq

    def health(self) -> PublisherHealth:
        return PublisherHealth(connected=True)

    def close(self, timeout: float = 3.0) -> None:
        pass


def run_bare(model_path: Path, tensors: list[np.ndarray], frames: int, threads: int) -> RunResult:
    model = InferenceModel(model_path, threads)
    for i in range(WARMUP_FRAMES):
        model.run(tensors[i % len(tensors)])
    started = time.perf_counter()
    for i in range(frames):
        model.run(tensors[i % len(tensors)])
    return RunResult(fps=frames / (time.perf_counter() - started))


# The stage tables' scene: the defaults (motion gate, tracker) and one zone over the lower half.
PUBLISH_EMPTY = ReportSettings(publish_empty=True)  # every frame publishes, as an agent with empty frames on
STAGE_SCENE = SceneSettings(zones=(ZoneConfig("lower_half", ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0))),))


def run_agent_inprocess(
    model_path: Path,
    video: Path | str,
    frames: int,
    threads: int,
    precision: str = "fp32",
    scene: SceneSettings | None = None,
) -> RunResult:
    """AgentLoop as the CLI builds it, minus process start-up; fps between the end of the warm-up
    frames and the end of the last frame, from the loop's own on_frame callback (detector frames
    only: with a scene, frames the motion gate skipped are not timed). video: a file, or any source
    uri (the live test camera's URL). scene: None = motion gating and tracking off."""
    detector, _ = load_detector(model_path, precision, threads)
    settings = LoopSettings(stats_interval=3600.0, max_frames=frames + WARMUP_FRAMES)
    finished: list[float] = []
    stages: list[tuple[float, float, float, float, float, float]] = []
    ages: list[float] = []

    def on_frame(result: FrameResult) -> None:
        finished.append(time.perf_counter())
        t = result.timings
        stages.append((t.motion, t.preprocess, t.inference, t.postprocess, t.tracking, t.publish))
        ages.append(t.capture)

    with open_source(str(video)) as source:
        hooks = LoopHooks(on_frame=on_frame)
        frame_loop(source, detector, DiscardPublisher(), settings, scene=scene, report=PUBLISH_EMPTY, hooks=hooks).run()
        health = source.health()
    timed = len(finished) - WARMUP_FRAMES
    if timed < 2:
        raise RuntimeError(f"in-process agent processed only {len(finished)} frames")
    fps = timed / (finished[-1] - finished[WARMUP_FRAMES - 1])
    measured = np.array(stages[WARMUP_FRAMES:])
    motion, pre, inf, post, tracking, pub = np.median(measured, axis=0)
    # Means here, not medians: frame intervals minus the stages timed inside them, frame by frame.
    intervals = np.diff(np.array(finished[WARMUP_FRAMES - 1 :])) * 1e3
    between = float(np.mean(intervals - measured.sum(axis=1)))
    stage_ms = {
        "motion": motion,
        "preprocess": pre,
        "inference": inf,
        "postprocess": post,
        "tracking": tracking,
        "publish": pub,
    }
    stage_ms["frame age"] = float(np.median(ages[WARMUP_FRAMES:]))
    stage_ms["frame age p90"] = float(np.percentile(ages[WARMUP_FRAMES:], 90))
    return RunResult(fps=fps, stage_ms=stage_ms, between_ms=between, source=health)


def _detections(run: ChildRun) -> list[tuple[float, dict]]:
    out = []
    for received, line in run.lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("topic", "").endswith("/detections"):
            out.append((received, message["payload"]))
    return out


def run_agent_cli(model: Path, precision: str, video: Path, frames: int, threads: int, state_dir: Path) -> RunResult:
    """The CLI in its own process, stdout parsed.

    fps: (frame ids) / (capture ts) between the first frame after warm-up and the last frame. A file
    source stamps `ts` when the loop takes the frame, so consecutive ts differ by exactly one frame's
    processing; this leaves out start-up, which the final stats' fps (window since the loop began,
    first frames included) does not. Start-up: launch to the first detections line on stdout.
    Motion gating and tracking are off, as in the in-process row and for Ultralytics: every frame runs
    the model and publishes its detections line.
    """
    config = state_dir / "agent.toml"
    config.write_text(NO_SCENE_CONFIG)
    cmd = [
        AGENT_CLI,
        "run",
        "--config",
        config,
        "--source",
        video,
        "--model",
        model,
        "--precision",
        precision,
        "--dry-run",
        "--max-frames",
        frames + WARMUP_FRAMES,
        "--threads",
        threads,
    ]
    run = run_child(cmd, threads, state_dir)
    messages = _detections(run)
    timed = [(p["frame"], p["ts"]) for _, p in messages if p["frame"] > WARMUP_FRAMES]
    if len(timed) < 2:
        raise RuntimeError(f"agent CLI published {len(messages)} detections lines; expected one per frame")
    (first_id, first_ts), (last_id, last_ts) = timed[0], timed[-1]
    chosen = messages[-1][1]["model"]["precision"]
    return RunResult(
        fps=(last_id - first_id) / (last_ts - first_ts),
        peak_rss_mb=run.peak_rss_mb,
        startup_s=messages[0][0] - run.started,
        note=f"precision {chosen}",
    )


def run_agent_auto(bundle: Path, video: Path, frames: int, threads: int, state_dirs: ChildStateDirs) -> RunResult:
    """`--precision auto` started twice on one state directory of its own: the first start (an empty
    directory: it times INT8 and FP32, then writes its choice to the precision cache) gives fps, RSS and
    the first start-up; the second, right after and only CACHED_START_FRAMES frames long, the cached
    start-up. The cached start must not time again: if the cache file was rewritten, it did."""
    state_dir = state_dirs.fresh("agent-auto")
    first = run_agent_cli(bundle, "auto", video, frames, threads, state_dir)
    cache = state_dir / CACHE_NAME
    written = cache.stat().st_mtime_ns if cache.exists() else None
    cached = run_agent_cli(bundle, "auto", video, CACHED_START_FRAMES, threads, state_dir)
    first.cached_startup_s = cached.startup_s
    first.cached_timed_again = written is None or cache.stat().st_mtime_ns != written
    return first


def run_ultralytics(
    model: Path, video: Path, frames: int, threads: int, input_hw: tuple[int, int], state_dir: Path
) -> RunResult:
    run = run_child(worker_cmd("ultralytics", model, video, frames, threads, input_hw[0]), threads, state_dir)
    events = [(t, json.loads(line)) for t, line in run.lines if line.startswith("{")]
    first = next(t for t, e in events if e["event"] == "first")
    done = next(e for _, e in events if e["event"] == "done")
    return RunResult(fps=done["fps"], peak_rss_mb=run.peak_rss_mb, startup_s=first - run.started)


# ----------------------------------------------------------------------------------------------
# Workers: the code that runs inside the child processes


def worker_export(weights: str, imgsz: int, workdir: Path, target: Path) -> None:
    from ultralytics import YOLO

    from converter.export import export_model

    if weights == "-":
        # From the architecture file: nothing to download, random weights (speed does not care).
        pt = workdir / "yolo11n_untrained.pt"
        YOLO("yolo11n.yaml").save(pt)
    else:
        pt = Path(weights)
    exported = export_model(pt, workdir, imgsz, "auto")
    exported.onnx_path.replace(target)
    print(json.dumps({"onnx": str(target)}), flush=True)


def worker_ultralytics(model: Path, video: Path, frames: int, threads: int, imgsz: int) -> None:
    """What a user would deploy instead: YOLO(onnx)(frame). Only the thread count is pinned (to the
    agent's), by giving onnxruntime session options where Ultralytics passes none."""
    base_session = ort.InferenceSession

    class PinnedThreads(base_session):  # type: ignore[misc, valid-type]
        def __init__(
            self, path: object, sess_options: ort.SessionOptions | None = None, *a: object, **k: object
        ) -> None:
            if sess_options is None:
                sess_options = ort.SessionOptions()
                sess_options.intra_op_num_threads = threads
            super().__init__(path, sess_options, *a, **k)

    ort.InferenceSession = PinnedThreads
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    yolo = YOLO(str(model), task="detect")
    cap = cv2.VideoCapture(str(video))
    elapsed: list[float] = []
    # Frames are decoded in the loop (holding them all would inflate this process's RSS), but only
    # the model call is timed: decoding is left out for Ultralytics while the agent's fps includes
    # its source thread, which errs in Ultralytics' favour.
    while len(elapsed) < frames + WARMUP_FRAMES:
        ok, image = cap.read()
        if not ok:
            break
        start = time.perf_counter()
        yolo(image, imgsz=imgsz, verbose=False)
        elapsed.append(time.perf_counter() - start)
        if len(elapsed) == 1:
            print(json.dumps({"event": "first"}), flush=True)
    cap.release()
    timed = elapsed[WARMUP_FRAMES:]
    print(json.dumps({"event": "done", "fps": len(timed) / sum(timed), "frames": len(timed)}), flush=True)


def worker_soak(model: Path, precision: str, video: Path, frames: int, threads: int) -> None:
    """The in-process agent on a looping video, RSS of this process every SOAK_SAMPLE_EVERY frames."""
    detector, _ = load_detector(model, precision, threads)
    settings = LoopSettings(stats_interval=3600.0, max_frames=frames)
    started = time.monotonic()
    count = 0

    def on_frame(_: FrameResult) -> None:
        nonlocal count
        count += 1
        if count % SOAK_SAMPLE_EVERY == 0:
            fps = count / (time.monotonic() - started)
            print(json.dumps({"event": "sample", "frame": count, "rss_mb": rss_mb(), "fps": fps}), flush=True)

    with open_source(str(video), loop=True) as source:
        hooks = LoopHooks(on_frame=on_frame)
        frame_loop(source, detector, DiscardPublisher(), settings, report=PUBLISH_EMPTY, hooks=hooks).run()
    print(json.dumps({"event": "done", "precision": detector.identity.precision}), flush=True)


def worker_mjpeg(jpegs: Path, fps: float) -> None:
    """The tests' MJPEG test camera serving jpegs/*.jpg over and over, until stdin closes."""
    from tests.agent.agent_process import MjpegServer

    server = MjpegServer([p.read_bytes() for p in sorted(jpegs.glob("*.jpg"))], fps).start()
    print(json.dumps({"url": server.url}), flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


def worker_main(argv: list[str]) -> int:
    kind, *rest = argv
    if kind == "mjpeg":
        worker_mjpeg(Path(rest[0]), float(rest[1]))
    elif kind == "export":
        worker_export(rest[0], int(rest[1]), Path(rest[2]), Path(rest[3]))
    elif kind == "ultralytics":
        worker_ultralytics(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))
    elif kind == "soak":
        worker_soak(Path(rest[0]), rest[1], Path(rest[2]), int(rest[3]), int(rest[4]))
    else:
        raise SystemExit(f"unknown worker {kind}")
    return 0


# ----------------------------------------------------------------------------------------------
# The rounds


CONTENDER_LABELS = {
    "bare": "bare session.run (preprocessed tensors)",
    "agent-inproc": "agent in-process (AgentLoop, fp32)",
    "agent-fp32": "agent CLI --dry-run --precision fp32",
    "ultralytics": "Ultralytics YOLO(onnx)(frame), fp32",
    "agent-auto": "agent CLI --dry-run --precision auto (bundle)",
}


def run_rounds(
    args: argparse.Namespace, models: Models, video: Path, state_dirs: ChildStateDirs
) -> dict[str, list[RunResult]]:
    threads = args.threads
    fresh = state_dirs.fresh
    tensors = preprocessed_tensors(video, models.input_hw, min(BARE_DISTINCT_TENSORS, args.frames + WARMUP_FRAMES))
    contenders: dict[str, Callable[[], RunResult]] = {
        "bare": lambda: run_bare(models.fp32, tensors, args.frames, threads),
        "agent-inproc": lambda: run_agent_inprocess(models.fp32, video, args.frames, threads),
        "agent-fp32": lambda: run_agent_cli(models.fp32, "fp32", video, args.frames, threads, fresh("agent-fp32")),
        "ultralytics": lambda: run_ultralytics(
            models.fp32, video, args.frames, threads, models.input_hw, fresh("ultralytics")
        ),
    }
    bundle = models.bundle
    if bundle is not None:
        contenders["agent-auto"] = lambda: run_agent_auto(bundle, video, args.frames, threads, state_dirs)
    names = list(contenders)
    results: dict[str, list[RunResult]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        # Rotate the order so no contender always runs first (cold) or right after a heavy one.
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            progress(f"round {round_index + 1}/{args.rounds}: {name} ({args.frames} frames)")
            result = contenders[name]()
            results[name].append(result)
            rss = f", peak RSS {result.peak_rss_mb:.0f} MB" if result.peak_rss_mb else ""
            start = f", first result after {result.startup_s:.2f} s" if result.startup_s else ""
            if result.cached_startup_s is not None:
                start += f" (cached start {result.cached_startup_s:.2f} s)"
            progress(f"    {result.fps:.2f} fps{rss}{start} {result.note}".rstrip())
    return results


@dataclass(frozen=True)
class SoakResult:
    frames: list[int]
    rss_mb: list[float]
    peak_rss_mb: float
    precision: str


def run_soak(args: argparse.Namespace, models: Models, video: Path, state_dirs: ChildStateDirs) -> SoakResult:
    model, precision = (models.bundle, "auto") if models.bundle is not None else (models.fp32, "fp32")

    def on_line(line: str) -> None:
        event = json.loads(line)
        if event["event"] == "sample":
            progress(f"soak: frame {event['frame']}, RSS {event['rss_mb']:.1f} MB, {event['fps']:.1f} fps")

    progress(f"soak: {args.soak} frames, {precision}, looping video, RSS every {SOAK_SAMPLE_EVERY} frames")
    command = worker_cmd("soak", model, precision, video, args.soak, args.threads)
    run = run_child(command, args.threads, state_dirs.fresh("soak"), on_line)
    events = [json.loads(line) for _, line in run.lines]
    samples = [e for e in events if e["event"] == "sample"]
    done = events[-1]
    return SoakResult([s["frame"] for s in samples], [s["rss_mb"] for s in samples], run.peak_rss_mb, done["precision"])


# ----------------------------------------------------------------------------------------------
# Report


@dataclass
class Verdict:
    name: str
    target: str
    measured: str
    state: str  # PASS, FAIL or SKIP


def check(name: str, target: str, value: float | None, passed: Callable[[float], bool], shown: str) -> Verdict:
    if value is None:
        return Verdict(name, target, shown or "not measured", "SKIP")
    return Verdict(name, target, shown, "PASS" if passed(value) else "FAIL")


def overhead_pct(result: RunResult) -> float:
    s = result.stage_ms
    return 100.0 * (s["preprocess"] + s["postprocess"] + s["publish"]) / s["inference"]


def tables(
    args: argparse.Namespace, models: Models, results: dict[str, list[RunResult]], soak: SoakResult | None
) -> tuple[list[Table], list[Verdict]]:
    out: list[Table] = []
    verdicts: list[Verdict] = []
    threads = args.threads

    # 1. Pipeline overhead
    rows = []
    for name in ("bare", "agent-inproc", "agent-fp32"):
        fps = [r.fps for r in results[name]]
        ratio = paired_ratio(results, name, "bare")
        rows.append((name, CONTENDER_LABELS[name], f"{median(fps):.2f}", fmt_rounds(fps, 2), f"{ratio:.3f}"))
    out.append(
        Table(
            f"1. Pipeline overhead: FP32, {models.input_hw[0]}x{models.input_hw[1]}, {threads} threads, "
            f"{args.frames} timed frames x {args.rounds} rounds",
            ("row", "what", "fps (median)", "fps per round", "x bare (median of per-round ratios)"),
            tuple(rows),
            (
                "bare = InferenceModel.run() only; the agent rows add the source thread (video decode), letterbox, "
                "postprocess, payload building and the loop.",
                "agent-inproc: fps between warm-up end and last frame from AgentLoop's on_frame; "
                "agent-fp32: frame ids / "
                "capture ts of its detections lines (start-up excluded).",
                "Every frame publishes (mqtt.publish_empty=true), so the publish stage is paid on every frame.",
            ),
        )
    )
    stage_rows = []
    for name in STAGE_NAMES:
        values = [r.stage_ms[name] for r in results["agent-inproc"]]
        stage_rows.append((name, f"{median(values):.2f}", fmt_rounds(values, 2)))
    pct = [overhead_pct(r) for r in results["agent-inproc"]]
    stage_rows.append(("outside inference", f"{median(pct):.1f} % of inference", fmt_rounds(pct, 1)))
    # Where an fps gap to bare comes from: the agent's inference itself running slower (threads contending
    # for the cores) or the capture wait (the loop waiting for the source, and its own bookkeeping).
    inference_fps = [1000.0 / r.stage_ms["inference"] for r in results["agent-inproc"]]
    inference_ratio = median([i / b.fps for i, b in zip(inference_fps, results["bare"], strict=True)])
    stage_rows.append(
        (
            "inference alone as fps",
            f"{median(inference_fps):.2f} ({inference_ratio:.3f}x bare)",
            fmt_rounds(inference_fps, 2),
        )
    )
    between = [r.between_ms or 0.0 for r in results["agent-inproc"]]
    stage_rows.append(("capture wait", f"{median(between):.1f} ms per frame", fmt_rounds(between, 1)))
    out.append(
        Table(
            "1b. Agent stage times (agent-inproc row; the agent's own per-frame StageTimings, median ms)",
            ("stage", "median ms", "per round"),
            tuple(stage_rows),
            (
                "outside inference = (preprocess + postprocess + publish) / inference, medians per round.",
                "inference alone as fps = 1000 / median inference ms in the agent, vs the same round's bare fps.",
                "capture wait = mean of (frame interval - that frame's stages): source waits and the loop itself.",
            ),
        )
    )
    for name in ("agent-inproc", "agent-fp32"):
        ratio = paired_ratio(results, name, "bare")
        verdicts.append(
            check(
                f"pipeline overhead ({name} fps / bare fps)",
                f">= {TARGET_OVERHEAD_FPS_RATIO}x",
                ratio,
                lambda v: v >= TARGET_OVERHEAD_FPS_RATIO,
                f"{ratio:.3f}x",
            )
        )
    verdicts.append(
        check(
            "work outside inference (pre + post + publish)",
            f"<= {TARGET_OVERHEAD_PCT:.0f} %",
            median(pct),
            lambda v: v <= TARGET_OVERHEAD_PCT,
            f"{median(pct):.1f} %",
        )
    )

    # 2. Against Ultralytics
    rows = []
    for name in ("ultralytics", "agent-fp32", "agent-auto"):
        if name not in results:
            rows.append((name, CONTENDER_LABELS[name], "skipped: no --bundle given", "", "", "", ""))
            continue
        fps = [r.fps for r in results[name]]
        rss = [r.peak_rss_mb or 0.0 for r in results[name]]
        fps_ratio = paired_ratio(results, name, "ultralytics")
        rss_ratio = paired_ratio(results, name, "ultralytics", "peak_rss_mb")
        label = CONTENDER_LABELS[name] + (f" -> chose {results[name][-1].note}" if name == "agent-auto" else "")
        rows.append(
            (
                name,
                label,
                f"{median(fps):.2f}",
                fmt_rounds(fps, 2),
                f"{fps_ratio:.3f}",
                f"{median(rss):.0f}",
                f"{rss_ratio:.3f}",
            )
        )
    out.append(
        Table(
            f"2. Against Ultralytics on the same FP32 ONNX model ({models.input_hw[0]}x{models.input_hw[1]}, "
            f"{threads} threads), each row its own process",
            ("row", "what", "fps (median)", "fps per round", "x Ultralytics fps", "peak RSS MB", "x Ultralytics RSS"),
            tuple(rows),
            (
                "peak RSS: VmHWM of the child's /proc/<pid>/status, polled every 50 ms (start-up and model load "
                "included).",
                "Ultralytics fps times only the model(frame) call (decode left out); agent fps includes its source "
                "thread: both choices favour Ultralytics.",
                "Ultralytics' onnxruntime session gets intra_op_num_threads pinned to the same thread count; "
                "nothing else of its defaults is changed.",
            ),
        )
    )
    fp32_fps = paired_ratio(results, "agent-fp32", "ultralytics")
    fp32_rss = paired_ratio(results, "agent-fp32", "ultralytics", "peak_rss_mb")
    auto_fps = paired_ratio(results, "agent-auto", "ultralytics")
    verdicts.append(
        check(
            "agent fp32 fps / Ultralytics fps",
            f">= {TARGET_FP32_VS_ULTRA_FPS}x",
            fp32_fps,
            lambda v: v >= TARGET_FP32_VS_ULTRA_FPS,
            f"{fp32_fps:.3f}x",
        )
    )
    verdicts.append(
        check(
            "agent fp32 peak RSS / Ultralytics peak RSS",
            f"<= {TARGET_RSS_VS_ULTRA}x",
            fp32_rss,
            lambda v: v <= TARGET_RSS_VS_ULTRA,
            f"{fp32_rss:.3f}x",
        )
    )
    verdicts.append(
        check(
            "agent auto fps / Ultralytics fps",
            f">= {TARGET_AUTO_VS_ULTRA_FPS}x",
            auto_fps,
            lambda v: v >= TARGET_AUTO_VS_ULTRA_FPS,
            f"{auto_fps:.3f}x" if auto_fps is not None else "skipped: no --bundle given",
        )
    )

    # 3. Start-up
    rows = []
    startups = startup_rows(results)
    for name, values in startups.items():
        label = STARTUP_LABELS.get(name, CONTENDER_LABELS.get(name, name))
        if name == "agent-auto, cached start":
            timed_again = sum(r.cached_timed_again for r in results["agent-auto"])
            if timed_again:
                label += f" (timed again in {timed_again} of {len(values)} rounds: NOT a cached start)"
        rows.append((name, label, f"{median(values):.2f}", fmt_rounds(values, 2)))
    out.append(
        Table(
            "3. Start-up: launch of the process to its first result (s)",
            ("row", "what", "median s", "per round"),
            tuple(rows),
            (
                "agent: Popen to the first detections line on its stdout (publish_empty=true, so frame 1 always "
                "prints one). Ultralytics: Popen to its first model(frame) returning; reference only.",
                "Every process starts on an empty state directory of its own, so no start finds an earlier "
                "run's precision cache; agent-auto's first start times INT8 and FP32 before choosing and writes "
                "its choice there, its cached start is the same command again on that directory.",
            ),
        )
    )
    for name, values in startups.items():
        if name.startswith("agent-"):
            startup = median(values)
            verdicts.append(
                check(
                    f"start-up, {name} (launch to first detections line)",
                    f"< {TARGET_STARTUP_S:.0f} s",
                    startup,
                    lambda v: v < TARGET_STARTUP_S,
                    f"{startup:.2f} s",
                )
            )

    # 4. Soak
    if soak is not None and len(soak.rss_mb) >= 2:
        span = soak.frames[-1] - soak.frames[0]
        drift = soak.rss_mb[-1] - soak.rss_mb[0]
        per_10k = drift * 10_000 / span
        rows = tuple((str(f), f"{r:.1f}") for f, r in zip(soak.frames, soak.rss_mb, strict=True))
        out.append(
            Table(
                f"4. Steady-state RSS: agent in-process ({soak.precision}), {args.soak} frames of a looping video",
                ("frame", "RSS MB"),
                rows,
                (
                    f"drift {drift:+.1f} MB from frame {soak.frames[0]} to {soak.frames[-1]} "
                    f"({per_10k:+.1f} MB per 10,000 frames{'' if span >= 10_000 else ', extrapolated'}); "
                    f"peak RSS (VmHWM, start-up included: auto loads and times both models) {soak.peak_rss_mb:.0f} MB; "
                    "the samples are the agent's own rss_mb (VmRSS), as its stats report it.",
                ),
            )
        )
        verdicts.append(
            check(
                "RSS drift per 10,000 frames",
                f"< {TARGET_DRIFT_MB_PER_10K:.0f} MB",
                abs(per_10k),
                lambda v: v < TARGET_DRIFT_MB_PER_10K,
                f"{per_10k:+.1f} MB",
            )
        )
        steady = max(soak.rss_mb)
        verdicts.append(
            check(
                f"steady-state RSS, max of samples ({soak.precision}; target is for int8)",
                f"< {TARGET_SOAK_RSS_MB:.0f} MB",
                steady,
                lambda v: v < TARGET_SOAK_RSS_MB,
                f"{steady:.0f} MB (start-up peak {soak.peak_rss_mb:.0f} MB)",
            )
        )
    elif soak is None:
        verdicts.append(Verdict("RSS drift / steady-state RSS", "< 5 MB / 10k frames, < 200 MB", "no --soak", "SKIP"))
    return out, verdicts


STARTUP_LABELS = {
    "agent-auto, first start": "agent CLI --dry-run --precision auto (bundle), empty state directory",
    "agent-auto, cached start": "the same again on the state directory its first start wrote",
}


def startup_rows(results: dict[str, list[RunResult]]) -> dict[str, list[float]]:
    """Start-up seconds per round of every row that has them; agent-auto as its first and its cached start."""
    rows: dict[str, list[float]] = {}
    for name in ("agent-fp32", "agent-auto", "ultralytics"):
        if name not in results:
            continue
        values = [r.startup_s or 0.0 for r in results[name]]
        if name == "agent-auto":
            rows["agent-auto, first start"] = values
            rows["agent-auto, cached start"] = [r.cached_startup_s or 0.0 for r in results[name]]
        else:
            rows[name] = values
    return rows


def verdict_table(verdicts: list[Verdict]) -> Table:
    return Table(
        "Targets (ratios measured side by side in this run)",
        ("target", "wanted", "measured", "result"),
        tuple((v.name, v.target, v.measured, v.state) for v in verdicts),
    )


def facts_table(facts: dict[str, str], models: Models, args: argparse.Namespace) -> Table:
    rows = [(k, v) for k, v in facts.items()]
    rows += [
        ("model", models.described),
        (
            "video",
            f"{VIDEO_HW[1]}x{VIDEO_HW[0]} generated shapes video, "
            f"{args.frames + WARMUP_FRAMES} frames ({WARMUP_FRAMES} warm-up)",
        ),
        ("load average at end", load_average()),
    ]
    return Table("Machine and set-up", ("fact", "value"), tuple(rows))


def plot(path: Path, results: dict[str, list[RunResult]], models: Models, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = [
        (axes[0], {n: [r.fps for r in results[n]] for n in names}, "frames per second (higher is better)"),
        (
            axes[1],
            {n: [r.peak_rss_mb or 0.0 for r in results[n]] for n in names if results[n][0].peak_rss_mb},
            "peak RSS MB (lower)",
        ),
        (axes[2], startup_rows(results), "start-up s (lower)"),
    ]
    for ax, series, title in panels:
        shown = list(series)
        for x, name in enumerate(shown):
            values = series[name]
            ax.bar(x, median(values), color="tab:orange" if name == "ultralytics" else "tab:blue", alpha=0.7)
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(shown)), shown, rotation=25, ha="right")
        ax.set_title(title)
    fig.suptitle(
        f"yolo-edge agent benchmark: {models.input_hw[0]}x{models.input_hw[1]}, {threads} threads "
        "(bars: median; dots: rounds; shared machine, compare ratios)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(path: Path, all_tables: list[Table], argv: list[str]) -> None:
    text = [
        "# Agent benchmark",
        "",
        f"`{command_line('benchmarks.agent_bench', argv)}`",
        "",
        "Ratios are medians of per-round ratios; contenders alternate within each round on the same "
        "frames, model and thread count. Absolute fps depend on the machine's load.",
        "",
    ]
    text += [render_markdown(t) for t in all_tables]
    path.write_text("\n".join(text))


# ----------------------------------------------------------------------------------------------
# --stages: the agent's per-stage latency for each precision and thread count

STAGE_CALIB_IMAGES = 64
STAGE_VAL_IMAGES = 16
STAGE_LOAD_S = 1.5  # loading and verifying a bundle per configuration and round, for the budget
# Frame age on a live source: frames per configuration and round from the MJPEG test camera, and how many
# distinct JPEGs of the video it cycles through.
LIVE_FRAMES = 60
LIVE_JPEGS = 30
LIVE_CONNECT_S = 1.0  # opening the stream, per configuration and round, for the budget


class LiveCamera:
    """The MJPEG test camera (tests/agent/agent_process.py's MjpegServer) in a process of its own, so its
    sending holds no lock the timed loop needs; frames are JPEGs of the benchmark's video. `with` gives the URL."""

    def __init__(self, video: Path, workdir: Path, fps: float, state_dir: Path) -> None:
        self.jpegs = workdir / "live-jpegs"
        self.fps = fps
        self.state_dir = state_dir
        self.proc: subprocess.Popen[str] | None = None
        self.jpegs.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(read_frames(video, LIVE_JPEGS)):
            cv2.imwrite(str(self.jpegs / f"{index:03d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            worker_cmd("mjpeg", self.jpegs, self.fps),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(1, self.state_dir),
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.__exit__()
            raise RuntimeError("the MJPEG test camera exited before it gave its URL")
        return str(json.loads(line)["url"])

    def __exit__(self, *_: object) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the worker stops its server when stdin closes
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass(frozen=True)
class StageConfig:
    precision: str
    threads: int

    @property
    def name(self) -> str:
        return f"{self.precision}, {self.threads} thread{'s' if self.threads > 1 else ''}"


def parse_precisions(text: str) -> tuple[str, ...]:
    precisions = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not precisions or any(p not in ("fp32", "int8") for p in precisions):
        raise argparse.ArgumentTypeError(f"wants fp32, int8 or fp32,int8; got {text!r}")
    return precisions


def stage_bundle(args: argparse.Namespace, workdir: Path) -> Path:
    """--bundle, or the fixture weights (or --weights) converted at --imgsz by the real command.

    Converted with --max-map-drop 100: this bundle only measures speed, and the agent refuses INT8 from
    a bundle marked not deployable (the fixture, trained at 256, may lose more than a point at 640).
    """
    if args.bundle is not None:
        return args.bundle
    out = workdir / f"stages-bundle-{args.imgsz}"
    if (out / "manifest.json").exists():
        progress(f"reusing {out}")
        return out
    from benchmarks.converter_bench import FIXTURE_WEIGHTS, run_convert
    from benchmarks.fixture.make_shapes import write_dataset

    data_yaml = write_dataset(
        workdir / "stages-shapes", splits={"train": (0, STAGE_CALIB_IMAGES), "val": (100_000, STAGE_VAL_IMAGES)}
    )
    options = ["--imgsz", args.imgsz, "--calib-size", STAGE_CALIB_IMAGES, "--val-size", STAGE_VAL_IMAGES]
    options += ["--threads", args.threads, "--max-map-drop", 100, "--force"]
    run_convert(args.weights or FIXTURE_WEIGHTS, out, data_yaml, [str(o) for o in options])
    return out


def live_frames(args: argparse.Namespace) -> int:
    """Timed frames per live run: LIVE_FRAMES, or --frames when that is fewer (as with report.py --quick)."""
    return min(LIVE_FRAMES, args.frames)


def plan_stage_frames(args: argparse.Namespace, fp32: Path, configs: list[StageConfig]) -> int:
    if args.budget <= 0:
        return args.frames
    most = max(c.threads for c in configs)
    fps = probe_fps(fp32, most)
    # A CNN slows down about in proportion to fewer threads; INT8 is taken to run at FP32's speed.
    per_frame = 1.15 * args.rounds * sum(most / c.threads for c in configs) / fps
    progress(f"probe: {fps:.2f} fps bare FP32 at {most} threads")
    fixed = args.rounds * len(configs) * STAGE_LOAD_S
    if args.live_fps > 0:
        # Live runs come at most at the camera's rate; at the model's where that is slower.
        live = sum(1.15 * (LIVE_FRAMES + WARMUP_FRAMES) / min(args.live_fps, fps * c.threads / most) for c in configs)
        fixed += args.rounds * (live + len(configs) * (STAGE_LOAD_S + LIVE_CONNECT_S))
    return fit_budget(args, per_frame, fixed)


def run_stage_rounds(
    args: argparse.Namespace, bundle: Path, configs: list[StageConfig], video: Path, camera: str | None
) -> tuple[dict[StageConfig, list[RunResult]], dict[StageConfig, list[RunResult]]]:
    """(file results, live results): each configuration on the video file, then (with a camera URL) on the
    live test camera, configurations rotating from round to round."""
    results: dict[StageConfig, list[RunResult]] = {c: [] for c in configs}
    live: dict[StageConfig, list[RunResult]] = {c: [] for c in configs} if camera else {}
    for round_index in range(args.rounds):
        shift = round_index % len(configs)
        for config in configs[shift:] + configs[:shift]:
            progress(f"round {round_index + 1}/{args.rounds}: agent in-process, {config.name} ({args.frames} frames)")
            result = run_agent_inprocess(bundle, video, args.frames, config.threads, config.precision, STAGE_SCENE)
            results[config].append(result)
            progress(f"    {result.fps:.2f} fps, inference {result.stage_ms['inference']:.1f} ms")
            if camera:
                frames = live_frames(args)
                progress(f"    then the live test camera at {args.live_fps:g} fps ({frames} frames)")
                result = run_agent_inprocess(bundle, camera, frames, config.threads, config.precision, STAGE_SCENE)
                live[config].append(result)
                progress(f"    {result.fps:.2f} fps, frame age {result.stage_ms['frame age']:.1f} ms")
    return results, live


def stage_tables(
    args: argparse.Namespace,
    input_hw: tuple[int, int],
    results: dict[StageConfig, list[RunResult]],
    live: dict[StageConfig, list[RunResult]],
) -> list[Table]:
    size = f"{input_hw[0]}x{input_hw[1]}"
    rows = []
    for config, runs in results.items():
        stages = [median([r.stage_ms[s] for r in runs]) for s in STAGE_NAMES]
        waits = [median([r.between_ms or 0.0 for r in runs])]
        totals = [sum(r.stage_ms[s] for s in STAGE_NAMES) for r in runs]
        fps = [r.fps for r in runs]
        inference = [r.stage_ms["inference"] for r in runs]
        rows.append(
            (
                config.precision,
                str(config.threads),
                *(f"{v:.2f}" for v in waits),
                *(f"{v:.2f}" for v in stages),
                f"{median(totals):.1f}",
                f"{median(fps):.2f}",
                fmt_rounds(inference, 1),
            )
        )
    out = [
        Table(
            f"Agent stage times at {size} (agent in-process, AgentLoop's own StageTimings; median over "
            f"{args.rounds} rounds of each round's median over {args.frames} frames, ms)",
            (
                "precision",
                "threads",
                "capture wait",
                *STAGE_NAMES,
                "sum ms",
                "loop fps",
                "inference per round",
            ),
            tuple(rows),
            (
                "capture wait: the loop waiting for the source's next frame (and its own bookkeeping), the mean of "
                "each frame interval minus that frame's stages.",
                "No frame age here: a video file is read without pacing and its frames are stamped when the loop "
                "takes them, so their age is zero by construction. It is measured on a live source below"
                + ("." if live else " (not in this run: --live-fps 0)."),
                "publish: building the payloads and handing them to a publisher that discards them (no network).",
                "motion and tracking: the agent's defaults (motion gate, tracker) with one zone over the lower half; "
                "the medians are over detector frames (the sample video moves all the time, so few are skipped).",
                "sum ms: motion to publish.",
                "loop fps: frames between warm-up end and last frame, over that time; includes decoding the video.",
            ),
        )
    ]
    if live:
        out.append(live_table(args, size, live))
    best = max(results, key=lambda c: median([r.fps for r in results[c]]))
    headline = [
        (
            f"agent loop fps at {size}, fastest configuration ({best.name})",
            "-",
            f"{median([r.fps for r in results[best]]):.2f}",
            "-",
        )
    ]
    pairs = [(c, StageConfig("int8", c.threads)) for c in results if c.precision == "fp32"]
    pairs = [(f, i) for f, i in pairs if i in results]
    if pairs:
        ratio_rows = []
        for fp32, int8 in pairs:
            speedups = [
                f.stage_ms["inference"] / i.stage_ms["inference"]
                for f, i in zip(results[fp32], results[int8], strict=True)
            ]
            fps_ratio = paired_ratio({"a": results[int8], "b": results[fp32]}, "a", "b")
            headline.append(
                (
                    f"INT8 / FP32 inference speed-up in the agent at {size}, {fp32.threads} thread(s)",
                    "-",
                    f"{median(speedups):.2f}x",
                    "-",
                )
            )
            ratio_rows.append(
                (
                    str(fp32.threads),
                    f"{median([r.stage_ms['inference'] for r in results[fp32]]):.1f}",
                    f"{median([r.stage_ms['inference'] for r in results[int8]]):.1f}",
                    f"{median(speedups):.2f}x",
                    f"{fps_ratio:.2f}x" if fps_ratio is not None else "-",
                )
            )
        out.append(
            Table(
                f"INT8 against FP32 at {size} (same bundle, frames and threads; medians of per-round ratios)",
                (
                    "threads",
                    "FP32 inference ms",
                    "INT8 inference ms",
                    "INT8 inference speed-up",
                    "INT8 / FP32 loop fps",
                ),
                tuple(ratio_rows),
                (
                    f"INT8 speed depends on the CPU's integer dot-product instructions (this one: {int8_support()}; "
                    "a Pi 5 has them, a Pi 4 does not): read these ratios for this CPU only.",
                ),
            )
        )
    # report.py lifts every "Headline" table into REPORT.md's summary.
    return [Table("Headline", ("figure", "wanted", "measured", "result"), tuple(headline)), *out]


def live_table(args: argparse.Namespace, size: str, live: dict[StageConfig, list[RunResult]]) -> Table:
    rows = []
    for config, runs in live.items():
        ages = [r.stage_ms["frame age"] for r in runs]
        dropped = [
            100.0 * r.source.frames_dropped / r.source.frames_read
            for r in runs
            if r.source is not None and r.source.frames_read
        ]
        rows.append(
            (
                config.precision,
                str(config.threads),
                f"{median(ages):.2f}",
                f"{median([r.stage_ms['frame age p90'] for r in runs]):.2f}",
                f"{median([r.fps for r in runs]):.2f}",
                f"{median(dropped):.0f}" if dropped else "-",
                fmt_rounds(ages, 2),
            )
        )
    interval = 1000.0 / args.live_fps
    return Table(
        f"Frame age on a live source at {size}: the MJPEG test camera at {args.live_fps:g} fps over HTTP on this "
        f"machine (agent in-process; median over {args.rounds} rounds of each round's figure over "
        f"{live_frames(args)} frames, ms)",
        (
            "precision",
            "threads",
            "frame age",
            "frame age p90",
            "loop fps",
            "camera frames never processed %",
            "frame age per round",
        ),
        tuple(rows),
        (
            "frame age: from the reader thread's decoding of a frame to the loop picking it up (StageTimings.capture, "
            "the `capture` stage of the agent's stats).",
            f"A camera faster than the loop fills the newest-frame slot while the model runs: the loop then takes "
            f"a frame up to one camera interval ({interval:.0f} ms) old and the older ones are dropped (the last "
            "column). A loop faster than the camera waits for each frame, and the age is only the hand-over from "
            "the reader thread, which on a loaded machine includes waiting for a core.",
            "The camera (tests/agent/agent_process.py's MjpegServer, its own process) cycles JPEGs of the same video; "
            "it runs on the same cores as the agent, as a Pi's camera stack would not.",
        ),
    )


def int8_support() -> str:
    if is_x86():
        return f"x86 {'with' if cpu_has_vnni() else 'without'} VNNI"
    return "ARM"


def stage_plot(path: Path, results: dict[StageConfig, list[RunResult]], input_hw: tuple[int, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(results)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(configs) + 1.8))
    left = np.zeros(len(configs))
    for stage in STAGE_NAMES:
        values = np.array([median([r.stage_ms[stage] for r in results[c]]) for c in configs])
        ax.barh(range(len(configs)), values, left=left, label=stage)
        left += values
    ax.set_yticks(range(len(configs)), [c.name for c in configs])
    ax.invert_yaxis()
    ax.set_xlabel("median ms per frame (stacked stages)")
    ax.set_title(f"yolo-edge agent stage times at {input_hw[0]}x{input_hw[1]} ({cpu_model()})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stages_main(args: argparse.Namespace, argv: list[str]) -> int:
    threads = args.stage_threads or tuple(sorted({1, args.threads}))
    configs = [StageConfig(p, t) for p in args.stages for t in threads]
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        facts = machine_facts(max(threads))
        facts["onnxruntime threads"] = ", ".join(map(str, threads))
        bundle = stage_bundle(args, workdir)
        loaded = load_bundle(bundle)
        missing = [p for p in args.stages if p not in loaded.files]
        if missing:
            print(f"agent_bench: bundle {bundle} has no {', '.join(missing)} model", file=sys.stderr)
            return 2
        fp32 = bundle / loaded.files["fp32"].path
        input_hw = InferenceModel(fp32, 1).info.input_hw
        requested = args.frames
        args.frames = plan_stage_frames(args, fp32, configs)
        if args.frames != requested:
            facts["frames"] = f"{args.frames} timed per configuration and round (cut from {requested} by --budget)"
        video = prepare_video(workdir, args.frames + WARMUP_FRAMES)
        if args.live_fps > 0:
            with tempfile.TemporaryDirectory(prefix="agent-bench-state-") as state_root:
                camera = LiveCamera(video, workdir, args.live_fps, ChildStateDirs(Path(state_root)).fresh("camera"))
                with camera as url:
                    results, live = run_stage_rounds(args, bundle, configs, video, url)
        else:
            results, live = run_stage_rounds(args, bundle, configs, video, None)
    facts["model"] = f"bundle {bundle.name} ({loaded.model_name}, {'+'.join(sorted(loaded.files))})"
    facts["video"] = f"{VIDEO_HW[1]}x{VIDEO_HW[0]} generated shapes video, {args.frames + WARMUP_FRAMES} frames"
    facts["load average at end"] = load_average()
    all_tables = [Table("Machine and set-up", ("fact", "value"), tuple(facts.items()))]
    all_tables += stage_tables(args, input_hw, results, live)
    for table in all_tables:
        print(render_text(table))
    stem = f"agent_stages_{input_hw[0]}"
    png, md = args.out / f"{stem}.png", args.out / f"{stem}.md"
    stage_plot(png, results, input_hw)
    text = [
        f"# Agent stage times at {input_hw[0]}x{input_hw[1]}",
        "",
        f"`{command_line('benchmarks.agent_bench', argv)}`",
        "",
        "Configurations alternate within each round (the order rotates), on the same frames; absolute times "
        "depend on the machine's load, the ratios compare configurations run side by side.",
        "",
        f"![agent stage times]({png.name})",
        "",
    ]
    md.write_text("\n".join(text + [render_markdown(t) for t in all_tables]))
    print(f"\nwrote {png} and {md}")
    return 0


# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640, help="export size when no --bundle (default 640)")
    parser.add_argument("--frames", type=int, default=200, help="timed frames per contender and round (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; contenders alternate within each (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads for all (default: all cores)")
    parser.add_argument("--weights", type=Path, help="Ultralytics .pt to export (default: untrained yolo11n.yaml)")
    parser.add_argument(
        "--bundle", type=Path, help="bundle with INT8 for the agent-auto row (its FP32 is used for every row)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=5.0,
        metavar="MIN",
        help="cut --frames when the probed speed says the rounds would take longer than this "
        "many minutes (default 5; 0 = never cut; the soak is not counted)",
    )
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="also run the agent N frames for RSS drift")
    parser.add_argument(
        "--stages",
        type=parse_precisions,
        metavar="PRECISIONS",
        help="only the per-stage latency of the agent in-process at these precisions (fp32,int8), for each "
        "--stage-threads count; converts the fixture weights (or --weights) at --imgsz when no --bundle",
    )
    parser.add_argument(
        "--stage-threads",
        type=int_list(1, "thread counts"),
        metavar="N,N",
        help="thread counts for --stages (default: 1 and --threads)",
    )
    parser.add_argument(
        "--live-fps",
        type=float,
        default=30.0,
        metavar="FPS",
        help="--stages also measures frame age on the MJPEG test camera at this rate (default 30; 0 = not)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="PNG and markdown here")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the exported model and video here for reruns (default: a temporary directory, removed)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.frames < 2 or args.rounds < 1:
        print("--frames must be >= 2 and --rounds >= 1", file=sys.stderr)
        return 2
    args.threads = args.threads or default_threads()
    os.environ["YOLO_OFFLINE"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stages:
        return stages_main(args, argv)
    # The children's state directories are never in --workdir, which a rerun reuses: each run starts empty.
    with (
        tempfile.TemporaryDirectory(prefix="agent-bench-") as temp,
        tempfile.TemporaryDirectory(prefix="agent-bench-state-") as state_root,
    ):
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        state_dirs = ChildStateDirs(Path(state_root))
        facts = machine_facts(args.threads)
        models = prepare_models(args, workdir, state_dirs)
        requested = args.frames
        args.frames = plan_frames(args, models)
        if args.frames != requested:
            facts["frames"] = f"{args.frames} timed per contender and round (cut from --frames {requested} by --budget)"
        video = prepare_video(workdir, args.frames + WARMUP_FRAMES)
        results = run_rounds(args, models, video, state_dirs)
        soak = None
        if args.soak:
            # A longer video so a loop restart (reopening the file) happens rarely, as with a camera.
            soak = run_soak(args, models, prepare_video(workdir, max(args.frames + WARMUP_FRAMES, 300)), state_dirs)
    result_tables, verdicts = tables(args, models, results, soak)
    all_tables = [facts_table(facts, models, args), *result_tables, verdict_table(verdicts)]
    for table in all_tables:
        print(render_text(table))
    png, md = args.out / "agent_bench.png", args.out / "agent_bench.md"
    plot(png, results, models, args.threads)
    write_markdown(md, all_tables, argv)
    print(f"\nwrote {png} and {md}")
    print("note: absolute figures depend on the machine's load; the ratios compare contenders run side by side.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tracking benchmark: our tracker against Ultralytics' ByteTrack, fed the same detections.

    python -m benchmarks.tracking_bench [--sequences crossing,occlusion,...] [--frames N] [--rounds 7]
                                        [--objects 1,5,10,20] [--timing-frames 150] [--confidence 0.1]
                                        [--threads N] [--workdir DIR] [--out benchmarks/results]

quality  the moving-shapes sequences (benchmarks/fixture/sequences.py: crossing paths, occlusions,
         shapes entering and leaving, varied speeds) rendered frame by frame, the fixture model
         (tests/assets/shapes_yolo11n.pt as FP32 ONNX) run on each through the agent's own
         Detector; the same detections go to agent.scene.tracker.Tracker (its default settings)
         and to ultralytics.trackers.byte_tracker.BYTETracker (bytetrack.yaml's defaults, whose
         track_buffer of 30 frames is our max_lost_s of 2 s at the sequences' 15 fps). Each
         tracker is scored on the detections it gave an id in that frame (both report boxes of
         the same detections, so only the identities differ) with py-motmetrics: MOTA, IDF1, ID
         switches, against the truth at IoU >= 0.5.
speed    the time of one update() call at 1, 5, 10 and 20 objects: synthetic detections (the truth
         of N shapes moving in a 640x480 frame, jittered, some low-scored or missed), the same for
         both trackers, the trackers taking turns in alternating rounds; medians of per-round
         medians.

The detector runs at --confidence 0.1 (the agent's default is 0.25) so that ByteTrack's second,
low-score pass (0.1..0.25) and ours (below 0.5) both have detections to work with.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.pipeline.detections import Detections
from agent.pipeline.inference import default_threads
from agent.scene.tracker import Tracker, TrackerSettings, iou_matrix
from agent.system.board import cpu_model
from benchmarks.arguments import int_list
from benchmarks.fixture.sequences import SEQUENCES, Sequence, Truth, all_sequences, truncated
from benchmarks.machine import load_average, logical_cpus
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11n.pt"
RESULTS = ROOT / "benchmarks" / "results"
MATCH_IOU = 0.5  # a reported box counts for a true object at this IoU (the MOT convention)
TARGET_MS_20 = 1.0
TIMING_HW = (480, 640)
TIMING_WARMUP = 5
OURS, BYTE = "ours", "ByteTrack"


# ----------------------------------------------------------------------------------------------
# Detections


def export_onnx(weights: Path, workdir: Path) -> Path:
    """The fixture as FP32 ONNX, exported once per weights file (named by its hash) and reused after."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    target = workdir / f"shapes-{digest}.onnx"
    if target.exists():
        progress(f"reusing {target}")
        return target
    progress(f"exporting {weights.name} to ONNX (Ultralytics, in a child process) into {workdir}")
    workdir.mkdir(parents=True, exist_ok=True)
    # A child, so Ultralytics' export chatter stays out of the tables on stdout.
    code = (
        "import sys; from pathlib import Path; from converter.export import export_model; "
        "e = export_model(Path(sys.argv[1]), Path(sys.argv[2]), imgsz=None, head='auto'); "
        "e.onnx_path.replace(sys.argv[3])"
    )
    with tempfile.TemporaryDirectory(dir=workdir) as temp:
        result = subprocess.run(
            [sys.executable, "-c", code, str(weights), temp, str(target)], stdout=subprocess.DEVNULL, check=False
        )
    if result.returncode != 0 or not target.exists():
        raise SystemExit(f"tracking_bench: exporting {weights} to ONNX failed (exit {result.returncode})")
    return target


@dataclass(frozen=True)
class Recorded:
    """A sequence's detections and truth, frame by frame."""

    sequence: Sequence
    detections: list[Detections]
    truths: list[Truth]


def detect_sequences(model: Path, sequences: list[Sequence], confidence: float, threads: int) -> list[Recorded]:
    from agent.pipeline.detector import load_detector

    detector, _ = load_detector(model, "fp32", threads, confidence=confidence)
    recorded = []
    for index, sequence in enumerate(sequences, 1):
        started = time.perf_counter()
        detections, truths = [], []
        for image, truth in sequence.iter_frames():
            detections.append(detector.detect(image)[0])
            truths.append(truth)
        progress(
            f"detected {index}/{len(sequences)} {sequence.name}: {sequence.frames} frames, "
            f"{sum(len(d) for d in detections)} detections, {time.perf_counter() - started:.1f} s"
        )
        recorded.append(Recorded(sequence, detections, truths))
    return recorded


# ----------------------------------------------------------------------------------------------
# The two trackers behind one call: detections in, (per-detection id or None) out


class ByteInput:
    """Detections in the shape BYTETracker.update reads (Ultralytics' Boxes after .cpu().numpy())."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        self.xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)

    @classmethod
    def of(cls, detections: Detections) -> ByteInput:
        return cls(
            detections.boxes_xyxy.astype(np.float32),
            detections.scores.astype(np.float32),
            detections.class_ids.astype(np.float32),
        )

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: np.ndarray) -> ByteInput:
        return ByteInput(self.xyxy[index], self.conf[index], self.cls[index])


Step = Callable[[int], list[int | None]]  # frame index -> id per detection


def byte_args() -> object:
    import ultralytics
    import yaml
    from ultralytics.utils import IterableSimpleNamespace

    path = Path(ultralytics.__file__).parent / "cfg" / "trackers" / "bytetrack.yaml"
    return IterableSimpleNamespace(**yaml.safe_load(path.read_text()))


def ours_runner(detections: list[Detections], fps: float) -> Step:
    numbers = itertools.count(1)
    tracker = Tracker(TrackerSettings(), make_id=lambda ts: str(next(numbers)))

    def step(frame: int) -> list[int | None]:
        ids = tracker.update(detections[frame], frame / fps).track_ids
        return [int(i) if i is not None else None for i in ids]

    return step


def byte_runner(inputs: list[ByteInput], args: object) -> Step:
    from ultralytics.trackers.byte_tracker import BYTETracker

    tracker = BYTETracker(args)

    def step(frame: int) -> list[int | None]:
        ids: list[int | None] = [None] * len(inputs[frame])
        for row in tracker.update(inputs[frame]):
            ids[int(row[7])] = int(row[4])
        return ids

    return step


# ----------------------------------------------------------------------------------------------
# Quality


@dataclass(frozen=True)
class Scores:
    mota: float
    idf1: float
    switches: int
    ms_per_frame: float


def accumulate(recorded: Recorded, step: Step) -> tuple[object, float]:
    """The motmetrics accumulator of one tracker on one sequence, and its median ms per update."""
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=True)
    times = []
    for frame, (detections, truth) in enumerate(zip(recorded.detections, recorded.truths, strict=True)):
        started = time.perf_counter()
        ids = step(frame)
        times.append(time.perf_counter() - started)
        shown = [i for i, track in enumerate(ids) if track is not None]
        iou = iou_matrix(truth.boxes, detections.boxes_xyxy[shown])
        # motmetrics' own iou_matrix needs a NumPy older than 2; its distances are 1 - IoU, NaN = no match.
        distances = np.where(iou >= MATCH_IOU, 1.0 - iou, np.nan)
        accumulator.update(truth.ids.tolist(), [ids[i] for i in shown], distances)
    return accumulator, float(np.median(times) * 1e3)


def score(recorded: list[Recorded]) -> dict[str, dict[str, Scores]]:
    """tracker -> sequence name (and OVERALL) -> scores."""
    import motmetrics as mm

    args = byte_args()
    out: dict[str, dict[str, Scores]] = {}
    for name in (OURS, BYTE):
        accumulators, times = [], []
        for rec in recorded:
            step = (
                ours_runner(rec.detections, rec.sequence.fps)
                if name == OURS
                else byte_runner([ByteInput.of(d) for d in rec.detections], args)
            )
            accumulator, ms = accumulate(rec, step)
            accumulators.append(accumulator)
            times.append(ms)
        names = [rec.sequence.name for rec in recorded]
        summary = mm.metrics.create().compute_many(
            accumulators, metrics=["mota", "idf1", "num_switches"], names=names, generate_overall=True
        )
        all_ms = dict(zip(names, times, strict=True)) | {"OVERALL": float(np.median(times))}
        out[name] = {
            row: Scores(float(s.mota), float(s.idf1), int(s.num_switches), all_ms[row]) for row, s in summary.iterrows()
        }
        progress(f"scored {name}: IDF1 {out[name]['OVERALL'].idf1:.3f}, {out[name]['OVERALL'].switches} ID switches")
    return out


# ----------------------------------------------------------------------------------------------
# Speed


def timing_detections(objects: int, frames: int, seed: int = 7) -> list[Detections]:
    """`objects` shapes bouncing around a 640x480 frame: their boxes jittered, 15% scored low, 3% missed."""
    rng = np.random.default_rng([seed, objects])
    h, w = TIMING_HW
    size = rng.uniform(20, 60, size=(objects, 2))
    centre = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(objects, 2))
    velocity = rng.uniform(-6, 6, size=(objects, 2))
    classes = rng.integers(0, 4, size=objects)
    out = []
    for _ in range(frames):
        centre += velocity
        bounce = (centre < size / 2) | (centre > np.array([w, h]) - size / 2)
        velocity[bounce] *= -1
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) + rng.normal(0, 1.5, (objects, 4))
        scores = np.where(rng.random(objects) < 0.15, rng.uniform(0.15, 0.5, objects), rng.uniform(0.6, 0.95, objects))
        kept = rng.random(objects) >= 0.03
        out.append(Detections(boxes[kept], scores[kept], classes[kept]))
    return out


def time_runner(step: Step, frames: int) -> float:
    """Median ms of one update over `frames` frames, after a few warm-up frames."""
    times = []
    for frame in range(frames):
        started = time.perf_counter()
        step(frame)
        times.append(time.perf_counter() - started)
    return float(np.median(times[TIMING_WARMUP:]) * 1e3)


def time_trackers(objects: Seq[int], frames: int, rounds: int) -> dict[int, dict[str, list[float]]]:
    """objects -> tracker -> per-round median ms per update; the trackers alternate who goes first."""
    args = byte_args()
    out: dict[int, dict[str, list[float]]] = {}
    for count in objects:
        detections = timing_detections(count, frames + TIMING_WARMUP)
        inputs = [ByteInput.of(d) for d in detections]
        out[count] = {OURS: [], BYTE: []}
        for round_index in range(rounds):
            order = (OURS, BYTE) if round_index % 2 == 0 else (BYTE, OURS)
            for name in order:
                step = ours_runner(detections, 15.0) if name == OURS else byte_runner(inputs, args)
                out[count][name].append(time_runner(step, len(detections)))
        progress(
            f"timed {count} objects, {rounds} rounds: ours {np.median(out[count][OURS]):.3f} ms, "
            f"ByteTrack {np.median(out[count][BYTE]):.3f} ms"
        )
    return out


# ----------------------------------------------------------------------------------------------
# Tables, plot, Markdown


def quality_table(scores: dict[str, dict[str, Scores]], recorded: list[Recorded]) -> Table:
    rows = []
    about = {rec.sequence.name: rec for rec in recorded}
    for row in [*about, "OVERALL"]:
        ours, byte = scores[OURS][row], scores[BYTE][row]
        rec = about.get(row)
        frames = str(rec.sequence.frames) if rec else str(sum(r.sequence.frames for r in recorded))
        objects = str(len(rec.sequence.movers)) if rec else str(sum(len(r.sequence.movers) for r in recorded))
        rows.append(
            (
                row,
                frames,
                objects,
                f"{ours.mota:.3f}",
                f"{byte.mota:.3f}",
                f"{ours.idf1:.3f}",
                f"{byte.idf1:.3f}",
                str(ours.switches),
                str(byte.switches),
            )
        )
    return Table(
        "Tracking quality on the same detections (py-motmetrics, IoU >= 0.5)",
        (
            "sequence",
            "frames",
            "objects",
            "MOTA ours",
            "MOTA ByteTrack",
            "IDF1 ours",
            "IDF1 ByteTrack",
            "ID sw. ours",
            "ID sw. ByteTrack",
        ),
        tuple(rows),
        (
            *(f"{rec.sequence.name}: {rec.sequence.about}" for rec in recorded),
            "Both trackers are scored on the detections they gave an id in that frame; MOTA also counts "
            "the detector's own misses and false positives, alike for both.",
        ),
    )


def speed_table(timings: dict[int, dict[str, list[float]]], frames: int) -> Table:
    rows = []
    for count, per in timings.items():
        ours, byte = float(np.median(per[OURS])), float(np.median(per[BYTE]))
        rows.append(
            (
                str(count),
                f"{ours:.3f}",
                f"{byte:.3f}",
                f"{byte / ours:.1f}x",
                ", ".join(f"{v:.3f}" for v in per[OURS]),
            )
        )
    rounds = len(next(iter(timings.values()))[OURS]) if timings else 0
    return Table(
        "Tracker time per frame (ms, median of per-round medians)",
        ("objects", "ours", "ByteTrack", "ByteTrack / ours", "ours per round"),
        tuple(rows),
        (
            f"{frames} frames per round, {rounds} rounds, the trackers alternating; the same synthetic "
            "detections (jittered boxes, 15% low-scored, 3% missed) for both; one update() call each.",
        ),
    )


def targets_table(scores: dict[str, dict[str, Scores]], timings: dict[int, dict[str, list[float]]]) -> Table:
    ours, byte = scores[OURS]["OVERALL"], scores[BYTE]["OVERALL"]
    rows = [
        ("IDF1, all sequences", f">= ByteTrack's ({byte.idf1:.3f})", f"{ours.idf1:.3f}", _ok(ours.idf1 >= byte.idf1)),
        (
            "ID switches, all sequences",
            f"<= ByteTrack's ({byte.switches})",
            str(ours.switches),
            _ok(ours.switches <= byte.switches),
        ),
    ]
    if 20 in timings:
        ms = float(np.median(timings[20][OURS]))
        rows.append(("ms per frame at 20 objects", f"< {TARGET_MS_20:g}", f"{ms:.3f}", _ok(ms < TARGET_MS_20)))
    return Table("Targets", ("target", "wanted", "measured", "result"), tuple(rows))


def _ok(passed: bool) -> str:
    return "met" if passed else "NOT met"


def plot(path: Path, scores: dict[str, dict[str, Scores]], timings: dict[int, dict[str, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    rows = list(scores[OURS])
    x = np.arange(len(rows))
    for ax, attr, title in ((axes[0], "idf1", "IDF1 (higher is better)"), (axes[1], "switches", "ID switches (lower)")):
        for offset, name, colour in ((-0.2, OURS, "tab:blue"), (0.2, BYTE, "tab:orange")):
            ax.bar(x + offset, [getattr(scores[name][r], attr) for r in rows], 0.4, label=name, color=colour)
        ax.set_xticks(x, rows, rotation=25, ha="right")
        ax.set_title(title)
        ax.legend()
    ax = axes[2]
    counts = list(timings)
    for name, colour in ((OURS, "tab:blue"), (BYTE, "tab:orange")):
        ax.plot(counts, [np.median(timings[c][name]) for c in counts], "o-", label=name, color=colour)
        for c in counts:
            ax.scatter([c] * len(timings[c][name]), timings[c][name], color=colour, s=8, alpha=0.5)
    ax.axhline(TARGET_MS_20, color="grey", linestyle="--", linewidth=1, label=f"target at 20: {TARGET_MS_20:g} ms")
    ax.set_xlabel("objects per frame")
    ax.set_title("ms per update (lower; dots: rounds)")
    ax.legend()
    fig.suptitle("Tracking: agent.scene.tracker against Ultralytics' ByteTrack on the same detections")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(path: Path, tables: list[Table], argv: list[str]) -> None:
    text = [
        "# Tracking benchmark",
        "",
        f"`{command_line('benchmarks.tracking_bench', argv)}`",
        "",
        "Our tracker (agent.scene.tracker) and Ultralytics' ByteTrack get the same detections: the fixture "
        "model's, through the agent's Detector, on generated moving-shapes sequences with ground truth. "
        "Times are medians over rounds in which the two take turns; absolute times depend on the machine's load.",
        "",
        f"![tracking_bench]({path.with_suffix('.png').name})",
        "",
    ]
    text += [render_markdown(t) for t in tables]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(text))
    tmp.replace(path)


def sequence_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SEQUENCES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown sequence(s) {', '.join(unknown)}; known: {', '.join(SEQUENCES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracking_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=FIXTURE_WEIGHTS)
    parser.add_argument("--sequences", type=sequence_names, default=tuple(SEQUENCES), help=", ".join(SEQUENCES))
    parser.add_argument("--frames", type=int, default=0, help="only the first N frames of each sequence (0 = all)")
    parser.add_argument("--confidence", type=float, default=0.1, help="the detector's score threshold")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = all cores)")
    parser.add_argument("--objects", type=int_list(1, "object counts"), default=(1, 5, 10, 20))
    parser.add_argument("--timing-frames", type=int, default=150, help="frames per timing round")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds per object count")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "yolo-edge-tracking-bench",
        help="where the exported ONNX model is kept for the next run",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if not args.weights.exists():
        print(f"tracking_bench: {args.weights} does not exist; pass --weights PT", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.timing_frames <= TIMING_WARMUP or args.frames < 0:
        print(f"tracking_bench: --rounds >= 1, --timing-frames > {TIMING_WARMUP}, --frames >= 0", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_start = load_average()
    sequences = all_sequences(names=args.sequences)
    if args.frames:
        sequences = [truncated(s, args.frames) for s in sequences]
    threads = args.threads or default_threads()
    model = export_onnx(args.weights, args.workdir)
    recorded = detect_sequences(model, sequences, args.confidence, threads)
    scores = score(recorded)
    timings = time_trackers(args.objects, args.timing_frames, args.rounds)
    facts = Table(
        "Machine and set-up",
        ("fact", "value"),
        (
            ("cpu", cpu_model()),
            ("cores", logical_cpus()),
            (
                "detector",
                f"{args.weights.name} as FP32 ONNX, agent Detector, {threads} threads, "
                f"confidence >= {args.confidence:g}",
            ),
            (
                "sequences",
                f"{len(sequences)}, {sum(s.frames for s in sequences)} frames at "
                f"{sequences[0].width}x{sequences[0].height}, {sequences[0].fps:g} fps",
            ),
            ("our tracker", f"agent.scene.tracker.Tracker, {TrackerSettings()}"),
            ("ByteTrack", "ultralytics.trackers.byte_tracker.BYTETracker, bytetrack.yaml defaults"),
            ("load average at start / end", f"{load_start} / {load_average()}"),
            ("wall time", f"{time.monotonic() - started:.0f} s"),
        ),
    )
    tables = [
        targets_table(scores, timings),
        quality_table(scores, recorded),
        speed_table(timings, args.timing_frames),
        facts,
    ]
    for table in tables:
        print(render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = args.out / "tracking_bench.md"
    plot(markdown.with_suffix(".png"), scores, timings)
    write_markdown(markdown, tables, argv)
    print(f"\nwrote {markdown} and {markdown.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

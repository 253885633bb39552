"""Line crossings: the agent's `cross` events against Ultralytics' ObjectCounter, on videos whose every true
crossing is known; and what the line and dwell stages cost per frame.

    python -m benchmarks.line_bench [--scenarios down_and_up,door,...] [--tolerance 15] [--threads 1]
                                    [--parallel 2] [--objects 1,5,10,20] [--rounds 7] [--timing-frames 300]
                                    [--workdir DIR] [--out benchmarks/results]

quality  Each scenario (benchmarks/fixture/line_scenarios.py) is a generated 640x480 video at 15 fps of
         shapes walking known paths, and one counting line. The true crossings come from the true boxes,
         by the rule of docs/scene.md (benchmarks/line_scoring.py), once per anchor. Ours: the real agent
         (`yolo-edge-agent run --dry-run`, own process and state directory, the video played at its frame
         rate, every setting at its default) with the line configured twice, at the default anchor
         (bottom centre) and at the box centre. Theirs: Ultralytics' `solutions.ObjectCounter` with its
         default tracker, the same FP32 ONNX model (the fixture weights tests/assets/shapes_yolo11n.pt
         exported once), the same segment as its two-point region; it counts the box centre, so it is
         scored against the centre's truth. A found crossing matches a true one of the same direction
         at most --tolerance frames away, each once (a crossing made out of sight is reported when the
         object shows again): precision and recall per scenario, and in total.
cost     LineCounter.update and ZoneOccupancy.update (dwell included) with longest_dwell, at 1 to 20
         tracked objects (benchmarks/line_cost.py): medians of per-round medians. Goal: both under
         0.1 ms a frame at 20 objects.

Ultralytics runs offline (YOLO_OFFLINE, no auto-install, settings of its own). ObjectCounter needs
shapely, which the agent does not: install it into the venv first (`pip install 'shapely>=2'`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.system.board import cpu_model
from benchmarks.arguments import int_list
from benchmarks.fixture.line_scenarios import (
    FPS,
    HEIGHT,
    SCENARIOS,
    WIDTH,
    LineScenario,
    scenario_names,
    write_scenario,
)
from benchmarks.line_cost import LINES, STAGES, stage_costs
from benchmarks.line_runs import (
    AgentRun,
    TheirRun,
    default_tracker,
    go_offline,
    object_counter,
    run_agents,
    tracker_settings,
)
from benchmarks.line_scoring import Crossing, Score, match, ratio, true_crossings
from benchmarks.machine import load_average, logical_cpus
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text
from benchmarks.tracking_bench import FIXTURE_WEIGHTS, export_onnx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET_MS_20 = 0.1
# The three counters compared: (column, which truth it is scored against).
OURS_BOTTOM, OURS_CENTRE, THEIRS = "ours, bottom centre", "ours, centre", "ObjectCounter, centre"
COUNTERS = ((OURS_BOTTOM, "bottom_center"), (OURS_CENTRE, "center"), (THEIRS, "center"))


@dataclass(frozen=True)
class Scenario:
    """One scenario played: its truth per anchor and what each counter found."""

    scenario: LineScenario
    truth: dict[str, list[Crossing]]
    found: dict[str, list[Crossing]]  # counter -> crossings

    def score(self, counter: str, tolerance: int) -> Score:
        anchor = dict(COUNTERS)[counter]
        return match(self.truth[anchor], self.found[counter], tolerance)


def prepare(scenario: LineScenario, workdir: Path) -> tuple[Path, dict[str, list[Crossing]]]:
    """The scenario's video, and its true crossings per anchor."""
    video = workdir / "videos" / f"{scenario.name}.avi"
    video.parent.mkdir(parents=True, exist_ok=True)
    trajectories = write_scenario(video, scenario)
    truth = {
        anchor: sorted(
            (
                c
                for t in trajectories
                for c in true_crossings(t.frames, t.boxes_xyxy, scenario.line, (HEIGHT, WIDTH), anchor)
            ),
            key=lambda c: c.frame,
        )
        for anchor in ("bottom_center", "center")
    }
    return video, truth


def _in_out(crossings: list[Crossing]) -> str:
    return f"{sum(c.direction == 'in' for c in crossings)}/{sum(c.direction == 'out' for c in crossings)}"


def _offsets(offsets: tuple[int, ...]) -> str:
    return f"{np.median(offsets):+.0f} ({min(offsets):+d} to {max(offsets):+d})" if offsets else "-"


def _cell(score: Score) -> str:
    return f"{ratio(score.precision)} / {ratio(score.recall)} ({score.tp}/{score.fp}/{score.fn})"


def quality_table(played: list[Scenario], tolerance: int, tracker: str) -> Table:
    rows = []
    totals = {name: Score(0, 0, 0) for name, _ in COUNTERS}
    for item in played:
        scores = {name: item.score(name, tolerance) for name, _ in COUNTERS}
        totals = {name: totals[name] + scores[name] for name in totals}
        truth = f"{_in_out(item.truth['bottom_center'])}, {_in_out(item.truth['center'])}"
        rows.append((item.scenario.name, truth, *(_cell(scores[name]) for name, _ in COUNTERS)))
    truth_total = ", ".join(
        _in_out([c for item in played for c in item.truth[anchor]]) for anchor in ("bottom_center", "center")
    )
    rows.append(("TOTAL", truth_total, *(_cell(totals[name]) for name, _ in COUNTERS)))
    lateness = "; ".join(f"{name}: {_offsets(totals[name].offsets)}" for name, _ in COUNTERS)
    return Table(
        f"Crossing events against the truth (matched by direction, within {tolerance} frames)",
        ("scenario", "true in/out: bottom, centre", *(f"{name}: P / R (TP/FP/FN)" for name, _ in COUNTERS)),
        tuple(rows),
        (
            *(f"{item.scenario.name}: {item.scenario.about}" for item in played),
            "Ours at the bottom centre is scored against the bottom centre's truth; ours at the centre and "
            "ObjectCounter (which always counts the box centre) against the centre's.",
            f"Frames from the true crossing to the reported one (found - true), median and range: {lateness}.",
            "ObjectCounter counts a track id once: an object that crosses and comes back counts once.",
            f"ObjectCounter's tracker ({tracker}) starts a track only from a detection scored at least "
            f"{tracker_settings(tracker).get('new_track_thresh', '?')} (ours: the tracker's defaults, docs/scene.md).",
        ),
    )


def cost_table(costs: dict[int, dict[str, list[float]]], frames: int) -> Table:
    rows = []
    for count, per in costs.items():
        medians = {stage: float(np.median(per[stage])) for stage in STAGES}
        rows.append((str(count), *(f"{medians[s]:.4f}" for s in STAGES), f"{sum(medians.values()):.4f}"))
    rounds = len(next(iter(costs.values()))[LINES]) if costs else 0
    return Table(
        "Line and dwell stages per detector frame (ms, median of per-round medians)",
        ("objects", *STAGES, "both"),
        tuple(rows),
        (
            f"{frames} frames per round, {rounds} rounds; one line, one zone (the lower half), every object "
            "tracked; `zones + dwell` is ZoneOccupancy.update (dwell included) and longest_dwell.",
        ),
    )


def targets_table(played: list[Scenario], tolerance: int, costs: dict[int, dict[str, list[float]]]) -> Table:
    total = {name: sum((item.score(name, tolerance) for item in played), Score(0, 0, 0)) for name, _ in COUNTERS}
    rows = []
    for what in ("precision", "recall"):
        ours, theirs = getattr(total[OURS_CENTRE], what), getattr(total[THEIRS], what)
        result = "-" if ours is None else _ok(theirs is None or ours >= theirs)  # None: nothing to count
        rows.append((f"{what}, ours at the centre", f">= ObjectCounter's ({ratio(theirs)})", ratio(ours), result))
        bottom = getattr(total[OURS_BOTTOM], what)
        rows.append((f"{what}, ours at the bottom centre (default)", "-", ratio(bottom), "-"))
    if 20 in costs:
        both = sum(float(np.median(costs[20][stage])) for stage in STAGES)
        rows.append(
            (
                "lines + zones/dwell at 20 objects, ms a frame",
                f"< {TARGET_MS_20:g}",
                f"{both:.4f}",
                _ok(both < TARGET_MS_20),
            )
        )
    return Table("Targets", ("target", "wanted", "measured", "result"), tuple(rows))


def _ok(passed: bool) -> str:
    return "met" if passed else "NOT met"


def plot(path: Path, played: list[Scenario], tolerance: int, costs: dict[int, dict[str, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = [item.scenario.name for item in played]
    x = np.arange(len(names))
    colours = ("tab:blue", "tab:cyan", "tab:orange")
    for ax, what in ((axes[0], "precision"), (axes[1], "recall")):
        for offset, (name, _), colour in zip((-0.27, 0.0, 0.27), COUNTERS, colours, strict=True):
            values = [getattr(item.score(name, tolerance), what) for item in played]
            ax.bar(x + offset, [np.nan if v is None else v for v in values], 0.27, label=name, color=colour)
        ax.set_xticks(x, names, rotation=25, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{what} of crossing events (higher is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(COUNTERS), bbox_to_anchor=(0.34, 0.0))
    ax = axes[2]
    counts = list(costs)
    for stage, colour in zip(STAGES, ("tab:green", "tab:purple"), strict=True):
        ax.plot(counts, [np.median(costs[c][stage]) for c in counts], "o-", label=stage, color=colour)
    ax.plot(counts, [sum(np.median(costs[c][s]) for s in STAGES) for c in counts], "o--", label="both", color="k")
    ax.axhline(TARGET_MS_20, color="grey", linestyle=":", label=f"goal at 20: {TARGET_MS_20:g} ms")
    ax.set_xlabel("tracked objects")
    ax.set_title("ms per detector frame (lower)")
    ax.legend()
    fig.suptitle("Line crossings: the agent against Ultralytics' ObjectCounter on the same videos, model and lines")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(path: Path, tables: list[Table], argv: list[str]) -> None:
    text = [
        "# Line-crossing benchmark",
        "",
        f"`{command_line('benchmarks.line_bench', argv)}`",
        "",
        "The agent's `cross` events and Ultralytics' ObjectCounter's counts on generated videos whose every "
        "true crossing is known (the fixture model, the same FP32 ONNX for both, the same line); and the "
        "per-frame cost of the line and dwell stages. P = precision, R = recall.",
        "",
        f"![line_bench]({path.with_suffix('.png').name})",
        "",
    ]
    text += [render_markdown(t) for t in tables]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(text))
    tmp.replace(path)


def scenario_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in scenario_names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(scenario_names())}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.line_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=FIXTURE_WEIGHTS)
    parser.add_argument("--scenarios", type=scenario_list, default=scenario_names(), help=", ".join(scenario_names()))
    parser.add_argument(
        "--tolerance", type=int, default=15, help="frames between a true and a found crossing (15: 1 s at 15 fps)"
    )
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of each agent (1)")
    parser.add_argument("--parallel", type=int, default=2, help="agents running at once (2)")
    parser.add_argument(
        "--their-tracker", help="ObjectCounter's tracker file, e.g. bytetrack.yaml (default: its own default)"
    )
    parser.add_argument("--objects", type=int_list(1, "object counts"), default=(1, 5, 10, 20))
    parser.add_argument("--timing-frames", type=int, default=300, help="frames per timing round")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds per object count")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "yolo-edge-line-bench",
        help="where the exported ONNX model is kept for the next run; videos and agent state go here too",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.weights.exists():
        parser.error(f"--weights: {args.weights} does not exist")
    if importlib.util.find_spec("shapely") is None:
        parser.error("ObjectCounter needs shapely, which the agent does not: pip install 'shapely>=2' into this venv")
    if args.tolerance < 0 or args.threads < 1 or args.parallel < 1 or args.rounds < 1 or args.timing_frames < 1:
        parser.error("--tolerance >= 0; --threads, --parallel, --rounds and --timing-frames >= 1")
    started, load_start = time.monotonic(), load_average()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    go_offline(workdir / "ultralytics-config")
    model = export_onnx(args.weights, workdir)
    imgsz = _model_size(model)
    tracker = args.their_tracker or default_tracker()
    try:
        tracker_settings(tracker)
    except OSError:
        parser.error(f"--their-tracker: {tracker} is not one of Ultralytics' tracker files (cfg/trackers/*.yaml)")
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios]
    prepared = {s.name: prepare(s, workdir) for s in scenarios}
    progress(f"wrote {len(scenarios)} videos into {workdir / 'videos'}")
    run_dir = Path(tempfile.mkdtemp(prefix="runs-", dir=workdir))  # every agent's state directory is new
    ours = run_agents(
        [(s, prepared[s.name][0]) for s in scenarios], model, run_dir, args.threads, args.parallel, progress
    )
    theirs: dict[str, TheirRun] = {}
    for s in scenarios:
        theirs[s.name] = object_counter(s, prepared[s.name][0], model, imgsz, tracker)
        found = theirs[s.name]
        progress(f"ObjectCounter on {s.name}: {len(found.crossings)} crossings, {found.ms_per_frame:.0f} ms a frame")
    played = [_played(s, prepared[s.name][1], ours[s.name], theirs[s.name]) for s in scenarios]
    progress(f"timing the stages at {', '.join(map(str, args.objects))} objects, {args.rounds} rounds")
    costs = stage_costs(args.objects, args.timing_frames, args.rounds)
    facts = _facts(args, scenarios, ours, theirs, imgsz, tracker, load_start, started)
    tables = [
        targets_table(played, args.tolerance, costs),
        quality_table(played, args.tolerance, tracker),
        cost_table(costs, args.timing_frames),
        facts,
    ]
    for table in tables:
        print(render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = args.out / "line_bench.md"
    plot(markdown.with_suffix(".png"), played, args.tolerance, costs)
    write_markdown(markdown, tables, argv)
    print(f"\nwrote {markdown} and {markdown.with_suffix('.png').name}")
    return 0


def _played(scenario: LineScenario, truth: dict[str, list[Crossing]], ours: AgentRun, theirs: TheirRun) -> Scenario:
    found = {
        OURS_BOTTOM: ours.crossings["bottom_center"],
        OURS_CENTRE: ours.crossings["center"],
        THEIRS: theirs.crossings,
    }
    return Scenario(scenario, truth, found)


def _model_size(model: Path) -> int:
    import onnxruntime as ort

    shape = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    return int(shape[2])


def _facts(
    args: argparse.Namespace,
    scenarios: list[LineScenario],
    ours: dict[str, AgentRun],
    theirs: dict[str, TheirRun],
    imgsz: int,
    tracker: str,
    load_start: str,
    started: float,
) -> Table:
    import ultralytics
    from ultralytics.solutions.config import SolutionConfig

    default = "its default" if tracker == default_tracker() else f"not its default {default_tracker()}"
    frames = sum(s.frames for s in scenarios)
    processed = sum(run.processed for run in ours.values())
    return Table(
        "Machine and set-up",
        ("fact", "value"),
        (
            ("cpu", cpu_model()),
            ("cores", logical_cpus()),
            ("model", f"{args.weights.name} as FP32 ONNX at {imgsz}, the same file for both"),
            ("videos", f"{len(scenarios)} scenarios, {frames} frames at {WIDTH}x{HEIGHT}, {FPS:g} fps"),
            (
                "ours",
                f"yolo-edge-agent run --dry-run, defaults (confidence 0.25, motion gating and tracking on), "
                f"[source] fps = {FPS:g}, {args.threads} thread(s), {args.parallel} at once; "
                f"frames processed: {processed} of {frames} (a camera's pace: a frame the loop is late for is skipped)",
            ),
            (
                "theirs",
                f"ultralytics {ultralytics.__version__} solutions.ObjectCounter, tracker {tracker} ({default}), "
                f"other settings at their defaults (confidence {SolutionConfig().conf:g}), every frame; "
                f"{np.median([t.ms_per_frame for t in theirs.values()]):.0f} ms a frame (its drawing included)",
            ),
            ("load average at start / end", f"{load_start} / {load_average()}"),
            ("wall time", f"{time.monotonic() - started:.0f} s"),
        ),
    )


if __name__ == "__main__":
    sys.exit(main())

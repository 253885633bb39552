"""The benchmark report: run every benchmark, then stitch their Markdown into REPORT.md.

    python -m benchmarks.report [--skip PART,...] [--only PART,...] [--stitch] [--quick] [--out benchmarks/results]

Parts, each its own command that can be run alone (see PARTS): converter (FP32 against INT8:
accuracy, latency, size; our INT8 against Ultralytics' own INT8 export), calibration (INT8
accuracy against calibration set size), stages (the agent's per-stage latency at 320 and 640,
FP32 and INT8, 1 and 2 threads), agent (the agent against a bare session and Ultralytics),
broker (50 simulated agents on one Mosquitto), tracking (our tracker against ByteTrack on the
same detections: MOTA, IDF1, ID switches, time per frame), lines (the agent's crossing events against
Ultralytics' ObjectCounter on videos with known crossings; the line and dwell stages' cost), motion (the
gated agent's CPU and objects against the ungated one on a video with still stretches), regions (the agent
detecting on crops around motion against the whole frame, at 320 and 640, on a 1080p video of objects from
40 to 400 px: recall per size and CPU).

This script only orchestrates: it runs each part as a child process (its progress shows as it
goes), then writes REPORT.md: the machine, every part's Targets / Headline table lifted to the
top, then each part's own Markdown. A part left out with --skip is not run, but its Markdown from
an earlier run is stitched in if it is there, marked with the time it was written. --quick runs
every part with its smallest options: to check the plumbing, never to quote.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import onnxruntime as ort

from agent.pipeline.inference import default_threads
from agent.system.board import cpu_model
from benchmarks.machine import load_average, logical_cpus
from benchmarks.tables import Table, render_markdown

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# --quick figures mean nothing: they must never overwrite the real ones.
QUICK_RESULTS = Path(tempfile.gettempdir()) / "yolo-edge-report-quick"
STAGE_SIZES = (320, 640)
STAGE_THREADS = "1,2"
# Where the stages part keeps its converted bundles, so the agent part can time agent-auto on the 640 one.
STAGES_BUNDLE = "stages-bundle-640"


@dataclass(frozen=True)
class Part:
    """One benchmark command. runs: argument lists, one process each; outputs: the .md files they write."""

    key: str
    title: str
    module: str
    runs: tuple[tuple[str, ...], ...]
    quick_runs: tuple[tuple[str, ...], ...]
    outputs: tuple[str, ...]


PARTS = (
    Part(
        "converter",
        "Converter: FP32 against INT8, and against Ultralytics' INT8 export",
        "benchmarks.converter_bench",
        (("--compare-calibration",),),
        (("--calib-size", "16", "--val-size", "4", "--runs", "3", "--skip-yolo11n-640"),),
        ("converter_bench.md",),
    ),
    Part(
        "calibration",
        "Calibration-set size",
        "benchmarks.calibration_sweep",
        ((),),
        (("--sizes", "8,16", "--repeats", "1", "--val-size", "4"),),
        ("calibration_sweep.md",),
    ),
    Part(
        "stages",
        "Agent stage times",
        "benchmarks.agent_bench",
        tuple(("--stages", "fp32,int8", "--stage-threads", STAGE_THREADS, "--imgsz", str(s)) for s in STAGE_SIZES),
        tuple(
            ("--stages", "fp32,int8", "--stage-threads", "1", "--imgsz", str(s), "--frames", "3", "--rounds", "1")
            for s in STAGE_SIZES
        ),
        tuple(f"agent_stages_{s}.md" for s in STAGE_SIZES),
    ),
    Part(
        "agent",
        "Agent against a bare session and Ultralytics",
        "benchmarks.agent_bench",
        ((),),
        (("--imgsz", "160", "--frames", "3", "--rounds", "1", "--budget", "0"),),
        ("agent_bench.md",),
    ),
    Part(
        "broker",
        "Broker load",
        "benchmarks.broker_load",
        ((),),
        (("--agents", "3", "--seconds", "3"),),
        ("broker_load.md",),
    ),
    Part(
        "tracking",
        "Tracking quality and speed against ByteTrack",
        "benchmarks.tracking_bench",
        ((),),
        (("--frames", "20", "--rounds", "1", "--timing-frames", "20", "--objects", "1,20"),),
        ("tracking_bench.md",),
    ),
    Part(
        "lines",
        "Line crossings against Ultralytics' ObjectCounter, and the line and dwell stages' cost",
        "benchmarks.line_bench",
        ((),),
        (("--scenarios", "down_and_up", "--rounds", "1", "--timing-frames", "20", "--objects", "1,20"),),
        ("line_bench.md",),
    ),
    Part(
        "motion",
        "Motion gating: CPU and objects against the ungated agent",
        "benchmarks.motion_bench",
        (("--seconds", "120", "--precisions", "int8", "--imgsz", "320,640"),),
        (("--seconds", "30", "--precisions", "int8"),),
        ("motion_bench.md",),
    ),
    Part(
        "regions",
        "Motion regions: recall per object size and CPU against the whole frame",
        "benchmarks.regions_bench",
        ((),),
        (("--seconds", "10"),),
        ("regions_bench.md",),
    ),
    Part(
        "memory",
        "Memory: the agent's peak and steady RSS against Ultralytics', with start-up",
        "benchmarks.memory_bench",
        (("--rounds", "2"),),
        (("--models", "yolo11n", "--imgsz", "320", "--frames", "5", "--rounds", "1"),),
        ("memory_bench.md",),
    ),
    Part(
        "overhead",
        "Pipeline overhead at every core and at cores - 1, spinning on and off",
        "benchmarks.overhead_bench",
        ((),),
        (("--frames", "10", "--rounds", "1"),),
        ("overhead_bench.md",),
    ),
)
PART_KEYS = tuple(part.key for part in PARTS)


def progress(message: str) -> None:
    print(f"== {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Outcome:
    part: Part
    failed: str | None  # the failing command, when one failed
    seconds: float


def extra_args(part: Part, workdir: Path) -> list[str]:
    """What ties the parts together: stages keep their bundles in workdir, agent times agent-auto on the 640 one."""
    if part.key == "stages":
        return ["--workdir", str(workdir)]
    bundle = workdir / STAGES_BUNDLE
    if part.key == "agent" and (bundle / "manifest.json").exists():
        return ["--bundle", str(bundle)]
    return []


def run_part(part: Part, args: argparse.Namespace, workdir: Path) -> Outcome:
    started = time.monotonic()
    for run in part.quick_runs if args.quick else part.runs:
        command = [sys.executable, "-m", part.module, *run, *extra_args(part, workdir), "--out", str(args.out)]
        progress(f"{part.key}: {' '.join(command[1:])}")
        # Output goes straight to the terminal: every part shows its own progress.
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
            progress(f"{part.key}: FAILED ({' '.join(command[1:])})")
            return Outcome(part, " ".join(command[1:]), time.monotonic() - started)
    return Outcome(part, None, time.monotonic() - started)


# ----------------------------------------------------------------------------------------------
# Stitching


def markdown_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of every `### title`, blank line, pipe table, as tables.render_markdown writes them."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        if not line.startswith("### "):
            continue
        table = list(itertools.takewhile(lambda row: row.startswith("|"), lines[index + 2 :]))
        if len(table) >= 2:
            cells = [[cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in table]
            found.append((line[4:].strip(), cells[0], cells[2:]))
    return found


def headline_rows(label: str, text: str) -> list[tuple[str, ...]]:
    """Rows of a part's Targets and Headline tables as (label, figure, wanted, measured, result)."""
    rows = []
    for title, headers, body in markdown_tables(text):
        if title.startswith(("Targets", "Headline")) and len(headers) >= 4:
            rows += [(label, row[0], row[1], row[2], row[-1]) for row in body if len(row) >= 4]
    return rows


def section(path: Path, note: str | None) -> str:
    """A part's Markdown one heading level down, with the note and (if the part wrote but did not link it) its plot
    under its title."""
    text = path.read_text()
    lines = ["#" + line if re.match(r"#+ ", line) else line for line in text.splitlines()]
    extra = [f"_{note}_"] if note else []
    png = path.with_suffix(".png")
    if png.exists() and png.name not in text:
        extra.append(f"![{path.stem}]({png.name})")
    return "\n".join([lines[0], *(f"\n{line}" for line in extra), *lines[1:]]) + "\n"


def stitch(args: argparse.Namespace, outcomes: dict[str, Outcome], facts: dict[str, str]) -> Path:
    sections, headline, status_rows = [], [], []
    for part in PARTS:
        outcome = outcomes.get(part.key)
        for name in part.outputs:
            path = args.out / name
            if not path.exists():
                continue
            note, label = None, part.key
            if outcome is None:
                written = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
                note = f"Not run by this report: {name} as an earlier run wrote it, {written}."
                label = f"{part.key} (earlier run)"
            headline += headline_rows(label, path.read_text())
            sections.append(section(path, note))
        if outcome is None:
            state = "not run by this report"
        elif outcome.failed:
            state = f"FAILED: `{outcome.failed}`"
        else:
            state = f"ran, {outcome.seconds / 60:.1f} min"
        status_rows.append((part.key, part.title, state, ", ".join(part.outputs)))
    summary = Table(
        "Headline figures (every part's Targets and Headline rows)",
        ("part", "figure", "wanted", "measured", "result"),
        tuple(headline),
        ("Ratios are measured side by side within one run; absolute times depend on this shared machine's load.",),
    )
    machine = Table("Machine", ("fact", "value"), tuple(facts.items()))
    parts = Table("Parts", ("part", "what", "this run", "Markdown"), tuple(status_rows))
    text = [
        "# yolo-edge benchmark report",
        "",
        f"`{' '.join(['python -m benchmarks.report', *args.argv])}` on {facts['cpu']}, "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}."
        + (" **--quick: plumbing check only.**" if args.quick else ""),
        "",
        "## Summary",
        "",
        render_markdown(summary),
        render_markdown(machine),
        render_markdown(parts),
        *sections,
    ]
    report = args.out / "REPORT.md"
    report.write_text("\n".join(text) + "\n")
    return report


# ----------------------------------------------------------------------------------------------


def parse_parts(text: str) -> tuple[str, ...]:
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [key for key in keys if key not in PART_KEYS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PART_KEYS)}")
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("--skip", type=parse_parts, default=(), help=f"parts not to run ({', '.join(PART_KEYS)})")
    parser.add_argument("--only", type=parse_parts, default=(), help="run only these parts")
    parser.add_argument("--stitch", action="store_true", help="run nothing: only stitch the Markdown the parts wrote")
    parser.add_argument("--quick", action="store_true", help="every part with its smallest options (plumbing check)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where every part writes (default {RESULTS.relative_to(ROOT)}; with --quick {QUICK_RESULTS})",
    )
    parser.add_argument("--workdir", type=Path, help="keep the stages part's bundles here (default: temporary)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.out = (args.out or (QUICK_RESULTS if args.quick else RESULTS)).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in PARTS if (not args.only or p.key in args.only) and p.key not in args.skip and not args.stitch]
    facts = {
        "cpu": cpu_model(),
        "cores": logical_cpus(),
        "onnxruntime threads": f"1 and all cores ({default_threads()}) where a part compares; stages {STAGE_THREADS}",
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "load average at start (1/5/15 min)": load_average(),
    }
    outcomes: dict[str, Outcome] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="yolo-edge-report-") as temp:
        workdir = (args.workdir or Path(temp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for index, part in enumerate(chosen, 1):
            progress(f"part {index}/{len(chosen)}: {part.title}")
            outcomes[part.key] = run_part(part, args, workdir)
    facts["load average at end"] = load_average()
    facts["report wall time"] = f"{(time.monotonic() - started) / 60:.1f} min"
    report = stitch(args, outcomes, facts)
    print(f"\nwrote {report}")
    failed = [o.part.key for o in outcomes.values() if o.failed]
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

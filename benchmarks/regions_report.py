"""The motion-regions benchmark's tables, Markdown and plot, and its two goals."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from agent.system.board import cpu_model
from benchmarks.fixture.far_video import HEIGHT, SIZES, WIDTH, FarScene, true_boxes
from benchmarks.regions_ceiling import CEILING_SPAN
from benchmarks.regions_scoring import MATCH_IOU, Score
from benchmarks.tables import Table, command_line, render_markdown, render_text

SMALL = HEIGHT // 20  # 54 px: goal (a)
LARGE = HEIGHT // 10  # 108 px and up: goal (b)
SMALL_RECALL = 0.90
WHOLE_SMALL_BELOW = 0.5
CPU_RATIO = 0.5
BASE = "whole 640"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _ok(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def _frames(observer: Any, run: Any) -> dict[str, int]:
    return observer.last_stats(run.contender.device).get("frames", {})


def _stage_p50(observer: Any, run: Any, stage: str) -> str:
    """Median over the stats windows of a stage's p50, ms."""
    values = [
        body["latency_ms"][stage]["p50"]
        for _, body in observer.messages(run.contender.device, "stats")
        if stage in body.get("latency_ms", {}) and body["latency_ms"][stage].get("p50") is not None
    ]
    return f"{statistics.median(values):.1f}" if values else "-"


def _most_tracks(observer: Any, run: Any) -> int:
    """The most confirmed tracks open at once, over the stats messages."""
    bodies = [body for _, body in observer.messages(run.contender.device, "stats")]
    return max((body.get("tracks", {}).get("active") or 0 for body in bodies), default=0)


def goals(runs: dict[str, Any], scores: dict[str, Score]) -> list[tuple[str, str, str, str]]:
    """(figure, wanted, measured, pass/FAIL) of the issue's two goals, each in two parts."""
    rows = []
    whole_small = scores[BASE].bucket(SMALL).recall
    regions_small = scores["regions 640"].bucket(SMALL).recall
    rows.append(
        (
            f"(a) regions 640: recall on {SMALL} px objects (1/20 of the height), detector frames",
            f">= {100 * SMALL_RECALL:.0f} %",
            _pct(regions_small),
            _ok(regions_small is not None and regions_small >= SMALL_RECALL),
        )
    )
    rows.append(
        (
            "(a) whole 640 on the same objects (where the whole frame finds under half)",
            f"< {100 * WHOLE_SMALL_BELOW:.0f} %",
            _pct(whole_small),
            _ok(whole_small is not None and whole_small < WHOLE_SMALL_BELOW),
        )
    )
    ratio = runs["regions 320"].cpu_s / runs[BASE].cpu_s
    rows.append(
        (
            "(b) regions 320 CPU seconds / whole 640",
            f"<= {CPU_RATIO:.1f}x",
            f"{ratio:.3f}x ({runs['regions 320'].cpu_s:.1f} / {runs[BASE].cpu_s:.1f} s)",
            _ok(ratio <= CPU_RATIO),
        )
    )
    large = [s for s in SIZES if s >= LARGE]
    mine, theirs = scores["regions 320"].pooled(large).recall, scores[BASE].pooled(large).recall
    rows.append(
        (
            f"(b) regions 320 recall on objects >= {LARGE} px (1/10 of the height), against whole 640",
            f">= whole 640's {_pct(theirs)}",
            _pct(mine),
            _ok(mine is not None and theirs is not None and mine >= theirs),
        )
    )
    return rows


def tables(scene: FarScene, runs: dict[str, Any], scores: dict[str, Score], observer: Any) -> list[Table]:
    names = list(runs)
    most_in_view = max(len(true_boxes(scene, index).boxes) for index in range(scene.frames))
    run_rows = []
    for name in names:
        run, score, frames = runs[name], scores[name], _frames(observer, runs[name])
        detected = frames.get("detected", 0)
        crops, crop_frames = frames.get("regions", 0), frames.get("region_frames", 0)
        lost = frames.get("dropped", 0) + frames.get("stale", 0)
        run_rows.append(
            (
                name,
                f"{frames.get('processed', 0)} of {scene.frames}",
                f"{_most_tracks(observer, run)} ({most_in_view})",
                str(lost),
                str(detected),
                str(score.detector_frames),
                str(crop_frames),
                f"{crops / detected:.2f}" if detected else "-",
                f"{run.cpu_s:.1f}",
                f"{run.cpu_s / runs[BASE].cpu_s:.3f}x",
                f"{score.false_positives / max(1, score.detector_frames):.3f}",
            )
        )
    stages = ("motion", "preprocess", "inference", "postprocess", "tracking")
    stage_rows = []
    for name in names:
        run, frames = runs[name], _frames(observer, runs[name])
        per_frame = 1e3 * run.cpu_s / max(1, frames.get("processed", 0))
        stage_rows.append((name, *(_stage_p50(observer, run, stage) for stage in stages), f"{per_frame:.1f}"))
    recall_rows, share_rows = [], []
    for size in (*SIZES, 0):
        label = f"{size} px" if size else "all sizes"
        buckets = [scores[n].bucket(size) if size else scores[n].pooled(SIZES) for n in names]
        objects = f"{buckets[0].objects} objects, {buckets[0].in_view} frames in view"
        recall_rows.append((label, objects, *(f"{_pct(b.recall)} of {b.scored}" for b in buckets)))
        share_rows.append((label, *(_pct(b.found_share) for b in buckets)))
    return [
        Table(
            "Runs (each its own agent process; INT8, motion gating on)",
            (
                "contender",
                "frames processed",
                "tracks at most (objects in view at most)",
                "dropped + stale",
                "detector frames (stats)",
                "detections messages",
                "frames on crops",
                "crops per detector frame",
                "CPU s",
                f"CPU / {BASE}",
                "false positives per detector frame",
            ),
            tuple(run_rows),
            (
                "CPU s: the agent process's user + system time from start to exit (os.wait4), start-up included.",
                "frames on crops and crops: the stats' frames.region_frames and frames.regions (0 where absent).",
                "tracks at most: the stats' tracks.active, highest of the per-second messages; objects in view: "
                "shapes at least partly in the frame on one frame, the most over the video.",
                "detections messages: one per detector frame (publish_empty = true), what recall is scored on.",
            ),
        ),
        Table(
            "Where a frame's time goes (ms; medians of the per-second stats windows' p50)",
            ("contender", *stages, "CPU per frame"),
            tuple(stage_rows),
            (
                "preprocess, inference and postprocess: summed over the views of a frame (its crops, or the whole "
                "frame); motion: the motion stage and, with regions, planning the crops. CPU per frame: the agent's "
                "CPU seconds over the frames it processed, decoding the 1080p frame and start-up included.",
            ),
        ),
        Table(
            "Recall over the frames that ran the detector (found / true boxes in view on those frames)",
            ("object height", "in the video", *names),
            tuple(recall_rows),
            (
                f"Found: a detection of the same label at IoU >= {MATCH_IOU} with the true box, one detection per "
                "box, greedy by IoU; boxes cut by the frame's border are not scored.",
            ),
        ),
        Table(
            "Found over every frame the object was in view (a frame the detector skipped finds nothing)",
            ("object height", *names),
            tuple(share_rows),
        ),
    ]


def ceiling_table(scores: dict[str, Score], ceilings: dict[int, dict[int, tuple[int, int]]]) -> Table:
    """Each regions contender beside what its model finds on the best crop an object could get."""
    headers, rows = ["object height"], []
    for imgsz in sorted(ceilings, reverse=True):
        headers += [f"{imgsz} on a centred crop", f"regions {imgsz}", f"whole {imgsz}"]
    for size in SIZES:
        row = [f"{size} px"]
        for imgsz in sorted(ceilings, reverse=True):
            found, tried = ceilings[imgsz][size]
            row.append(f"{_pct(found / tried if tried else None)} of {tried}")
            for kind in ("regions", "whole"):
                name = f"{kind} {imgsz}"
                row.append(_pct(scores[name].bucket(size).recall) if name in scores else "-")
        rows.append(tuple(row))
    return Table(
        "The ceiling: each model on one crop centred on each object, against the agent's recall",
        tuple(headers),
        tuple(rows),
        (
            f"Centred crop: a square of {CEILING_SPAN:g} times the object's height, at least the model's input, moved "
            "inside the frame, letterboxed by the agent's detector (in process, every third frame, decoded from the "
            "same file). Below it, the planning lost the object (no crop, a crop cut short, the whole frame "
            "instead); at it, only the model's own limits are left.",
        ),
    )


def plot(
    path: Path, runs: dict[str, Any], scores: dict[str, Score], ceilings: dict[int, dict[int, tuple[int, int]]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    styles = {"whole 640": "C0--", "whole 320": "C1--", "regions 640": "C0-", "regions 320": "C1-"}
    for name, score in scores.items():
        points = [(b.size, 100 * b.recall) for b in score.buckets if b.recall is not None]
        left.plot(*zip(*points, strict=True), styles.get(name, "-"), marker="o", label=name)
    for imgsz, tally in sorted(ceilings.items(), reverse=True):
        points = [(size, 100 * found / tried) for size, (found, tried) in tally.items() if tried]
        color = "C0" if imgsz == 640 else "C1"
        left.plot(*zip(*points, strict=True), color=color, ls=":", lw=1, label=f"{imgsz} on a centred crop")
    for size, text in ((SMALL, "1/20"), (LARGE, "1/10")):
        left.axvline(size, color="0.6", ls=":", lw=1)
        left.text(size, 2, f" {text}", fontsize=8, color="0.4")
    left.axhline(100 * SMALL_RECALL, color="0.8", lw=1)
    left.set_xscale("log")
    left.minorticks_off()
    left.set_xticks(SIZES, [str(s) for s in SIZES])
    left.set_ylim(0, 102)
    left.set_xlabel(f"object height, px of a {WIDTH}x{HEIGHT} frame")
    left.set_ylabel("recall over detector frames, %")
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="lower right", handlelength=3.5)
    names = list(runs)
    cpu = [runs[n].cpu_s for n in names]
    colors = [styles.get(n, "C2")[:2] for n in names]
    bars = right.bar(range(len(names)), cpu, color=colors, hatch=["//" if n.startswith("whole") else "" for n in names])
    right.axhline(CPU_RATIO * runs[BASE].cpu_s, color="0.5", ls=":", lw=1)
    goal = CPU_RATIO * runs[BASE].cpu_s
    right.text(-0.45, goal, f"goal {CPU_RATIO:g}x", fontsize=7, va="top", bbox={"fc": "white", "ec": "none", "pad": 1})
    for bar, value in zip(bars, cpu, strict=True):
        ratio = value / runs[BASE].cpu_s
        right.text(
            bar.get_x() + bar.get_width() / 2,
            value,
            f"{value:.0f} s\n{ratio:.2f}x",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    right.set_ylabel("agent CPU seconds for the video")
    right.set_ylim(0, max(cpu) * 1.25)
    fig.suptitle(f"Motion regions against the whole frame (fixture model, INT8)\n{cpu_model()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    args: argparse.Namespace,
    argv: list[str],
    scene: FarScene,
    facts: dict[str, str],
    run_list: list[Any],
    scores: dict[str, Score],
    observer: Any,
    ceilings: dict[int, dict[int, tuple[int, int]]],
) -> None:
    runs = {run.contender.name: run for run in run_list}
    facts = {
        "cpu": cpu_model(),
        **facts,
        "onnxruntime threads": str(args.threads),
        "agents at once": f"{args.at_once} (in the order of the Runs table)",
        "video": (
            f"{WIDTH}x{HEIGHT} MJPG, {scene.frames} frames at {scene.fps:g} fps, played at its fps; "
            f"{len(scene.objects)} objects, {len(SIZES)} heights ({', '.join(map(str, SIZES))} px), seed {scene.seed}"
        ),
        "model": "tests/assets/shapes_yolo11n.pt converted at 320 and at 640 (INT8, the motion benchmark's conversion)",
    }
    all_tables = [
        Table("Machine and set-up", ("fact", "value"), tuple(facts.items())),
        Table("Targets", ("figure", "wanted", "measured", "result"), tuple(goals(runs, scores))),
        *tables(scene, runs, scores, observer),
        ceiling_table(scores, ceilings),
    ]
    for table in all_tables:
        print(render_text(table))
    png, md = args.out / "regions_bench.png", args.out / "regions_bench.md"
    plot(png, runs, scores, ceilings)
    text = [
        "# Motion regions",
        "",
        f"`{command_line('benchmarks.regions_bench', argv)}`",
        "",
        f"A generated {WIDTH}x{HEIGHT} video (benchmarks/fixture/far_video.py): the fixture model's shapes at "
        f"heights from {SIZES[0]} to {SIZES[-1]} px, about three in view at a time, moving across a still textured "
        "background with sensor noise. The real agent plays it four times: the whole frame letterboxed into the "
        "fixture converted at 640 and at 320, and `[motion] regions = true` with each; motion gating on in all.",
        "",
        f"![recall against object size, and CPU]({png.name})",
        "",
    ]
    md.write_text("\n".join(text + [render_markdown(t) for t in all_tables]))
    print(f"\nwrote {png} and {md}")

"""Calibration-set size: what INT8 accuracy costs with 8, 32, 128 or 512 calibration images.

    python -m benchmarks.calibration_sweep [--sizes 8,32,128,512] [--repeats 3] [--val-size 100]
                                           [--threads N] [--weights PT] [--out benchmarks/results]

Every point is the real `yolo-edge-convert` on the fixture (run_convert from converter_bench), its
INT8 and FP32 mAP read from the bundle's manifest, scored on the same labelled val split. Small
calibration sets depend on which images they happen to be, so each size is converted --repeats
times, each repeat calibrating on a different, disjoint set of generated scenes (the fixture's
render_scene, regenerated from its seed: the fixture's 400 train images are too few for 512);
tables give the median and the range over repeats. Accuracy is deterministic for a given set of
images, so the repeats measure the choice of images, not noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.pipeline.inference import default_threads
from benchmarks.arguments import int_list
from benchmarks.converter_bench import FIXTURE_WEIGHTS, TARGET_MAP_DROP, run_convert
from benchmarks.fixture.make_shapes import SPLITS, write_dataset
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = (8, 32, 128, 512)
# Scene indices of repeat r start at r * REPEAT_STRIDE: far enough apart that no two repeats share a scene,
# and below the val split's start, so no calibration image is ever a validation image.
REPEAT_STRIDE = 10_000
VAL_START = SPLITS["val"][0]


@dataclass(frozen=True)
class Point:
    """One conversion. mAPs in 0..1 as the manifest holds them; seconds: wall time of the command."""

    size: int
    repeat: int
    fp32_map50_95: float
    int8_map50_95: float
    int8_map50: float
    drop_points: float
    seconds: float


def run_sweep(args: argparse.Namespace, workdir: Path) -> list[Point]:
    points = []
    largest = max(args.sizes)
    for repeat in range(args.repeats):
        start = repeat * REPEAT_STRIDE
        if start + largest > VAL_START:
            raise SystemExit(
                f"calibration_sweep: --repeats {args.repeats} x {largest} images would reach the val split"
            )
        progress(f"repeat {repeat + 1}/{args.repeats}: generating {largest} calibration scenes from index {start}")
        data_yaml = write_dataset(
            workdir / f"shapes-{repeat}", splits={"train": (start, largest), "val": (VAL_START, args.val_size)}
        )
        for size in args.sizes:
            progress(f"repeat {repeat + 1}/{args.repeats}: {size} calibration images")
            # The converter takes --calib-size images evenly spaced over the split, so a smaller size is a
            # spread-out subset of the same scenes rather than only the first few.
            conversion = run_convert(
                args.weights,
                workdir / f"bundle-{repeat}-{size}",
                data_yaml,
                [
                    "--calib-size",
                    str(size),
                    "--val-size",
                    str(args.val_size),
                    "--threads",
                    str(args.threads),
                    "--force",
                ],
            )
            validation = conversion.manifest["validation"]
            per = validation["per_precision"]
            points.append(
                Point(
                    size,
                    repeat,
                    per["fp32"]["map50_95"],
                    per["int8"]["map50_95"],
                    per["int8"]["map50"],
                    validation["map50_95_drop_points"],
                    conversion.seconds,
                )
            )
            progress(
                f"    INT8 mAP50-95 {100 * points[-1].int8_map50_95:.2f} (FP32 {100 * points[-1].fp32_map50_95:.2f}, "
                f"drop {points[-1].drop_points:.2f} points), {conversion.seconds:.0f} s"
            )
    return points


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} .. {max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def sweep_table(points: list[Point], args: argparse.Namespace) -> Table:
    rows = []
    for size in args.sizes:
        at = [p for p in points if p.size == size]
        int8 = [100 * p.int8_map50_95 for p in at]
        drops = [p.drop_points for p in at]
        rows.append(
            (
                str(size),
                f"{statistics.median(int8):.2f}",
                spread(int8),
                f"{statistics.median(100 * p.int8_map50 for p in at):.2f}",
                f"{statistics.median(drops):.2f}",
                spread(drops),
                f"{statistics.median(p.seconds for p in at):.0f}",
            )
        )
    fp32 = statistics.median(100 * p.fp32_map50_95 for p in points)
    return Table(
        f"INT8 accuracy against calibration images (fixture, {args.val_size} labelled val images, "
        f"median of {args.repeats} disjoint calibration sets)",
        (
            "calibration images",
            "INT8 mAP50-95",
            "range",
            "INT8 mAP50",
            "drop (points)",
            "drop range",
            "convert s",
        ),
        tuple(rows),
        (
            f"FP32 mAP50-95 on the same val images: {fp32:.2f} (the same for every row).",
            f"drop: FP32 minus INT8 mAP50-95 in points, as the bundle's manifest records it; the converter marks a "
            f"bundle deployable up to {TARGET_MAP_DROP:g} point.",
            "convert s: wall time of the whole command (export, calibration, quantization, validation).",
        ),
    )


def targets_table(points: list[Point], args: argparse.Namespace) -> Table:
    rows = []
    for size in args.sizes:
        drop = statistics.median(p.drop_points for p in points if p.size == size)
        rows.append(
            (
                f"INT8 mAP50-95 drop, {size} calibration images (median of {args.repeats})",
                f"<= {TARGET_MAP_DROP:g} point",
                f"{drop:.2f}",
                "PASS" if drop <= TARGET_MAP_DROP else "MISS",
            )
        )
    return Table("Targets", ("target", "wanted", "measured", "result"), tuple(rows))


def plot(path: Path, points: list[Point], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    fp32 = statistics.median(100 * p.fp32_map50_95 for p in points)
    ax.axhline(fp32, color="tab:blue", label=f"FP32 {fp32:.2f}")
    ax.axhspan(fp32 - TARGET_MAP_DROP, fp32, color="tab:green", alpha=0.12, label=f"within {TARGET_MAP_DROP:g} point")
    medians = [statistics.median(100 * p.int8_map50_95 for p in points if p.size == s) for s in args.sizes]
    ax.plot(args.sizes, medians, color="tab:orange", marker="o", label="INT8 (median)")
    ax.scatter([p.size for p in points], [100 * p.int8_map50_95 for p in points], color="black", s=12, zorder=3)
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.sizes, [str(s) for s in args.sizes])
    ax.set_xlabel("calibration images")
    ax.set_ylabel("mAP50-95 on the fixture's val split")
    ax.set_title(f"INT8 accuracy vs calibration set size (dots: {args.repeats} disjoint sets each)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration_sweep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int_list(8, "calibration set sizes (the converter needs 8 images at least)"),
        default=DEFAULT_SIZES,
        help="calibration set sizes (default 8,32,128,512)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="disjoint calibration sets per size (default 3)")
    parser.add_argument("--val-size", type=int, default=100, help="labelled validation images (default 100)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads for validation (default: all)")
    parser.add_argument("--weights", type=Path, default=FIXTURE_WEIGHTS, help="labelled-fixture weights")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="markdown and PNG here")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.val_size < 1:
        print("--repeats and --val-size must be >= 1", file=sys.stderr)
        return 2
    if not args.weights.exists():
        print(f"calibration_sweep: {args.weights} is missing; run python -m benchmarks.fixture.make_shapes --train")
        return 2
    args.threads = args.threads or default_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yolo-edge-calsweep-") as temp:
        points = run_sweep(args, Path(temp))
    tables = [targets_table(points, args), sweep_table(points, args)]
    for table in tables:
        print(render_text(table))
    png, md = args.out / "calibration_sweep.png", args.out / "calibration_sweep.md"
    plot(png, points, args)
    text = [
        "# Calibration-set size",
        "",
        f"`{command_line('benchmarks.calibration_sweep', argv)}`",
        "",
        "![calibration sweep](calibration_sweep.png)",
        "",
        *[render_markdown(table) for table in tables],
    ]
    md.write_text("\n".join(text))
    print(f"\nwrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

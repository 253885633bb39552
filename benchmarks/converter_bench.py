"""Converter benchmark: INT8 accuracy, speed and size against FP32, and conversion time.

    python -m benchmarks.converter_bench [--weights PT] [--calib-size 200] [--val-size 100]
                                         [--threads N] [--runs 60] [--skip-yolo11n-640]
                                         [--skip-ultralytics] [--compare-calibration]
                                         [--out benchmarks/results]

One run on this machine measures the issue's targets side by side:
  accuracy   the real `yolo-edge-convert` on the fixture (its labelled val split): INT8 mAP50-95
             drop against FP32, in points, as the bundle's manifest records it
  speed      FP32 and INT8 from that bundle, the same letterboxed val image, same thread count,
             the models taking turns in blocks of runs (agent.pipeline.inference.median_latencies_ms); the
             ratio of median latencies, for 1 thread and for all cores. "all nodes INT8" quantizes
             the head's decoding tail too (which wrecks its scores): the ceiling that keeping the
             tail in float32 gives up
  size       INT8 file bytes over FP32 file bytes
  time       wall time of the whole command (imports, export, calibration, quantization,
             validation) on the fixture and on a YOLO11n at 640 with 200 calibration images
  against Ultralytics' own INT8 ONNX export (benchmarks.ultralytics_int8, offline), on the same
             weights, calibration images, validation images and threads: the fixture at its
             256 and the same weights exported at 640 (a trained YOLO11n at 640, so mAP means
             something there); FP32 (ours), INT8 (ours) and INT8 (Ultralytics) scored through the
             agent's pipeline (mAP50-95, and the share of FP32's boxes each INT8 model finds
             again) and timed taking turns, at 1 thread and all cores

Nothing is downloaded: the fixture's dataset is regenerated from its seed and the 640 model for
the speed and time targets is the untrained yolo11n.yaml (speed and time do not depend on its
weights; it detects nothing, so it has no accuracy to compare).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from agent.bundle import load_bundle, verify_model_file
from agent.pipeline.inference import (
    TIMING_BLOCK_RUNS,
    InferenceModel,
    cpu_has_vnni,
    default_threads,
    is_x86,
    median_latencies_ms,
)
from agent.pipeline.letterbox import Letterbox
from benchmarks.fixture.make_shapes import write_dataset
from benchmarks.int8_compare import Scores, score_models, summarize_quantization
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text
from benchmarks.ultralytics_int8 import UltralyticsExport, run_export, write_calibration_yaml
from converter.images import SkipCounter, open_source

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11n.pt"
SPEED_TENSORS = 16

TARGET_MAP_DROP = 1.0
AIM_MAP_DROP = 0.5
TARGET_SPEEDUP = 1.5
TARGET_SIZE_RATIO = 0.3
TARGET_CONVERT_S = 180.0
# Ours against Ultralytics' INT8 export of the same weights: no slower, no less accurate.
TARGET_OVER_ULTRALYTICS = 1.0
TARGET_MAP_OVER_ULTRALYTICS = 0.0
ULTRALYTICS_IMGSZ = 640

LABELS = {
    "fp32": "FP32 (ours)",
    "int8": "INT8 (ours)",
    "int8 all nodes": "INT8 all nodes (ceiling)",
    "int8 Ultralytics": "INT8 (Ultralytics)",
}


@dataclass(frozen=True)
class Conversion:
    """One run of the real command. seconds: wall time of the process."""

    bundle: Path
    seconds: float
    manifest: dict


def run_convert(weights: Path, out: Path, calib: Path, args: list[str]) -> Conversion:
    """Run `yolo-edge-convert` in its own process, as a user would, timing the whole command."""
    command = [sys.executable, "-m", "converter.cli", str(weights), "--out", str(out), "--calib", str(calib), *args]
    progress(" ".join(command[2:]))
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1) or not (out / "manifest.json").exists():
        raise SystemExit(f"converter_bench: yolo-edge-convert exited {result.returncode} on {weights}")
    return Conversion(out, seconds, json.loads((out / "manifest.json").read_text()))


def val_tensors(data_yaml: Path, input_hw: tuple[int, int], count: int) -> list[np.ndarray]:
    letterbox = Letterbox(input_hw)
    source = open_source(data_yaml, "val")
    return [letterbox(item.image)[0].copy() for item in source.iter_images(count, SkipCounter())]


def median_latencies(models: dict[str, Path], tensor: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """Median ms per model, the models taking turns in blocks so load drift hits all alike."""
    sessions = {name: InferenceModel(path, threads) for name, path in models.items()}
    return median_latencies_ms(sessions, tensor, runs)


def quantize_all_nodes(fp32: Path, out: Path, tensors: list[np.ndarray]) -> Path:
    """The speed ceiling: the same quantizer with the head tail quantized too."""
    from converter.quantize import QuantizeOptions, quantize_model

    quantize_model(fp32, out, tensors, QuantizeOptions(exclude_head_tail=False))
    return out


def calibration_comparison(weights: Path, data_yaml: Path, workdir: Path, common: list[str]) -> Table:
    """mAP drop per calibration method and activation type, each through the real command."""
    rows = []
    for method in ("minmax", "entropy", "percentile"):
        for activation in ("uint8", "int8"):
            out = workdir / f"cmp-{method}-{activation}"
            conversion = run_convert(
                weights,
                out,
                data_yaml,
                [*common, "--calibration-method", method, "--activation-type", activation, "--force"],
            )
            validation = conversion.manifest["validation"]
            per = validation["per_precision"]
            rows.append(
                (
                    method,
                    activation,
                    f"{100 * per['int8']['map50_95']:.2f}",
                    f"{-validation['map50_95_drop_points']:+.2f}",
                    f"{validation['speedup_int8']:.2f}x",
                    f"{conversion.seconds:.0f}",
                )
            )
    return Table(
        "Calibration choices on the fixture (INT8 mAP50-95 change against FP32, in points)",
        ("calibration", "activations", "INT8 mAP50-95", "change", "speed-up", "convert s"),
        tuple(rows),
        ("Default: percentile, uint8. Speed-up from the command's own validation timing (all cores).",),
    )


@dataclass(frozen=True)
class Comparison:
    """FP32 (ours), INT8 (ours) and Ultralytics' INT8 of one set of weights at one size.

    models/scores/sizes: contender (LABELS key) -> ONNX path (gone with the run's temporary
    directory) / accuracy / file bytes; latency: threads -> contender -> ms.
    """

    label: str
    models: dict[str, Path]
    scores: dict[str, Scores]
    latency: dict[int, dict[str, float]]
    ours: Conversion
    theirs: UltralyticsExport

    sizes: dict[str, int]


def file_sizes(models: dict[str, Path]) -> dict[str, int]:
    return {name: path.stat().st_size for name, path in models.items()}


def time_models(models: dict[str, Path], tensor: np.ndarray, threads: int, runs: int, what: str) -> dict:
    """threads -> model -> median ms, at 1 thread and at `threads`."""
    latency: dict[int, dict[str, float]] = {}
    for count in sorted({1, threads}):
        progress(f"timing {what}: {' / '.join(models)}, {count} thread(s), {runs} runs each")
        latency[count] = median_latencies(models, tensor, count, runs)
    return latency


def score(models: dict[str, Path], data_yaml: Path, bundle_dir: Path, count: int, threads: int) -> dict[str, Scores]:
    bundle = load_bundle(bundle_dir)
    progress(f"scoring {' / '.join(models)} on {count} val images at {bundle.imgsz[0]}")
    images = open_source(data_yaml, "val").iter_images(count, SkipCounter())
    return score_models(models, images, bundle.head, bundle.imgsz, threads)


def plot(path: Path, accuracy: dict[str, dict[str, float]], panels: list[tuple[str, dict]], title: str) -> None:
    """accuracy: model -> contender -> mAP50-95 (0..1); panels: (title, threads -> contender -> ms) each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"fp32": "tab:blue", "int8": "tab:orange", "int8 all nodes": "tab:gray", "int8 Ultralytics": "tab:green"}
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(5.5 * (1 + len(panels)), 4.8), squeeze=False)
    left, rights = axes[0][0], axes[0][1:]

    def grouped(axis, groups: dict, scale: float, fmt: str) -> None:
        names = list(dict.fromkeys(name for group in groups.values() for name in group))
        width = 0.8 / len(names)
        for offset, name in enumerate(names):
            xs = [i + offset * width for i, group in enumerate(groups.values()) if name in group]
            values = [scale * group[name] for group in groups.values() if name in group]
            axis.bar(xs, values, width, label=LABELS.get(name, name), color=colors.get(name))
            for x, value in zip(xs, values, strict=True):
                axis.text(x, value, fmt.format(value), ha="center", va="bottom", fontsize=8)
        axis.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(groups))], list(groups))
        axis.legend(fontsize=8)

    grouped(left, accuracy, 100, "{:.1f}")
    left.set_ylabel("mAP50-95 (points, higher is better)")
    left.set_title("accuracy on the fixture's val split")
    for axis, (panel_title, latency) in zip(rights, panels, strict=True):
        grouped(axis, {f"{t} thr": v for t, v in latency.items()}, 1, "{:.0f}")
        axis.set_ylabel("median latency ms (lower is better)")
        axis.set_title(panel_title)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_at_640(
    weights: Path,
    data_yaml: Path,
    calibration_yaml: Path,
    workdir: Path,
    common: list[str],
    threads: int,
    args: argparse.Namespace,
) -> Comparison:
    """The fixture's weights exported at 640 by both converters: a trained YOLO11n at the size a Pi runs."""
    ours = run_convert(
        weights, workdir / "fixture-640", data_yaml, ["--imgsz", str(ULTRALYTICS_IMGSZ), *common, "--force"]
    )
    theirs = run_export(weights, ULTRALYTICS_IMGSZ, calibration_yaml, workdir / "ultralytics-640")
    bundle = load_bundle(ours.bundle)
    models = {p: verify_model_file(bundle, p) for p in ("fp32", "int8")}
    models["int8 Ultralytics"] = theirs.onnx_path
    tensor = val_tensors(data_yaml, bundle.imgsz, 1)[0]
    latency = time_models(models, tensor, threads, args.runs, f"fixture weights at {ULTRALYTICS_IMGSZ}")
    scores = score(models, data_yaml, ours.bundle, args.val_size, threads)
    label = f"fixture weights, {ULTRALYTICS_IMGSZ}"
    return Comparison(label, models, scores, latency, ours, theirs, file_sizes(models))


def verdict(name: str, target: str, value: float, passed: bool, shown: str) -> tuple[str, ...]:
    return (name, target, shown, "PASS" if passed else "MISS")


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _found_again(scores: Scores) -> str:
    if scores.agreement is None:
        return "(reference)"
    share = scores.agreement.share
    return "-" if share is None else f"{100 * share:.1f} % of {scores.agreement.reference_boxes}"


def _difference(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or theirs is None else f"{100 * (ours - theirs):+.2f}"


def ultralytics_tables(
    comparisons: list[Comparison], quantized: dict, cpu: str, runs: int
) -> tuple[list[Table], list[tuple[str, ...]]]:
    """The side-by-side tables against Ultralytics' INT8 export, and its rows for the Targets table."""
    thread_counts = sorted({t for c in comparisons for t in c.latency})
    rows = []
    for c in comparisons:
        for name in c.models:
            made = c.theirs.seconds if name == "int8 Ultralytics" else c.ours.seconds
            rows.append(
                (
                    c.label,
                    LABELS[name],
                    _points(c.scores[name].map50),
                    _points(c.scores[name].map50_95),
                    _found_again(c.scores[name]),
                    f"{c.sizes[name] / 1e6:.2f}",
                    *(f"{c.latency[t][name]:.1f}" for t in thread_counts),
                    f"{made:.0f}" if name != "fp32" else "",
                )
            )
    side_by_side = Table(
        "INT8 against Ultralytics' own INT8 ONNX export (same weights, calibration images, validation images, threads)",
        (
            "model",
            "contender",
            "mAP50",
            "mAP50-95",
            "FP32 boxes found again",
            "size MB",
            *(f"{t} thr ms" for t in thread_counts),
            "make s",
        ),
        tuple(rows),
        (
            "Ultralytics: `YOLO(pt).export(format='onnx', quantize=8, data=CALIB.yaml, imgsz=N)` (8.4), offline; "
            "CALIB.yaml points its val split at the calibration images our converter used. "
            "FP32 is our bundle's model; both INT8 models come from the same .pt.",
            "mAP on the labelled val split through the agent's letterbox and postprocessing (Ultralytics' val "
            "thresholds); found again: share of FP32's boxes (confidence 0.25, the agent's default) that the "
            "INT8 model also reports, same class, IoU >= 0.5.",
            f"Latency: median of {runs} runs per model on one val image, all three taking turns in blocks of "
            f"{TIMING_BLOCK_RUNS}, the agent's session options; {cpu}.",
            "make s: wall time of the process; ours includes validation, theirs is export and calibration only.",
            "The 640 row is the fixture's weights (trained at 256) exported at 640: a trained YOLO11n at the size "
            "a Pi runs. Its mAP is lower than at 256 because the shapes are 2.5x the size it learnt.",
        ),
    )
    ratio_rows = []
    targets = []
    for c in comparisons:
        ours, theirs = c.scores["int8"], c.scores["int8 Ultralytics"]
        found = (
            "-"
            if ours.agreement is None or theirs.agreement is None or ours.agreement.share is None
            else f"{100 * (ours.agreement.share - theirs.agreement.share):+.1f}"
        )
        for t in thread_counts:
            ratio = c.latency[t]["int8 Ultralytics"] / c.latency[t]["int8"]
            ratio_rows.append(
                (
                    c.label,
                    str(t),
                    f"{c.latency[t]['int8']:.1f}",
                    f"{c.latency[t]['int8 Ultralytics']:.1f}",
                    f"{ratio:.2f}x",
                    f"{c.latency[t]['fp32'] / c.latency[t]['int8 Ultralytics']:.2f}x",
                    _difference(ours.map50_95, theirs.map50_95),
                    found,
                )
            )
            targets.append(
                verdict(
                    f"INT8 speed, ours over Ultralytics' INT8, {c.label}, {t} thread{'s' if t > 1 else ''}",
                    f">= {TARGET_OVER_ULTRALYTICS:.1f}x",
                    ratio,
                    ratio >= TARGET_OVER_ULTRALYTICS,
                    f"{ratio:.2f}x",
                )
            )
        if ours.map50_95 is not None and theirs.map50_95 is not None:
            gain = 100 * (ours.map50_95 - theirs.map50_95)
            targets.append(
                verdict(
                    f"INT8 mAP50-95, ours minus Ultralytics' INT8, {c.label}",
                    f">= {TARGET_MAP_OVER_ULTRALYTICS:+.1f} points",
                    gain,
                    gain >= TARGET_MAP_OVER_ULTRALYTICS,
                    f"{gain:+.2f}",
                )
            )
    ratios = Table(
        "Ours over Ultralytics' INT8",
        (
            "model",
            "threads",
            "INT8 ours ms",
            "INT8 Ultralytics ms",
            "ours faster by",
            "Ultralytics INT8 over FP32",
            "mAP50-95 ours - theirs",
            "found again ours - theirs",
        ),
        tuple(ratio_rows),
        ("Speed ratios are Ultralytics' median latency over ours; differences in points.",),
    )
    quantized_rows = tuple(
        (
            label,
            LABELS[name],
            q.activations,
            q.weights,
            ", ".join(f"{op} {n}" for op, n in q.int8_ops),
            str(q.float_ops),
        )
        for (label, name), q in quantized.items()
    )
    what = Table(
        "What each INT8 model runs on 8-bit tensors",
        ("model", "contender", "activations", "weights", "integer nodes (QDQ groups onnxruntime fuses)", "float nodes"),
        quantized_rows,
        (
            "Integer node: every tensor input dequantized and every output quantized again, so onnxruntime runs it "
            "as one integer kernel; a float node runs in float32 even where it reads a dequantized tensor.",
        ),
    )
    return [side_by_side, ratios, what], targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.converter_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=FIXTURE_WEIGHTS, help="labelled-fixture weights")
    parser.add_argument("--calib-size", type=int, default=200, help="calibration images (default 200)")
    parser.add_argument("--val-size", type=int, default=100, help="labelled validation images (default 100)")
    parser.add_argument("--threads", type=int, default=0, help="the 'all cores' thread count (default: all)")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per model and thread count (default 60)")
    parser.add_argument(
        "--skip-yolo11n-640", action="store_true", help="skip everything at 640 (conversion time, speed, comparison)"
    )
    parser.add_argument(
        "--skip-ultralytics", action="store_true", help="skip the comparison with Ultralytics' own INT8 export"
    )
    parser.add_argument(
        "--compare-calibration", action="store_true", help="also convert with every calibration method x activation"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.weights.exists():
        print(f"converter_bench: {args.weights} is missing; run python -m benchmarks.fixture.make_shapes --train")
        return 2
    threads = args.threads or default_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    comparisons: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="yolo-edge-convbench-") as tmp:
        workdir = Path(tmp)
        progress("regenerating the fixture dataset from its seed")
        data_yaml = write_dataset(
            workdir / "shapes", splits={"train": (0, args.calib_size), "val": (100_000, args.val_size)}
        )
        common = ["--calib-size", str(args.calib_size), "--val-size", str(args.val_size), "--threads", str(threads)]
        fixture = run_convert(args.weights, workdir / "fixture", data_yaml, common)
        validation = fixture.manifest["validation"]
        per = validation["per_precision"]
        bundle = load_bundle(fixture.bundle)
        models = {p: verify_model_file(bundle, p) for p in ("fp32", "int8")}
        tensors = val_tensors(data_yaml, bundle.imgsz, SPEED_TENSORS)
        progress("quantizing every node, head tail included, for the speed ceiling")
        models["int8 all nodes"] = quantize_all_nodes(models["fp32"], workdir / "all-nodes.onnx", tensors)
        theirs = None
        if not args.skip_ultralytics:
            # The very images our converter calibrated on: the train split holds exactly --calib-size of them.
            calibration_yaml = write_calibration_yaml(
                data_yaml.parent / "images" / "train", bundle.names, workdir / "ultralytics-calibration.yaml"
            )
            theirs = run_export(args.weights, bundle.imgsz[0], calibration_yaml, workdir / "ultralytics")
            models["int8 Ultralytics"] = theirs.onnx_path
        latency = time_models(models, tensors[0], threads, args.runs, f"fixture {bundle.imgsz[0]}")
        if theirs is not None:
            contenders = {k: models[k] for k in ("fp32", "int8", "int8 Ultralytics")}
            scores = score(contenders, data_yaml, fixture.bundle, args.val_size, threads)
            comparisons.append(
                Comparison(
                    f"fixture, {bundle.imgsz[0]}", contenders, scores, latency, fixture, theirs, file_sizes(contenders)
                )
            )
        yolo11n = None
        latency_640: dict[int, dict[str, float]] = {}
        if not args.skip_yolo11n_640:
            from ultralytics import YOLO

            weights_640 = workdir / "yolo11n.pt"
            YOLO("yolo11n.yaml").save(str(weights_640))
            yolo11n = run_convert(
                weights_640,
                workdir / "yolo11n-640",
                data_yaml,
                ["--imgsz", "640", "--calib-size", "200", "--val-size", "50", "--force", "--threads", str(threads)],
            )
            # The speed target is set at 640, the size a Pi runs: time that bundle as well.
            bundle_640 = load_bundle(yolo11n.bundle)
            models_640 = {p: verify_model_file(bundle_640, p) for p in ("fp32", "int8")}
            tensor_640 = val_tensors(data_yaml, bundle_640.imgsz, 1)[0]
            latency_640 = time_models(models_640, tensor_640, threads, args.runs, "YOLO11n 640")
            if theirs is not None:
                comparisons.append(
                    compare_at_640(args.weights, data_yaml, calibration_yaml, workdir, common, threads, args)
                )
        comparison = (
            calibration_comparison(args.weights, data_yaml, workdir, common) if args.compare_calibration else None
        )
        quantized = {
            (c.label, name): summarize_quantization(onnx.load(str(path)))
            for c in comparisons
            for name, path in c.models.items()
            if name != "fp32"
        }

    fp32_map, int8_map = per["fp32"]["map50_95"], per["int8"]["map50_95"]
    drop = validation["map50_95_drop_points"]
    size_ratio = validation["size_ratio_int8"]
    speedup = {t: v["fp32"] / v["int8"] for t, v in latency.items()}
    ceiling = {t: v["fp32"] / v["int8 all nodes"] for t, v in latency.items()}
    speedup_640 = {t: v["fp32"] / v["int8"] for t, v in latency_640.items()}
    arithmetic = "exact (as on ARM)" if validation.get("exact_int8_accuracy") else "this CPU's native kernels"
    cpu = f"{'x86 ' + ('with' if cpu_has_vnni() else 'without') + ' VNNI' if is_x86() else 'ARM'}"
    accuracy_table = Table(
        f"Accuracy on the fixture ({validation['images']} val images, {validation['instances']} objects, "
        f"imgsz {bundle.imgsz[0]})",
        ("precision", "mAP50", "mAP50-95", "size MB"),
        tuple(
            (p, f"{100 * per[p]['map50']:.2f}", f"{100 * per[p]['map50_95']:.2f}", f"{per[p]['size_bytes'] / 1e6:.2f}")
            for p in ("fp32", "int8")
        ),
        (f"INT8 accuracy computed with {arithmetic}; {fixture.manifest['calibration']['images']} calibration images.",),
    )
    speed_table = Table(
        f"Latency (median of {args.runs} runs per model on one val image, the models taking turns in blocks of "
        f"{TIMING_BLOCK_RUNS}; {cpu})",
        ("model", "threads", "FP32 ms", "INT8 ms", "all-nodes INT8 ms", "INT8 speed-up", "ceiling"),
        tuple(
            (
                f"fixture, {bundle.imgsz[0]}",
                str(t),
                f"{v['fp32']:.1f}",
                f"{v['int8']:.1f}",
                f"{v['int8 all nodes']:.1f}",
                f"{speedup[t]:.2f}x",
                f"{ceiling[t]:.2f}x",
            )
            for t, v in latency.items()
        )
        + tuple(
            ("YOLO11n, 640", str(t), f"{v['fp32']:.1f}", f"{v['int8']:.1f}", "-", f"{speedup_640[t]:.2f}x", "-")
            for t, v in latency_640.items()
        ),
        (
            "ceiling: every node quantized, head tail included; its scores are wrong, it only bounds the speed.",
            "The speed targets are read at 640, the size the agent runs on a Pi. The fixture is trained at 256, "
            "where a model is small enough that a second thread gains INT8 little: compare its ceiling.",
        ),
    )
    time_rows = [("fixture YOLO11n", f"{bundle.imgsz[0]}", str(args.calib_size), f"{fixture.seconds:.0f}")]
    if yolo11n is not None:
        time_rows.append(("YOLO11n (untrained)", "640", "200", f"{yolo11n.seconds:.0f}"))
    time_table = Table(
        "Conversion wall time (the whole command: export, calibration, quantization, validation)",
        ("model", "imgsz", "calibration images", "seconds"),
        tuple(time_rows),
    )
    verdicts = [
        verdict(
            "INT8 mAP50-95 drop",
            f"<= {TARGET_MAP_DROP} point (aim {AIM_MAP_DROP})",
            drop,
            drop <= TARGET_MAP_DROP,
            f"{drop:.2f}",
        ),
        *(
            verdict(
                f"INT8 speed-up, {where}, {t} thread{'s' if t > 1 else ''}",
                f">= {TARGET_SPEEDUP}x",
                ratios[t],
                ratios[t] >= TARGET_SPEEDUP,
                f"{ratios[t]:.2f}x",
            )
            for where, ratios in (
                [("YOLO11n 640", speedup_640)] if speedup_640 else [(f"fixture {bundle.imgsz[0]}", speedup)]
            )
            for t in sorted(ratios, reverse=True)
        ),
        verdict(
            "INT8 size",
            f"<= {TARGET_SIZE_RATIO}x FP32",
            size_ratio,
            size_ratio <= TARGET_SIZE_RATIO,
            f"{size_ratio:.3f}x",
        ),
    ]
    if yolo11n is not None:
        verdicts.append(
            verdict(
                "YOLO11n 640 conversion",
                f"< {TARGET_CONVERT_S:.0f} s",
                yolo11n.seconds,
                yolo11n.seconds < TARGET_CONVERT_S,
                f"{yolo11n.seconds:.0f} s",
            )
        )
    against_ultralytics: list[Table] = []
    if comparisons:
        against_ultralytics, ultralytics_targets = ultralytics_tables(comparisons, quantized, cpu, args.runs)
        verdicts += ultralytics_targets
    verdict_table = Table("Targets", ("measure", "target", "measured", "result"), tuple(verdicts))
    tables = [verdict_table, accuracy_table, speed_table, *against_ultralytics, time_table]
    tables += [comparison] if comparison else []
    for table in tables:
        print(render_text(table))
    png = args.out / "converter_bench.png"
    accuracy = {c.label: {n: v.map50_95 for n, v in c.scores.items()} for c in comparisons}
    panels = [(f"latency, fixture {bundle.imgsz[0]}", latency)]
    panels += [(f"latency, {c.label}", c.latency) for c in comparisons[1:]]
    plot(
        png,
        accuracy or {f"fixture, {bundle.imgsz[0]}": {"fp32": fp32_map, "int8": int8_map}},
        panels,
        f"yolo-edge converter against Ultralytics' INT8 export, {cpu}",
    )
    command = command_line("benchmarks.converter_bench", argv if argv is not None else sys.argv[1:])
    text = ["# Converter benchmark", "", f"`{command}`", "", "![converter benchmark](converter_bench.png)", ""]
    (args.out / "converter_bench.md").write_text("\n".join(text + [render_markdown(t) for t in tables]))
    print(f"\nwrote {args.out / 'converter_bench.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

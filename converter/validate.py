"""Score the INT8 model against FP32 on the same images, through the agent's own pipeline.

With labels: mAP50 and mAP50-95 of each precision. Without labels: INT8 is
scored against FP32's own detections. Latency is timed after scoring, on the last
image's tensor: the median of LATENCY_RUNS onnxruntime `run` calls per precision, the
precisions taking turns in blocks (agent.pipeline.inference.median_latencies_ms says why not run by run).

On an x86 host without VNNI, onnxruntime's fast INT8 kernel is inexact (see
agent.pipeline.inference.session_options), so INT8 accuracy is scored from a second, exact
session: the figure the Raspberry Pi (ARM, exact arithmetic) will reach. Latency
still comes from the fast session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.pipeline.detections import Detections
from agent.pipeline.inference import InferenceModel, cpu_has_vnni, is_x86, median_latencies_ms
from agent.pipeline.letterbox import Letterbox
from agent.pipeline.postprocess import Postprocessor, PostprocessSettings
from converter.images import LabelledImage
from converter.metrics import ImageEval, agreement, evaluate_detections

# Ultralytics' validation protocol: keep nearly everything, let the ranking decide.
EVAL_SETTINGS = PostprocessSettings(confidence=0.001, iou=0.7, max_detections=300)
# What FP32 "detects" when there are no labels to score against: the agent's defaults.
REFERENCE_SETTINGS = PostprocessSettings(confidence=0.25, iou=0.45)
LATENCY_RUNS = 30


@dataclass(frozen=True)
class PrecisionFigures:
    """Validation figures of one model. Latency in ms, size in bytes; mAP in 0..1."""

    precision: str
    latency_ms: float
    size_bytes: int
    map50: float | None = None
    map50_95: float | None = None
    agreement_map50: float | None = None
    mean_best_iou: float | None = None
    reference_boxes: int | None = None


@dataclass(frozen=True)
class Validation:
    """The outcome of validating a bundle's models on one image set."""

    source: str
    labelled: bool
    images: int
    instances: int | None
    skipped: int
    threads: int
    figures: Mapping[str, PrecisionFigures]
    # True when INT8 accuracy came from exact sessions because this host's fast kernel is inexact.
    exact_int8_accuracy: bool = False

    @property
    def speedup(self) -> float | None:
        """FP32 latency over INT8 latency (>1 means INT8 is faster)."""
        if "int8" not in self.figures:
            return None
        return self.figures["fp32"].latency_ms / self.figures["int8"].latency_ms

    @property
    def size_ratio(self) -> float | None:
        if "int8" not in self.figures:
            return None
        return self.figures["int8"].size_bytes / self.figures["fp32"].size_bytes

    @property
    def map_drop_points(self) -> float | None:
        """FP32 minus INT8 mAP50-95, in points (percent)."""
        if "int8" not in self.figures or not self.labelled:
            return None
        return 100.0 * (self.figures["fp32"].map50_95 - self.figures["int8"].map50_95)


def exact_int8_sessions(models: Mapping[str, Path], threads: int) -> dict[str, InferenceModel]:
    """Exact-arithmetic sessions for the quantized models, only where the fast kernel is inexact."""
    if not is_x86() or cpu_has_vnni():
        return {}
    return {p: InferenceModel(path, threads, exact_int8=True) for p, path in models.items() if p != "fp32"}


def validate_models(
    models: Mapping[str, Path],
    images: Iterable[LabelledImage],
    head: str,
    input_hw: tuple[int, int],
    pad_value: int,
    threads: int,
    source: str,
    labelled: bool,
    skipped: Callable[[], int],
    progress: Callable[[Iterable[LabelledImage]], Iterable[LabelledImage]] = lambda items: items,
) -> Validation:
    """Run every model in `models` (precision -> ONNX path) on each image, then time them."""
    sessions = {precision: InferenceModel(path, threads) for precision, path in models.items()}
    exact = exact_int8_sessions(models, threads)
    letterbox = Letterbox(input_hw, pad_value)
    evaluate = Postprocessor(head, EVAL_SETTINGS)
    reference = Postprocessor(head, REFERENCE_SETTINGS)
    predictions: dict[str, list[Detections]] = {p: [] for p in sessions}
    references: list[Detections] = []
    truths: list[LabelledImage] = []
    for item in progress(images):
        tensor, transform = letterbox(item.image)
        for precision, session in sessions.items():
            output = exact.get(precision, session).run(tensor)
            predictions[precision].append(evaluate(output, transform))
            if precision == "fp32" and not labelled:
                references.append(reference(output, transform))
        truths.append(item)
    if not truths:
        raise ValueError("validation got no images")
    latencies = median_latencies_ms(sessions, tensor, LATENCY_RUNS)
    figures = {}
    for precision, path in models.items():
        values: dict[str, float] = {}
        if labelled:
            metrics = evaluate_detections(
                ImageEval(d.boxes_xyxy, d.scores, d.class_ids, t.boxes_xyxy, t.class_ids)
                for d, t in zip(predictions[precision], truths, strict=True)
            )
            values = {"map50": metrics.map50, "map50_95": metrics.map50_95}
        elif precision != "fp32":
            scored = agreement(
                ((r.boxes_xyxy, r.class_ids) for r in references),
                ((d.boxes_xyxy, d.scores, d.class_ids) for d in predictions[precision]),
            )
            values = {
                "agreement_map50": scored.map50,
                "mean_best_iou": scored.mean_best_iou,
                "reference_boxes": scored.reference_boxes,
            }
        figures[precision] = PrecisionFigures(
            precision=precision, latency_ms=latencies[precision], size_bytes=path.stat().st_size, **values
        )
    instances = sum(len(t.class_ids) for t in truths) if labelled else None
    return Validation(
        source=source,
        labelled=labelled,
        images=len(truths),
        instances=instances,
        skipped=skipped(),
        threads=threads,
        figures=figures,
        exact_int8_accuracy=bool(exact),
    )

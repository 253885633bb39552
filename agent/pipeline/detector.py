"""Load a bundle or bare ONNX model and run frames through it.

The precision is chosen once at start-up. `auto` times INT8 and FP32 on this
board and keeps the faster: on a Pi 4 (no dot-product instructions) INT8 is
often slower than FP32, on a Pi 5 it is usually faster.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.bundle import BundleError, load_bundle, sha256_file, verify_model_file
from agent.pipeline.crops import RegionPlan, detect_plan
from agent.pipeline.detections import Detections
from agent.pipeline.inference import InferenceModel, cpu_has_vnni, default_threads, is_x86, median_latencies_ms
from agent.pipeline.letterbox import DEFAULT_PAD_VALUE, Letterbox
from agent.pipeline.postprocess import Postprocessor, PostprocessSettings
from agent.pipeline.precision_cache import PrecisionCache, PrecisionChoice, choice_key

log = logging.getLogger("yolo_edge.model")

PRECISION_CHOICES = ("auto", "int8", "fp32")
AUTO_TIMING_RUNS = 8


@dataclass(frozen=True)
class ModelIdentity:
    """What stats and detections say about the model in use."""

    name: str
    precision: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "precision": self.precision, "sha256": self.sha256}


@dataclass(frozen=True)
class LoadReport:
    """How the model was chosen: per-precision median inference ms when `auto` timed them, load seconds."""

    load_seconds: float
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detector:
    """Letterbox -> onnxruntime -> postprocess for one model; returns detections and stage times."""

    def __init__(
        self,
        model: InferenceModel,
        identity: ModelIdentity,
        names: dict[int, str],
        head: str,
        pad_value: int,
        settings: PostprocessSettings,
    ) -> None:
        self.model = model
        self.identity = identity
        self.names = names
        self.letterbox = Letterbox(model.info.input_hw, pad_value)
        self.postprocessor = Postprocessor(head, settings)

    @property
    def settings(self) -> PostprocessSettings:
        return self.postprocessor.settings

    def apply_settings(self, settings: PostprocessSettings) -> None:
        """New thresholds from the next detect() on; call it from the thread that calls detect()."""
        self.postprocessor.settings = settings

    def detect(self, image_bgr: np.ndarray) -> tuple[Detections, float, float, float]:
        """Detections in source pixels and (preprocess, inference, postprocess) ms."""
        start = time.perf_counter()
        tensor, transform = self.letterbox(image_bgr)
        prepared = time.perf_counter()
        output = self.model.run(tensor)
        inferred = time.perf_counter()
        detections = self.postprocessor(output, transform)
        done = time.perf_counter()
        return detections, (prepared - start) * 1e3, (inferred - prepared) * 1e3, (done - inferred) * 1e3

    def detect_plan(self, image_bgr: np.ndarray, plan: RegionPlan) -> tuple[Detections, float, float, float]:
        """detect() on each view of the plan (crops, the whole frame), merged into frame pixels; stage ms summed."""
        settings = self.settings
        return detect_plan(self.detect, image_bgr, plan, settings.iou, settings.max_detections)

    @property
    def input_side(self) -> int:
        """The side of the model's (square) input, pixels: the least a crop of the frame is cut at."""
        return max(self.letterbox.input_hw)


def label_ids(names: dict[int, str], labels: list[str] | tuple[str, ...], what: str) -> dict[str, int]:
    """Map configured labels to class ids; an unknown label is a user error naming the model's labels."""
    by_label = {label: class_id for class_id, label in names.items()}
    unknown = [label for label in labels if label not in by_label]
    if unknown:
        known = ", ".join(by_label) if len(by_label) <= 20 else ", ".join(list(by_label)[:20]) + ", ..."
        raise BundleError(f"{what}: unknown label(s) {', '.join(unknown)}; this model knows: {known}")
    return {label: by_label[label] for label in labels}


def load_detector(
    path: Path,
    precision: str,
    threads: int,
    confidence: float = 0.25,
    iou: float = 0.45,
    classes: tuple[str, ...] = (),
    class_confidence: dict[str, float] | None = None,
    max_detections: int = 300,
    precision_cache: PrecisionCache | None = None,
) -> tuple[Detector, LoadReport]:
    """Verify and load a bundle directory or an .onnx file. Raises BundleError / ModelLoadError naming the file.

    With precision 'auto' and a precision_cache, a choice already measured for these models, thread
    count and CPU is reused instead of timed again."""
    started = time.perf_counter()
    path = Path(path)
    if precision not in PRECISION_CHOICES:
        raise BundleError(f"precision {precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    timings: dict[str, float] = {}
    if path.is_dir():
        bundle = load_bundle(path)
        names, head, pad_value, name = dict(bundle.names), bundle.head, bundle.pad_value, bundle.model_name
        choices = [precision] if precision != "auto" else [p for p in ("int8", "fp32") if p in bundle.files]
        if "int8" in choices and not bundle.deployable:
            if precision == "int8":
                raise BundleError(f"bundle {path} is not deployable (its INT8 model failed validation); use fp32")
            choices.remove("int8")
        hashes = {p: bundle.files[p].sha256 for p in choices}
        key = choice_key(hashes, threads or default_threads())
        remembered = precision_cache.get(key) if precision_cache and len(choices) > 1 else None
        if remembered is not None:
            choices = [remembered.precision]
        models = {p: InferenceModel(verify_model_file(bundle, p), threads) for p in choices}
        if len(models) > 1:
            input_hw = next(iter(models.values())).info.input_hw  # the bundle's precisions share one input
            tensor = np.full((1, 3, *input_hw), 0.5, dtype=np.float32)
            timings = {p: round(ms, 2) for p, ms in median_latencies_ms(models, tensor, AUTO_TIMING_RUNS).items()}
            chosen = min(timings, key=timings.get)
            log.info("precision auto: %s (%s)", chosen, ", ".join(f"{p} {t:.1f} ms" for p, t in timings.items()))
            if precision_cache is not None:
                precision_cache.put(key, PrecisionChoice(chosen, timings))
        elif remembered is not None:
            chosen, timings = remembered.precision, remembered.timings_ms
            log.info(
                "precision auto: %s (measured earlier on this board: %s)",
                chosen,
                ", ".join(f"{p} {t:.1f} ms" for p, t in timings.items()),
            )
        else:
            chosen = choices[0]
        model = models[chosen]
        identity = ModelIdentity(name, chosen, hashes[chosen])
    elif path.is_file():
        model = InferenceModel(path, threads)
        names, head, pad_value = model.info.names, model.info.head, DEFAULT_PAD_VALUE
        # The converter records the precision in the metadata; other files say it in their name at best.
        guess = "int8" if "int8" in path.name.lower() else "fp32"
        declared = model.info.metadata.get("yolo_edge_precision", guess)
        if precision not in ("auto", declared):
            raise BundleError(f"{path} is an {declared} model; --precision {precision} needs a bundle holding both")
        identity = ModelIdentity(path.stem, declared, sha256_file(path))
    else:
        raise BundleError(f"model {path} does not exist; pass a bundle directory or an .onnx file")
    if identity.precision == "int8" and is_x86() and not cpu_has_vnni():
        log.warning(
            "INT8 on an x86 CPU without VNNI: onnxruntime's fast INT8 kernel is less accurate here than on the "
            "Pi (a few mAP points); use precision fp32 on this host if accuracy matters more than speed"
        )
    class_confidence = class_confidence or {}
    confidence_ids = label_ids(names, list(class_confidence), "model.class_confidence")
    settings = PostprocessSettings(
        confidence=confidence,
        iou=iou,
        max_detections=max_detections,
        classes=frozenset(label_ids(names, classes, "model.classes").values()) if classes else None,
        class_confidence={confidence_ids[label]: threshold for label, threshold in class_confidence.items()},
    )
    detector = Detector(model, identity, names, head, pad_value, settings)
    report = LoadReport(load_seconds=round(time.perf_counter() - started, 3), timings_ms=timings)
    log.info(
        "model loaded: %s %s (%s head, %d classes, %d threads) in %.2f s",
        identity.name,
        identity.precision,
        head,
        len(names),
        model.threads,
        report.load_seconds,
    )
    return detector, report

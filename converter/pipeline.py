"""The conversion pipeline: export, calibrate, quantize, validate, write the bundle."""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agent.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, MODEL_FILE_NAMES, REPORT_NAME, describe_file
from agent.pipeline.inference import default_threads
from agent.pipeline.letterbox import DEFAULT_PAD_VALUE, Letterbox
from converter.bundle_writer import check_destination, publish_bundle, staging_directory, write_manifest
from converter.errors import ConvertError
from converter.export import check_weights, export_model
from converter.images import ImageSource, LabelledImage, SkipCounter, VideoSource, open_source
from converter.quantize import QuantizeOptions, quantize_model
from converter.report import render_report
from converter.validate import Validation, validate_models

MIN_CALIBRATION_IMAGES = 8
PRECISION_CHOICES = ("int8", "fp32", "both")


@dataclass(frozen=True)
class ConvertRequest:
    """Everything the command line asks for. Sizes in pixels; max_map_drop in mAP points."""

    weights: Path
    out: Path
    calib: Path | None = None
    val: Path | None = None
    imgsz: int | None = None
    precision: str = "both"
    head: str = "auto"
    max_map_drop: float = 1.0
    min_agreement: float = 0.9
    force: bool = False
    calib_size: int = 200
    val_size: int = 300
    threads: int | None = None
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)


@dataclass(frozen=True)
class ConvertOutcome:
    bundle: Path | None
    deployable: bool
    verdict: str
    validation: Validation


def _progress(description: str, total: int | None) -> tqdm:
    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, leave=True, dynamic_ncols=True)


def tool_versions() -> dict[str, str]:
    versions = {}
    for package in ("yolo-edge", "ultralytics", "torch", "onnx", "onnxslim", "onnxruntime", "numpy", "opencv-python"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _calibration_tensors(
    source: ImageSource | VideoSource, limit: int, input_hw: tuple[int, int]
) -> tuple[list[np.ndarray], SkipCounter]:
    letterbox = Letterbox(input_hw, DEFAULT_PAD_VALUE)
    skips = SkipCounter()
    tensors: list[np.ndarray] = []
    with _progress("calibration images", min(limit, len(source))) as bar:
        for item in source.iter_images(limit, skips):
            tensor, _ = letterbox(item.image)
            tensors.append(tensor.copy())  # the letterbox reuses its buffer
            bar.update()
    if len(tensors) < MIN_CALIBRATION_IMAGES:
        raise ConvertError(
            f"{source.description} gave {len(tensors)} usable images ({len(skips.skipped)} unreadable); "
            f"calibration needs at least {MIN_CALIBRATION_IMAGES}, ideally 100-500 images like the deployment's"
        )
    return tensors, skips


def _validation_source(request: ConvertRequest) -> ImageSource | VideoSource:
    if request.val is not None:
        return open_source(request.val, "val")
    if request.calib is not None:
        # A data.yaml gives its labelled val split; a folder or video is reused, scored by agreement.
        return open_source(request.calib, "val")
    raise ConvertError("validation needs images: pass --val (an image folder, a video or a data.yaml)")


def _verdict(request: ConvertRequest, validation: Validation) -> tuple[bool, str]:
    if "int8" not in validation.figures:
        return True, "FP32 only, nothing was quantized"
    if validation.labelled:
        drop = validation.map_drop_points
        if drop <= request.max_map_drop:
            return True, f"INT8 mAP50-95 is within {request.max_map_drop:g} points of FP32 (drop {drop:.2f})"
        return False, f"INT8 mAP50-95 dropped {drop:.2f} points, more than --max-map-drop {request.max_map_drop:g}"
    if not validation.figures["int8"].reference_boxes:
        return False, "FP32 detected nothing on the validation images, so INT8 cannot be judged; pass a labelled --val"
    score = validation.figures["int8"].agreement_map50
    if score >= request.min_agreement:
        return True, f"INT8 agrees with FP32 (agreement mAP50 {score:.3f} >= {request.min_agreement:g})"
    return False, f"INT8 agreement mAP50 with FP32 is {score:.3f}, below {request.min_agreement:g}"


def _manifest(
    request: ConvertRequest,
    exported: Any,
    staging: Path,
    validation: Validation,
    deployable: bool,
    verdict: str,
    quantization: dict[str, Any] | None,
    calibration: dict[str, Any] | None,
) -> dict[str, Any]:
    files = {
        precision: describe_file(staging, name)
        for precision, name in MODEL_FILE_NAMES.items()
        if (staging / name).exists()
    }
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_name": exported.model_name,
        "task": "detect",
        "files": files,
        "names": {str(k): v for k, v in exported.names.items()},
        "imgsz": list(exported.imgsz),
        "stride": exported.stride,
        "head": exported.head,
        "preprocess": {
            "letterbox": True,
            "pad_value": DEFAULT_PAD_VALUE,
            "color": "RGB",
            "scale": 1 / 255,
            "layout": "NCHW",
            "interpolation": "linear",
        },
        "quantization": quantization,
        "calibration": calibration,
        "validation": {
            "source": validation.source,
            "labelled": validation.labelled,
            "images": validation.images,
            "instances": validation.instances,
            "skipped": validation.skipped,
            "threads": validation.threads,
            "exact_int8_accuracy": validation.exact_int8_accuracy,
            "speedup_int8": validation.speedup,
            "size_ratio_int8": validation.size_ratio,
            "map50_95_drop_points": validation.map_drop_points,
            "per_precision": {p: asdict(f) for p, f in validation.figures.items()},
        },
        "deployable": deployable,
        "verdict": verdict,
        "source_weights": {
            "name": exported.source_path.name,
            "kind": exported.source_kind,
            "sha256": exported.source_sha256,
        },
        "tools": tool_versions(),
    }


def convert(request: ConvertRequest) -> ConvertOutcome:
    """Run the whole conversion; raises ConvertError for anything the user can fix."""
    if request.precision not in PRECISION_CHOICES:
        raise ConvertError(f"--precision {request.precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    # In the order a user reads the command line: a mistyped weights path is named before a missing --calib.
    check_weights(request.weights, request.imgsz)
    check_destination(request.out, request.force)
    want_int8 = request.precision in ("int8", "both")
    if want_int8 and request.calib is None:
        raise ConvertError("INT8 needs calibration images: pass --calib (a folder, a video or a data.yaml)")
    calib_source = open_source(request.calib, "train") if want_int8 else None
    val_source = _validation_source(request)
    threads = request.threads or default_threads()
    with staging_directory(request.out) as staging:
        workdir = staging / ".work"
        workdir.mkdir()
        print(f"exporting {request.weights} to ONNX", file=sys.stderr)
        exported = export_model(request.weights, workdir, request.imgsz, request.head)
        models = {}
        if request.precision in ("fp32", "both", "int8"):
            # FP32 stays in every bundle: validation needs it and it is the fallback on the device.
            shutil.move(exported.onnx_path, staging / MODEL_FILE_NAMES["fp32"])
            models["fp32"] = staging / MODEL_FILE_NAMES["fp32"]
        quantization = calibration = None
        if want_int8:
            tensors, calib_skips = _calibration_tensors(calib_source, request.calib_size, exported.imgsz)
            with _progress("calibrating", len(tensors)) as bar:
                result = quantize_model(
                    models["fp32"],
                    staging / MODEL_FILE_NAMES["int8"],
                    tensors,
                    request.quantize,
                    progress=lambda done, total: bar.update(done - bar.n),
                )
            models["int8"] = staging / MODEL_FILE_NAMES["int8"]
            calibration = {
                "source": calib_source.description,
                "images": len(tensors),
                "skipped": len(calib_skips.skipped),
            }
            quantization = {
                **asdict(request.quantize),
                "format": "QDQ",
                "weights": "int8 per-channel",
                "excluded_nodes": len(result.excluded_nodes),
                "seconds": round(result.seconds, 1),
            }
            del tensors
        skips = SkipCounter()
        with _progress("validating", min(request.val_size, len(val_source))) as bar:
            validation = validate_models(
                models,
                val_source.iter_images(request.val_size, skips),
                exported.head,
                exported.imgsz,
                DEFAULT_PAD_VALUE,
                threads,
                val_source.description,
                val_source.labelled,
                skipped=lambda: len(skips.skipped),
                progress=lambda items: _counted(items, bar),
            )
        deployable, verdict = _verdict(request, validation)
        shutil.rmtree(workdir)
        manifest = _manifest(request, exported, staging, validation, deployable, verdict, quantization, calibration)
        report = render_report(
            exported.model_name, validation, deployable, verdict, calibration, quantization, manifest["tools"]
        )
        (staging / REPORT_NAME).write_text(report, encoding="utf-8")
        write_manifest(staging, manifest)
        if not deployable and not request.force:
            return ConvertOutcome(None, False, verdict, validation)
        publish_bundle(staging, request.out)
    return ConvertOutcome(request.out, deployable, verdict, validation)


def _counted(items: Iterable[LabelledImage], bar: tqdm) -> Iterator[LabelledImage]:
    for item in items:
        yield item
        bar.update()

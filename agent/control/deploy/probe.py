"""Run a newly deployed model once on a real frame and check that what it returns makes sense.

A bundle can pass every sha256 and still be wrong for this agent: a model exported at another
size than its manifest says, an output with a different number of classes than its labels,
NaNs from a broken quantization. Those are caught here, on the deployment's own thread, before
the frame loop ever sees the model.
"""

from __future__ import annotations

import numpy as np

from agent.pipeline.detections import Detections
from agent.pipeline.detector import Detector


class ProbeError(Exception):
    """The model's first inference failed or returned garbage; the message says which."""


def check_output(output: object, head: str, classes: int) -> None:
    """The raw output of one inference: the shape the head needs, `classes` scores per box, finite values."""
    if not isinstance(output, np.ndarray) or output.dtype.kind != "f":
        raise ProbeError(f"the model returned {type(output).__name__}, not a float array")
    shape = tuple(output.shape)
    if head == "classic":
        if output.ndim != 3 or shape[0] != 1 or shape[1] != 4 + classes or shape[2] < 1:
            raise ProbeError(f"the model's output has shape {shape}; its {classes} labels need (1, {4 + classes}, N)")
    elif output.ndim != 3 or shape[0] != 1 or shape[2] != 6 or shape[1] < 1:
        raise ProbeError(f"the model's output has shape {shape}; an end-to-end head needs (1, N, 6)")
    if not np.isfinite(output).all():
        raise ProbeError("the model's output holds NaN or infinite values")


def check_detections(detections: Detections, names: dict[int, str]) -> None:
    """Detections after postprocessing: known class ids, finite boxes and scores 0..1."""
    unknown = sorted({int(c) for c in detections.class_ids} - set(names))
    if unknown:
        raise ProbeError(f"the model detected class ids {unknown[:5]} that its labels do not name")
    if not (np.isfinite(detections.boxes_xyxy).all() and np.isfinite(detections.scores).all()):
        raise ProbeError("the model's detections hold NaN or infinite values")
    if len(detections.scores) and not ((detections.scores >= 0) & (detections.scores <= 1.0001)).all():
        raise ProbeError("the model's scores are outside 0..1")


def probe(detector: Detector, image: np.ndarray, expected_hw: tuple[int, int] | None = None) -> Detections:
    """Run `detector` on `image` once (its letterbox and session, not the frame loop's); raise ProbeError if wrong.

    expected_hw: the input size the bundle's manifest declares, which the model must have.
    """
    input_hw = detector.model.info.input_hw
    if expected_hw is not None and tuple(expected_hw) != tuple(input_hw):
        raise ProbeError(
            f"the model's input is {input_hw[0]}x{input_hw[1]}; the manifest says {expected_hw[0]}x{expected_hw[1]}"
        )
    try:
        tensor, transform = detector.letterbox(image)
        output = detector.model.run(tensor)
    except Exception as error:  # onnxruntime raises several unrelated types for a model that cannot run
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ProbeError(f"the model's first inference failed: {first_line[:300]}") from error
    check_output(output, detector.postprocessor.head, len(detector.names))
    try:
        detections = detector.postprocessor(output, transform)
    except (ValueError, IndexError) as error:
        raise ProbeError(f"the model's output cannot be decoded: {error}") from error
    check_detections(detections, detector.names)
    return detections

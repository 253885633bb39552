"""INT8 contenders side by side: accuracy through the agent's pipeline, agreement with FP32, and
what each QDQ model quantizes.

Used by benchmarks.converter_bench to put our INT8 model next to Ultralytics' own INT8 export of
the same weights. Agreement is the share of FP32's boxes (the agent's default thresholds) that an
INT8 model finds again: same class, IoU >= 0.5, each INT8 box claimed once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from agent.pipeline.detections import Detections
from agent.pipeline.inference import InferenceModel
from agent.pipeline.letterbox import Letterbox
from agent.pipeline.postprocess import Postprocessor
from converter.images import LabelledImage
from converter.metrics import ImageEval, box_iou_xyxy, evaluate_detections
from converter.validate import EVAL_SETTINGS, REFERENCE_SETTINGS, exact_int8_sessions

AGREEMENT_IOU = 0.5


def found_again(
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray], iou: float = AGREEMENT_IOU
) -> int:
    """How many reference boxes (boxes_xyxy, class_ids) a candidate set finds again, one to one.

    Pairs of the same class are claimed in descending IoU order, so a candidate box between two
    reference boxes goes to the one it overlaps most and counts once.
    """
    ref_boxes, ref_classes = np.asarray(reference[0]).reshape(-1, 4), np.asarray(reference[1]).reshape(-1)
    cand_boxes, cand_classes = np.asarray(candidate[0]).reshape(-1, 4), np.asarray(candidate[1]).reshape(-1)
    if len(ref_boxes) == 0 or len(cand_boxes) == 0:
        return 0
    overlap = box_iou_xyxy(ref_boxes, cand_boxes)
    overlap[ref_classes[:, None] != cand_classes[None, :]] = 0.0
    rows, cols = np.nonzero(overlap >= iou)
    order = np.argsort(-overlap[rows, cols], kind="stable")
    used_ref: set[int] = set()
    used_cand: set[int] = set()
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if r not in used_ref and c not in used_cand:
            used_ref.add(r)
            used_cand.add(c)
    return len(used_ref)


@dataclass(frozen=True)
class Agreement:
    """reference_boxes: FP32's boxes over all images; found: how many of them the INT8 model found again."""

    reference_boxes: int
    found: int

    @property
    def share(self) -> float | None:
        """None when FP32 found nothing: there is nothing to agree with."""
        return self.found / self.reference_boxes if self.reference_boxes else None


def agreement(
    pairs: Iterable[tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]], iou: float = AGREEMENT_IOU
) -> Agreement:
    """Agreement over images, each a (reference, candidate) pair of (boxes_xyxy, class_ids)."""
    total = found = 0
    for reference, candidate in pairs:
        total += len(np.asarray(reference[1]).reshape(-1))
        found += found_again(reference, candidate, iou)
    return Agreement(total, found)


@dataclass(frozen=True)
class Scores:
    """Accuracy of one model on the validation images. mAP in 0..1, None without labels;
    agreement None for the FP32 reference itself."""

    map50: float | None
    map50_95: float | None
    agreement: Agreement | None


def score_models(
    models: Mapping[str, Path],
    images: Iterable[LabelledImage],
    head: str,
    input_hw: tuple[int, int],
    threads: int,
    reference: str = "fp32",
) -> dict[str, Scores]:
    """Run every model on every image through the agent's letterbox and postprocessing, as
    converter.validate does: mAP with Ultralytics' validation thresholds where there are labels,
    and each model's agreement with `reference` at the agent's default thresholds.

    INT8 accuracy comes from exact-arithmetic sessions where this CPU's fast kernel is inexact
    (x86 without VNNI), the figure an ARM board reaches.
    """
    sessions = {name: InferenceModel(path, threads) for name, path in models.items()}
    sessions.update(exact_int8_sessions({n: p for n, p in models.items() if n != reference}, threads))
    letterbox = Letterbox(input_hw)
    evaluate, deployed = Postprocessor(head, EVAL_SETTINGS), Postprocessor(head, REFERENCE_SETTINGS)
    ranked: dict[str, list[Detections]] = {name: [] for name in models}
    shown: dict[str, list[Detections]] = {name: [] for name in models}
    truths: list[LabelledImage] = []
    for item in images:
        tensor, transform = letterbox(item.image)
        for name, session in sessions.items():
            output = session.run(tensor)
            ranked[name].append(evaluate(output, transform))
            shown[name].append(deployed(output, transform))
        truths.append(item)
    if not truths:
        raise ValueError("scoring got no images")
    labelled = all(t.boxes_xyxy is not None for t in truths)
    scores = {}
    for name in models:
        map50 = map50_95 = None
        if labelled:
            metrics = evaluate_detections(
                ImageEval(d.boxes_xyxy, d.scores, d.class_ids, t.boxes_xyxy, t.class_ids)
                for d, t in zip(ranked[name], truths, strict=True)
            )
            map50, map50_95 = metrics.map50, metrics.map50_95
        agreed = None
        if name != reference:
            agreed = agreement(
                ((r.boxes_xyxy, r.class_ids), (d.boxes_xyxy, d.class_ids))
                for r, d in zip(shown[reference], shown[name], strict=True)
            )
        scores[name] = Scores(map50, map50_95, agreed)
    return scores


@dataclass(frozen=True)
class QuantizationSummary:
    """What a QDQ model runs on 8-bit tensors.

    int8_ops: op type -> nodes in a QDQ group, every tensor input dequantized and every output
        quantized again: the groups onnxruntime fuses into one integer kernel (QLinearConv, ...).
        float_ops: every other node but Q/DQ themselves; it runs in float32 even where it reads a
        dequantized tensor. weights: 'per-channel' or 'per-tensor' (the scales of the
        DequantizeLinear nodes fed by initializers); activations: the element type of the
        QuantizeLinear outputs ('uint8', 'int8', or 'none' in an FP32 model).
    """

    int8_ops: tuple[tuple[str, int], ...]
    float_ops: int
    weights: str
    activations: str

    def describe(self) -> str:
        ops = ", ".join(f"{op} {count}" for op, count in self.int8_ops) or "none"
        return f"{self.activations} activations, {self.weights} weights; integer: {ops}; float: {self.float_ops} nodes"


def summarize_quantization(model: onnx.ModelProto) -> QuantizationSummary:
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    readers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    graph_outputs = {output.name for output in graph.output}
    int8_ops: Counter[str] = Counter()
    float_ops = 0
    weight_scales: list[int] = []
    activation_types: set[str] = set()
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            if node.input[0] in initializers and len(node.input) > 1 and node.input[1] in initializers:
                weight_scales.append(int(np.prod(initializers[node.input[1]].dims, dtype=np.int64)))
            continue
        if node.op_type == "QuantizeLinear":
            zero_point = initializers.get(node.input[2]) if len(node.input) > 2 else None
            element = zero_point.data_type if zero_point is not None else onnx.TensorProto.UINT8
            activation_types.add(onnx.TensorProto.DataType.Name(element).lower())
            continue
        tensor_inputs = [name for name in node.input if name and name not in initializers]
        inputs_8bit = bool(tensor_inputs) and all(name in dequantized for name in tensor_inputs)
        outputs_8bit = all(
            name not in graph_outputs and readers.get(name) and set(readers[name]) == {"QuantizeLinear"}
            for name in node.output
        )
        if inputs_8bit and outputs_8bit:
            int8_ops[node.op_type] += 1
        else:
            float_ops += 1
    weights = "none"
    if weight_scales:
        weights = "per-channel" if any(size > 1 for size in weight_scales) else "per-tensor"
    return QuantizationSummary(
        int8_ops=tuple(sorted(int8_ops.items(), key=lambda item: (-item[1], item[0]))),
        float_ops=float_ops,
        weights=weights,
        activations="/".join(sorted(activation_types)) or "none",
    )

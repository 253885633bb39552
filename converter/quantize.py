"""Static INT8 post-training quantization of an exported YOLO detection model.

onnxruntime's recipe: ``quant_pre_process`` (shape inference + basic graph optimization) then
``quantize_static`` in QDQ format with signed 8-bit per-channel weights and calibrated activations.

What is quantized, and why
--------------------------
Everything except the detect head's *decoding tail*. The tail turns the head's per-scale conv outputs
into the final (1, 4 + nc, N) or (1, N, 6) tensor: it reshapes and concatenates them, runs the DFL
softmax/expectation, the sigmoid of the class logits and the box arithmetic, and (YOLO26 end-to-end)
the TopK/Gather selection. Box coordinates there span 0..imgsz pixels while class scores span 0..1; a
quantized Concat of the two shares one scale, so scores collapse to 0 and mAP is 0 (onnxruntime
issues 14233 and 10787). The tail is cheap, so it stays float32 and costs nothing measurable.

Everything before it, the convolutions of the head included, runs as int8: the SiLU (Sigmoid + Mul),
Add, Concat, Split, MaxPool and Resize between convolutions are quantized too, so activations stay
int8 from one convolution to the next and onnxruntime fuses each DequantizeLinear -> op -> QuantizeLinear
group into one integer kernel (QLinearConv, QLinearSigmoid, QLinearMul, QLinearConcat, ...). Quantizing
only the convolutions instead wraps every one in its own Q/DQ pair and runs slower than FP32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from converter.errors import ConvertError

__all__ = [
    "ACTIVATION_TYPES",
    "CALIBRATION_METHODS",
    "QuantizationError",
    "QuantizeOptions",
    "QuantizeResult",
    "find_head_tail_nodes",
    "quantize_model",
]

log = logging.getLogger(__name__)

ACTIVATION_TYPES: tuple[str, ...] = ("uint8", "int8")
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")

_QUANT_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
_CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}

# Ultralytics names every node after the nn.Module that produced it: "/model.23/cv2.0/cv2.0.2/Conv".
_BLOCK_NAME = re.compile(r"^/model\.(\d+)/")

# Ops that make up the head's per-scale convolution branches: the convolutions and their activation
# (SiLU exports as Sigmoid + Mul; other activations listed so a retrained variant still parses).
_BRANCH_OPS = frozenset(
    {"Conv", "Sigmoid", "Mul", "Add", "Relu", "LeakyRelu", "HardSigmoid", "HardSwish", "Clip", "Tanh", "Elu"}
)

# The histogram calibrators (entropy, percentile) hold every float tensor of every image of a
# calibration pass in memory: about 0.5 GiB per image for YOLO11n at 640. Images are therefore fed in
# chunks whose activations fit in this budget (numpy copies them about twice more while histogramming).
_CALIBRATION_CHUNK_BYTES = 1 << 30

# Share of the values the percentile method keeps inside the range: 99.999 is onnxruntime's default.
_PERCENTILE = 99.999


class QuantizationError(ConvertError):
    """Quantization cannot run or failed; the message says what to change."""


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize.

    activation_type: 'uint8' (asymmetric, zero point anywhere: fits the one-sided SiLU outputs) or
        'int8'. On x86 without VNNI onnxruntime only has fast u8 x s8 kernels, so 'int8' runs slower.
    calibration_method: how activation ranges are chosen from the calibration tensors: 'minmax' (the
        full observed range), 'entropy' (the range minimising KL divergence) or 'percentile' (clip the
        outer 0.001 % of values).
    per_channel: one weight scale per output channel instead of one per tensor.
    exclude_head_tail: keep the detect head's decoding tail in float32 (see find_head_tail_nodes);
        turning it off quantizes it too, which is known to zero every score.
    """

    activation_type: str = "uint8"
    calibration_method: str = "minmax"
    per_channel: bool = True
    exclude_head_tail: bool = True

    def __post_init__(self) -> None:
        _check_choice("activation_type", self.activation_type, ACTIVATION_TYPES)
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        for name in ("per_channel", "exclude_head_tail"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"QuantizeOptions.{name} must be True or False, got {value!r}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"QuantizeOptions.{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


@dataclass(frozen=True)
class QuantizeResult:
    """What quantize_model did.

    excluded_nodes: names of the nodes left in float32 (the head's decoding tail).
    quantize_nodes / dequantize_nodes: QuantizeLinear / DequantizeLinear nodes in the written model.
    seconds: wall time of the whole call, calibration included.
    """

    excluded_nodes: tuple[str, ...]
    quantize_nodes: int
    dequantize_nodes: int
    seconds: float


def _block_index(node: onnx.NodeProto) -> int | None:
    match = _BLOCK_NAME.match(node.name)
    return int(match.group(1)) if match else None


def find_head_tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes of the detect head's decoding tail, in graph order.

    Found from the graph's structure, not from node names, so YOLOv8, YOLO11 and YOLO26 (classic and
    end-to-end) all work:

    1. The head is the last block: the largest N among nodes named ``/model.N/...``.
    2. Its convolution branches (cv2/cv3, YOLO26's one2one_cv2/one2one_cv3) are stacks of Conv and
       activation ops fed by the feature maps of earlier blocks. Walking forward from those inputs,
       a head node belongs to a branch while it is a Conv or activation op whose every non-constant
       input comes from the head's inputs or from a branch node. The first op that reshapes,
       concatenates, splits or takes a softmax leaves the branches; so does everything after it,
       including the DFL convolution, a fixed-weight (0..15) 1x1 conv that turns each softmaxed
       16-bin distribution into a distance.
    3. Branch ops past the last convolution of their branch (an activation applied to a final conv
       output) are decoding too: a branch node is kept only if it is a Conv or feeds one.
    4. The tail is every other node of the head, plus every node downstream of it (whatever its name,
       e.g. post-processing appended after the head) and every node producing a graph output.

    Raises:
        ValueError: if no node is named ``/model.N/...`` (not an Ultralytics export).
    """
    graph = model.graph
    blocks = [index for node in graph.node if (index := _block_index(node)) is not None]
    if not blocks:
        raise ValueError("no node is named /model.<N>/...: this is not an Ultralytics YOLO export")
    head_index = max(blocks)
    head = [node for node in graph.node if _block_index(node) == head_index]
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    made_in_head = {out for node in head for out in node.output}

    # Step 2: forward from the head's inputs through Conv/activation ops (graph.node is topologically sorted).
    branch_tensors: set[str] = set()
    spatial: list[onnx.NodeProto] = []
    for node in head:
        data = [name for name in node.input if name and name not in constants]
        from_branch = all(name in branch_tensors or name not in made_in_head for name in data)
        if node.op_type in _BRANCH_OPS and data and from_branch:
            spatial.append(node)
            branch_tensors.update(node.output)

    # Step 3: backwards from the branch convolutions: only what feeds a conv is part of a branch.
    producer = {out: node for node in spatial for out in node.output}
    branch: set[str] = set()
    stack = [node for node in spatial if node.op_type == "Conv"]
    while stack:
        node = stack.pop()
        if node.name in branch:
            continue
        branch.add(node.name)
        stack.extend(producer[name] for name in node.input if name in producer)

    # Step 4: the rest of the head, then everything fed by it or producing a graph output.
    tail = {node.name for node in head if node.name not in branch}
    tail_tensors = {out for node in head if node.name in tail for out in node.output}
    graph_outputs = {out.name for out in graph.output}
    for node in graph.node:  # topological order: one pass closes the set downstream
        if node.name in tail:
            continue
        if any(name in tail_tensors for name in node.input) or any(out in graph_outputs for out in node.output):
            tail.add(node.name)
            tail_tensors.update(node.output)
    return [node.name for node in graph.node if node.name in tail]


class _TensorReader(CalibrationDataReader):
    """Feeds the caller's (1, 3, H, W) float32 tensors to onnxruntime's calibrator.

    ``set_range`` lets quantize_static's CalibStridedMinMax option feed them a chunk at a time.
    progress(done, total) is called after each tensor is handed over.
    """

    def __init__(
        self, input_name: str, tensors: Sequence[np.ndarray], progress: Callable[[int, int], None] | None
    ) -> None:
        self._input_name = input_name
        self._tensors = tensors
        self._progress = progress
        self._next = 0
        self._end = len(tensors)
        self._fed = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        tensor = self._tensors[self._next]
        self._next += 1
        self._fed += 1
        if self._progress is not None:
            self._progress(self._fed, len(self._tensors))
        return {self._input_name: tensor}

    def __len__(self) -> int:
        return len(self._tensors)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = start_index
        self._end = min(end_index, len(self._tensors))


def _input_shape(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise QuantizationError(f"the model must have exactly one input, it has {len(inputs)}")
    dims = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in inputs[0].type.tensor_type.shape.dim)
    return inputs[0].name, dims


def _check_calibration(calibration: Sequence[np.ndarray], shape: tuple[int, ...]) -> None:
    if len(calibration) == 0:
        raise QuantizationError("the calibration set is empty: INT8 needs at least one image (a few hundred is best)")
    for index, tensor in enumerate(calibration):
        ok_shape = tensor.ndim == len(shape) and all(want in (-1, got) for want, got in zip(shape, tensor.shape))
        if tensor.dtype != np.float32 or not ok_shape:
            raise QuantizationError(
                f"calibration tensor {index} is {tensor.dtype} {tuple(tensor.shape)}; "
                f"the model needs float32 {shape} (letterboxed RGB in 0..1)"
            )


def _float_bytes_per_image(model: onnx.ModelProto) -> int:
    """Bytes of all float32 intermediate tensors of one inference, from the shape-inferred value_info."""
    total = 0
    for value in model.graph.value_info:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [dim.dim_value if dim.HasField("dim_value") else 1 for dim in tensor_type.shape.dim]
        total += 4 * math.prod(dims)
    return total


def _calibration_stride(images: int, bytes_per_image: int) -> int:
    """Images per calibration pass: the largest divisor of `images` whose activations fit the budget.

    quantize_static requires the stride to divide the number of images.
    """
    limit = max(1, _CALIBRATION_CHUNK_BYTES // max(bytes_per_image, 1))
    return max(d for d in range(1, min(limit, images) + 1) if images % d == 0)


def _extra_options(options: QuantizeOptions, stride: int) -> dict[str, object]:
    extra: dict[str, object] = {
        # Feed the calibrator a chunk of images at a time so entropy/percentile histograms over hundreds
        # of 640 px images stay within _CALIBRATION_CHUNK_BYTES; minmax merges ranges, same result.
        "CalibStridedMinMax": stride,
        # Asymmetric activations: after SiLU a tensor spans about -0.28..+x, so a zero point at the
        # bottom of the range uses all 256 levels where a symmetric range would waste almost half.
        "ActivationSymmetric": False,
        # Symmetric (zero point 0) weights, which is what onnxruntime's integer conv kernels expect.
        "WeightSymmetric": True,
    }
    if options.calibration_method == "percentile":
        # onnxruntime's percentile calibrator defaults to a symmetric range over |x|; ask for the
        # two-sided percentile so the asymmetric activation ranges above are computed as intended.
        extra["CalibTensorRangeSymmetric"] = False
        extra["CalibPercentile"] = _PERCENTILE
    return extra


def _keep_tail_inputs_float(model: onnx.ModelProto, tail: Iterable[str]) -> None:
    """Remove the QuantizeLinear -> DequantizeLinear pairs through which the tail reads its inputs.

    quantize_static quantizes every Conv output, including those of the head's last convolutions,
    whose only readers are tail nodes. Rewiring those readers to the float tensor keeps the
    regression distributions and class logits in float32, as the tail expects; the Q/DQ nodes left
    without readers are dropped.
    """
    graph = model.graph
    tail = set(tail)
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.name not in tail:
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    _drop_unread_nodes(graph, {"QuantizeLinear", "DequantizeLinear"})


def _drop_unread_nodes(graph: onnx.GraphProto, op_types: set[str]) -> None:
    """Remove nodes of `op_types` whose outputs nobody reads, repeatedly (a Q feeding only a dropped DQ)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        unread = [node for node in graph.node if node.op_type in op_types and not any(o in read for o in node.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


def quantize_model(
    fp32_path: Path,
    int8_path: Path,
    calibration: Sequence[np.ndarray],
    options: QuantizeOptions,
    progress: Callable[[int, int], None] | None = None,
) -> QuantizeResult:
    """Write an INT8 QDQ copy of the FP32 ONNX model at fp32_path to int8_path.

    Args:
        fp32_path: the FP32 model exported by Ultralytics (static (1, 3, H, W) input).
        int8_path: where to write; replaced atomically, only once quantization succeeded.
        calibration: (1, 3, H, W) float32 tensors, RGB in 0..1, letterboxed exactly as at inference
            (agent.letterbox.Letterbox); a few hundred images representative of deployment.
        options: see QuantizeOptions.
        progress: called as progress(done, total) after each calibration tensor is fed.

    Raises:
        QuantizationError: empty or mis-shaped calibration set, or onnxruntime failed.
    """
    started = time.perf_counter()
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    original = onnx.load(str(fp32_path))
    input_name, input_shape = _input_shape(original)
    _check_calibration(calibration, input_shape)

    with tempfile.TemporaryDirectory(prefix="yolo-edge-quantize-") as workdir:
        prepared_path = Path(workdir) / "prepared.onnx"
        quantized_path = Path(workdir) / "quantized.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared_path))
        except Exception as error:  # onnxruntime raises assorted types for graphs it cannot process
            raise QuantizationError(f"onnxruntime pre-processing of {fp32_path} failed: {error}") from error
        prepared = onnx.load(str(prepared_path))
        tail: list[str] = []
        if options.exclude_head_tail:
            try:
                tail = find_head_tail_nodes(prepared)
            except ValueError as error:
                raise QuantizationError(f"{fp32_path}: {error}; pass exclude_head_tail=False to quantize it all") from error
        stride = _calibration_stride(len(calibration), _float_bytes_per_image(prepared))
        del prepared
        reader = _TensorReader(input_name, calibration, progress)
        # onnxruntime's calibrators print() their progress; keep stdout for the caller's own output.
        with contextlib.redirect_stdout(io.StringIO()) as chatter:
            try:
                quantize_static(
                    str(prepared_path),
                    str(quantized_path),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=options.per_channel,
                    activation_type=_QUANT_TYPES[options.activation_type],
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=tail,
                    calibrate_method=_CALIBRATION_METHODS[options.calibration_method],
                    extra_options=_extra_options(options, stride),
                )
            except Exception as error:
                raise QuantizationError(f"onnxruntime quantization of {fp32_path} failed: {error}") from error
        log.debug("onnxruntime calibrator output:\n%s", chatter.getvalue())

        model = onnx.load(str(quantized_path))
        _keep_tail_inputs_float(model, tail)
        # Carry over the exporter's metadata (names, stride, imgsz, head kind): the agent reads it.
        _copy_metadata(original, model)
        partial = int8_path.with_name(int8_path.name + ".tmp")
        try:
            onnx.save(model, str(partial))
            os.replace(partial, int8_path)
        finally:
            partial.unlink(missing_ok=True)

    ops = [node.op_type for node in model.graph.node]
    return QuantizeResult(
        excluded_nodes=tuple(tail),
        quantize_nodes=ops.count("QuantizeLinear"),
        dequantize_nodes=ops.count("DequantizeLinear"),
        seconds=time.perf_counter() - started,
    )


def _copy_metadata(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    existing = {prop.key: prop for prop in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key in existing:
            existing[prop.key].value = prop.value
        else:
            target.metadata_props.add(key=prop.key, value=prop.value)

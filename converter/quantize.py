"""Static INT8 post-training quantization of an exported YOLO detection model.

onnxruntime's recipe: ``quant_pre_process`` (shape inference + basic graph optimization) then
``quantize_static`` in QDQ format with signed 8-bit per-channel weights and calibrated activations.

What is quantized, and why
--------------------------
Everything except the detect head's *decoding tail* (find_head_tail_nodes). The tail turns the
head's per-scale conv outputs into the final (1, 4 + nc, N) or (1, N, 6) tensor: it reshapes and
concatenates them, runs the DFL softmax/expectation, the sigmoid of the class logits, the box
arithmetic and (YOLO26 end-to-end) the TopK/Gather selection. Box coordinates there span 0..imgsz
pixels while class scores span 0..1; a quantized Concat of the two shares one scale, so every score
rounds to 0 and mAP is 0 (onnxruntime issues 14233 and 10787). The tail stays float32, and it reads
the head's last conv outputs (class logits, box distributions) in float32 too.

Everything before it, the convolutions of the head included, runs as int8: the SiLU (Sigmoid + Mul),
Add, Concat, Split, MaxPool and Resize between convolutions are quantized too, so activations stay
int8 from one convolution to the next and onnxruntime fuses each DequantizeLinear -> op -> QuantizeLinear
group into one integer kernel (QLinearConv, QLinearSigmoid, QLinearMul, QLinearConcat, ...).
Quantizing only the convolutions leaves a float SiLU and a Q/DQ pair around every conv, and the
model is then barely faster than FP32 (1.1x against 1.55x, YOLO11n at 640, x86, 1 thread).

Numbers behind the defaults are in the docstring of QuantizeOptions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
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
from converter.graph_edits import (
    compact_qdq_names,
    decompose_inner_softmax,
    find_head_tail_nodes,
    keep_tail_inputs_float,
)

__all__ = [
    "ACTIVATION_TYPES",
    "CALIBRATION_METHODS",
    "QuantizationError",
    "QuantizeOptions",
    "QuantizeResult",
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

# The histogram calibrators (entropy, percentile) hold every float tensor of every image of a
# calibration pass in memory: about 0.5 GiB per image for YOLO11n at 640, 100 GiB for 200 images.
# Images are therefore fed in chunks whose activations fit in this budget. Measured: 200 images at
# 640 px peak at 1.75 GB RSS with either method, 0.94 GB of it the caller's calibration tensors.
_CALIBRATION_CHUNK_BYTES = 1 << 30

# Share of the values the percentile method keeps inside the range (onnxruntime's default): 99.99 and
# 99.9 clip more and followed FP32 less closely at 640 px (agreement 0.87 and worse, against 0.96).
_PERCENTILE = 99.999


class QuantizationError(ConvertError):
    """Quantization cannot run or failed; the message says what to change."""


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize.

    activation_type: 'uint8' (asymmetric: its zero point sits near the bottom of the one-sided SiLU
        outputs) or 'int8'. onnxruntime on x86 has fast kernels for uint8 x int8 only; int8
        activations ran 1.7x slower than FP32 there (uint8: 1.55x faster).
    calibration_method: how each activation's range is chosen from the calibration tensors: 'minmax'
        (the full observed range), 'entropy' (the range minimising KL divergence) or 'percentile'
        (drop the outer 0.001 % of values, half on each side).
    per_channel: one weight scale per output channel instead of one per tensor.
    exclude_head_tail: keep the detect head's decoding tail in float32 (see find_head_tail_nodes);
        turning it off quantizes it too, which is known to zero every score.

    The defaults, measured on a partially trained YOLO11n (4 shape classes; FP32 mAP50-95 33.4 at
    320 px, 24.8 at 640), 100 calibration and 100 validation images, uint8 activations, INT8 run with
    exact integer arithmetic (what ARM computes, see below). Agreement is the mAP50 of the INT8
    detections scored against the FP32 detections (confidence >= 0.25) as ground truth:

        calibration          mAP50-95 change 320 / 640    agreement 320 / 640
        minmax               +0.18 / +0.07                0.937 / 0.894
        entropy              -0.62 / -0.07                0.960 / 0.813
        percentile 99.999    -0.23 / -0.15                0.962 / 0.960   <- default
        percentile 99.99     -0.05 / -0.01                0.954 / 0.874
        percentile 99.9      -3.44 / -                    0.820 / -

    Every method stays within 1 point of FP32; percentile reproduces FP32's detections most closely
    at both sizes. Per-tensor weights cost 1.4 points (320, earlier checkpoint), int8 activations
    did no better than uint8 (-0.1 / -0.3).

    x86 without VNNI (AVX2, AVX-512 without VNNI): onnxruntime's fast uint8 x int8 kernel adds pairs
    of products in saturating int16, and with full 8-bit weights the uint8 model loses 4-5 points
    there (-4.0 / -4.8 with percentile above). ARM and VNNI CPUs are exact. Validating on such a host
    needs the session option ``session.x64quantprecision=1`` (exact, but no faster than FP32);
    7-bit weights (quantize_static's reduce_range) avoid the overflow at a cost of 1.0-1.8 points
    everywhere, so they are not used.
    """

    activation_type: str = "uint8"
    calibration_method: str = "percentile"
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
        if not isinstance(tensor, np.ndarray):
            raise QuantizationError(f"calibration tensor {index} is a {type(tensor).__name__}, not a numpy array")
        ok_shape = tensor.ndim == len(shape) and all(
            want in (-1, got) for want, got in zip(shape, tensor.shape, strict=True)
        )
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
        # (Measured: the symmetric default was as accurate, +0.40 / +0.19 points, but followed FP32
        # a little less closely, agreement 0.959 / 0.947 against 0.962 / 0.960.)
        extra["CalibTensorRangeSymmetric"] = False
        extra["CalibPercentile"] = _PERCENTILE
    # Left at onnxruntime's defaults on purpose:
    # - QuantizeBias=True: an int32 bias is what lets onnxruntime fuse DQ -> Conv -> Q into QLinearConv.
    # - DedicatedQDQPair=False: readers of a tensor share one Q/DQ pair; fewer nodes, same fused kernels.
    # - ForceQuantizeNoInputCheck=False: every MaxPool/Resize/Split/Reshape here already reads an int8
    #   tensor, so they are quantized anyway; forcing would also touch ops that read float inputs.
    # - CalibMovingAverage=False: only affects minmax, which is not the default.
    # - reduce_range=False (7-bit weights): see QuantizeOptions, x86 without VNNI.
    return extra


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
            # Symbolic shape inference (meant for dynamic transformer shapes) crashes on YOLO26's
            # end-to-end TopK/Mod path; the export has static shapes, which ONNX's own inference covers.
            quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)
        except Exception as error:  # onnxruntime raises assorted types for graphs it cannot process
            raise QuantizationError(f"onnxruntime pre-processing of {fp32_path} failed: {error}") from error
        prepared = onnx.load(str(prepared_path))
        tail: list[str] = []
        if options.exclude_head_tail:
            try:
                tail = find_head_tail_nodes(prepared)
            except ValueError as error:
                raise QuantizationError(
                    f"{fp32_path}: {error}; pass exclude_head_tail=False to quantize it all"
                ) from error
        stride = _calibration_stride(len(calibration), _float_bytes_per_image(prepared))
        if tail:
            # Only inside the float tail; a quantized Softmax elsewhere (the backbone's attention)
            # already runs as one fused QLinearSoftmax.
            rewritten = decompose_inner_softmax(prepared, tail)
            if rewritten:
                keep = set(tail) | set(rewritten)
                tail = [node.name for node in prepared.graph.node if node.name in keep]
                onnx.save(prepared, str(prepared_path))
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
        keep_tail_inputs_float(model, tail)
        compact_qdq_names(model)
        # Shape annotations added by quant_pre_process: onnxruntime infers them again at load time.
        del model.graph.value_info[:]
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

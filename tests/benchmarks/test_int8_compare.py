"""The INT8 comparison's pure parts: agreement with FP32 on literal boxes, and what a QDQ graph quantizes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.int8_compare import agreement, found_again, summarize_quantization


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


def test_a_box_is_found_again_at_iou_half_or_more_of_the_same_class_only() -> None:
    reference = (boxes((0, 0, 10, 10), (20, 20, 30, 30), (40, 40, 50, 50)), np.array([0, 1, 2]))
    candidate = (
        # IoU 0.81 with the first (same class), an exact copy of the second with the wrong class,
        # and IoU 0.4 with the third: only the first counts.
        boxes((0, 0, 9, 9), (20, 20, 30, 30), (40, 40, 50, 44)),
        np.array([0, 2, 2]),
    )
    assert found_again(reference, candidate) == 1


def test_one_candidate_box_is_claimed_by_one_reference_box() -> None:
    reference = (boxes((0, 0, 10, 10), (1, 0, 11, 10)), np.array([3, 3]))
    candidate = (boxes((1, 0, 11, 10)), np.array([3]))
    assert found_again(reference, candidate) == 1


def test_the_reference_box_it_overlaps_most_gets_the_candidate() -> None:
    # The candidate overlaps the second reference box more; the first still finds its own twin.
    reference = (boxes((0, 0, 10, 10), (2, 0, 12, 10)), np.array([0, 0]))
    candidate = (boxes((2, 0, 12, 10), (0, 0, 10, 10)), np.array([0, 0]))
    assert found_again(reference, candidate) == 2


def test_agreement_counts_over_images_and_has_no_share_without_reference_boxes() -> None:
    none = (np.zeros((0, 4)), np.zeros(0))
    image_1 = ((boxes((0, 0, 10, 10), (20, 20, 30, 30)), np.array([0, 0])), (boxes((0, 0, 10, 10)), np.array([0])))
    image_2 = ((boxes((5, 5, 15, 15)), np.array([1])), none)
    scored = agreement([image_1, image_2])
    assert (scored.reference_boxes, scored.found) == (3, 1)
    assert scored.share == 1 / 3
    assert agreement([(none, image_1[1])]).share is None


def _qdq_model(weight_scales: np.ndarray, zero_point_type: int) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv (weights through DQ) -> Q -> DQ -> Sigmoid -> y: the Conv is a QDQ group,
    the Sigmoid reads a dequantized tensor but writes float."""
    channels = len(weight_scales)
    zero_point = np.zeros((), dtype=np.uint8 if zero_point_type == TensorProto.UINT8 else np.int8)
    initializers = [
        numpy_helper.from_array(np.array(0.02, dtype=np.float32), "x_scale"),
        numpy_helper.from_array(zero_point, "x_zero"),
        numpy_helper.from_array(np.ones((channels, 1, 1, 1), dtype=np.int8), "w_q"),
        numpy_helper.from_array(weight_scales.astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(channels, dtype=np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["x_dq", "w"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "x_scale", "x_zero"], ["c_q"]),
        helper.make_node("DequantizeLinear", ["c_q", "x_scale", "x_zero"], ["c_dq"]),
        helper.make_node("Sigmoid", ["c_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 4, 4])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_summary_counts_qdq_groups_as_integer_and_the_rest_as_float() -> None:
    summary = summarize_quantization(_qdq_model(np.array([0.1, 0.2]), TensorProto.UINT8))
    assert summary.int8_ops == (("Conv", 1),)
    assert summary.float_ops == 1
    assert (summary.weights, summary.activations) == ("per-channel", "uint8")


def test_summary_tells_per_tensor_weights_and_signed_activations() -> None:
    summary = summarize_quantization(_qdq_model(np.array([0.1]), TensorProto.INT8))
    assert (summary.weights, summary.activations) == ("per-tensor", "int8")


def test_an_fp32_model_has_nothing_quantized() -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "fp32",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    summary = summarize_quantization(helper.make_model(graph))
    assert (summary.int8_ops, summary.float_ops, summary.weights, summary.activations) == ((), 1, "none", "none")

"""converter.quantize on real Ultralytics exports (untrained nets built from their yaml, 160 px, offline)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent.pipeline.letterbox import Letterbox
from converter.graph_edits import decompose_inner_softmax, find_head_tail_nodes
from converter.quantize import (
    QuantizationError,
    QuantizeOptions,
    QuantizeResult,
    _calibration_stride,
    quantize_model,
)

IMGSZ = 160
# name -> (model yaml, extra export arguments, output shape). nms=False is what gives YOLO26 its
# end-to-end (1, 300, 6) output; end2end=False its classic one.
MODELS = {
    "yolov8n": ("yolov8n.yaml", {}, (1, 84, 525)),
    "yolo11n": ("yolo11n.yaml", {}, (1, 84, 525)),
    "yolo26n-classic": ("yolo26n.yaml", {"end2end": False}, (1, 84, 525)),
    "yolo26n-end2end": ("yolo26n.yaml", {"nms": False}, (1, 300, 6)),
}
Q_DQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Export a model on first use (a few seconds each), then reuse the file."""
    pytest.importorskip("ultralytics")
    os.environ["YOLO_OFFLINE"] = "1"  # never let Ultralytics reach the network
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("quantize-models")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            yaml, extra, shape = MODELS[name]
            weights = folder / f"{name}.pt"
            YOLO(yaml).save(str(weights))  # builds the untrained net offline
            exported = Path(
                YOLO(str(weights)).export(
                    format="onnx", imgsz=IMGSZ, opset=20, simplify=True, dynamic=False, batch=1, **extra
                )
            )
            dims = onnx.load(str(exported)).graph.output[0].type.tensor_type.shape.dim
            assert tuple(d.dim_value for d in dims) == shape, f"Ultralytics changed the {name} export"
            cache[name] = exported
        return cache[name]

    return get


@pytest.fixture(scope="module")
def calibration() -> list[np.ndarray]:
    """Six letterboxed synthetic scenes: (1, 3, 160, 160) float32 each."""
    from benchmarks.fixture.shapes import render_scene

    letterbox = Letterbox((IMGSZ, IMGSZ))
    return [letterbox(render_scene(11, index, 240, 320).image)[0].copy() for index in range(6)]


@pytest.fixture(scope="module")
def quantized(export, calibration, tmp_path_factory) -> tuple[Path, Path, QuantizeResult, list[tuple[int, int]]]:
    """yolo11n quantized with the default options: (fp32 path, int8 path, result, progress calls)."""
    fp32 = export("yolo11n")
    int8 = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    calls: list[tuple[int, int]] = []
    result = quantize_model(fp32, int8, calibration, QuantizeOptions(), progress=lambda d, t: calls.append((d, t)))
    return fp32, int8, result, calls


def head_index(model: onnx.ModelProto) -> int:
    return max(int(m.group(1)) for n in model.graph.node if (m := re.match(r"/model\.(\d+)/", n.name)))


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def run(path: Path, tensor: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: tensor})[0]


# ----------------------------------------------------------------------------- head tail


@pytest.mark.parametrize("name", list(MODELS))
def test_head_tail_is_the_decoding_and_spares_the_head_convolutions(name, export):
    model = onnx.load(str(export(name)))
    tail = find_head_tail_nodes(model)
    tail_set = set(tail)
    head = f"/model.{head_index(model)}/"
    nodes = {node.name: node for node in model.graph.node}
    made_by = producers(model)

    assert tail, "empty tail"
    assert len(tail) == len(tail_set)
    # The node writing the graph output, and the class-score Sigmoid on the concatenated logits.
    assert made_by[model.graph.output[0].name].name in tail_set
    score_sigmoids = [
        n
        for n in model.graph.node
        if n.op_type == "Sigmoid" and n.name.startswith(head) and made_by[n.input[0]].op_type == "Concat"
    ]
    assert score_sigmoids and all(n.name in tail_set for n in score_sigmoids)
    # Every Concat of the head is decoding (the per-scale conv outputs are flattened and joined).
    head_concats = [n.name for n in model.graph.node if n.op_type == "Concat" and n.name.startswith(head)]
    assert head_concats and set(head_concats) <= tail_set
    # DFL (reg_max 16: YOLOv8/YOLO11) is all tail, its fixed-weight conv included.
    dfl = [n.name for n in model.graph.node if "/dfl/" in n.name]
    if not name.startswith("yolo26"):
        assert any(nodes[n].op_type == "Softmax" for n in dfl) and any(nodes[n].op_type == "Conv" for n in dfl)
    assert set(dfl) <= tail_set
    # No branch convolution (cv2/cv3/one2one_*) is in the tail: the DFL conv is the only Conv there.
    head_convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name.startswith(head)]
    assert len(head_convs) > 10
    assert {n for n in tail_set if nodes[n].op_type == "Conv"} == {n for n in head_convs if "/dfl/" in n}
    # Nothing before the head is excluded, and the activation inside a branch stays quantizable.
    assert all(n.startswith(head) for n in tail)
    assert not any("/act/" in n for n in tail)
    if name.endswith("end2end"):
        assert {nodes[n].op_type for n in tail} >= {"TopK", "GatherElements"}


def test_head_tail_includes_nodes_appended_after_the_head(export):
    model = onnx.load(str(export("yolo11n")))
    output = model.graph.output[0]
    scaled = onnx.helper.make_node("Mul", [output.name, "two"], ["scaled"], name="postprocess/Mul")
    model.graph.node.append(scaled)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    output.name = "scaled"
    assert "postprocess/Mul" in find_head_tail_nodes(model)


def test_activation_after_a_last_convolution_is_tail(export):
    # Not in today's heads, but a branch ending Conv -> Sigmoid must not leave that Sigmoid quantized.
    model = onnx.load(str(export("yolo11n")))
    last_conv = next(n for n in model.graph.node if n.name == "/model.23/cv3.0/cv3.0.2/Conv")
    reader = next(n for n in model.graph.node if last_conv.output[0] in n.input)
    squash = onnx.helper.make_node("Sigmoid", [last_conv.output[0]], ["squashed"], name="/model.23/cv3.0/Sigmoid")
    reader.input[list(reader.input).index(last_conv.output[0])] = "squashed"
    model.graph.node.insert(list(model.graph.node).index(reader), squash)
    tail = find_head_tail_nodes(model)
    assert "/model.23/cv3.0/Sigmoid" in tail
    assert "/model.23/cv3.0/cv3.0.2/Conv" not in tail


def test_head_tail_needs_an_ultralytics_graph():
    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [value("x", onnx.TensorProto.FLOAT, [1])], [value("y", onnx.TensorProto.FLOAT, [1])]
    )
    with pytest.raises(ValueError, match=r"/model\.<N>/"):
        find_head_tail_nodes(onnx.helper.make_model(graph))


# ----------------------------------------------------------------------------- quantize_model


def test_convolutions_outside_the_tail_are_wrapped_in_q_dq(quantized):
    _, int8, result, _ = quantized
    model = onnx.load(str(int8))
    tail = set(result.excluded_nodes)
    made_by = producers(model)
    read_by = consumers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in tail]
    assert len(convs) > 50
    for conv in convs:
        assert made_by[conv.input[0]].op_type == "DequantizeLinear", conv.name  # int8 activation in
        assert made_by[conv.input[1]].op_type == "DequantizeLinear", conv.name  # int8 weights
        readers = read_by.get(conv.output[0], [])
        if not all(r.name in tail for r in readers):  # the head's last convs feed the float tail directly
            assert [r.op_type for r in readers] == ["QuantizeLinear"], conv.name  # int8 activation out


def test_tail_reads_float_tensors_only(quantized):
    _, int8, result, _ = quantized
    model = onnx.load(str(int8))
    names = {n.name for n in model.graph.node}
    made_by = producers(model)
    assert result.excluded_nodes and set(result.excluded_nodes) <= names
    for node in model.graph.node:
        if node.name in result.excluded_nodes:
            fed_by = {made_by[i].op_type for i in node.input if i in made_by}
            assert not fed_by & set(Q_DQ), f"{node.name} reads a Q/DQ output"
    # The DFL softmax was rewritten into last-axis-free float ops, still in the tail.
    assert not any(n.op_type == "Softmax" and "/dfl/" in n.name for n in model.graph.node)
    assert any(n.op_type == "Exp" and n.name in result.excluded_nodes for n in model.graph.node)


def test_quantized_model_runs_and_matches_fp32(quantized, calibration):
    fp32, int8, _, _ = quantized
    expected = run(fp32, calibration[0])
    got = run(int8, calibration[0])
    assert got.shape == expected.shape
    assert np.isfinite(got).all()
    # Untrained weights, so compare raw outputs: boxes (pixels) and scores must follow FP32's closely.
    boxes, scores = (slice(0, 4), slice(4, None))
    assert np.corrcoef(got[0, boxes].ravel(), expected[0, boxes].ravel())[0, 1] > 0.99
    assert np.corrcoef(got[0, scores].ravel(), expected[0, scores].ravel())[0, 1] > 0.9
    assert got[0, scores].max() > 0  # the failure this module exists to avoid: every score quantized to 0


def test_quantized_file_is_small_and_keeps_metadata(quantized):
    fp32, int8, _, _ = quantized
    assert int8.stat().st_size < 0.3 * fp32.stat().st_size
    # quantize_static's long generated names are shortened (they alone are 6 % of the file at 640 px),
    # while every Q still names the FP32 tensor it quantizes.
    model = onnx.load(str(int8))
    fp32_tensors = {out for n in onnx.load(str(fp32)).graph.node for out in n.output} | {"images"}
    names = {t for n in model.graph.node for t in (*n.input, *n.output)} | {i.name for i in model.graph.initializer}
    assert not [t for t in names if t.endswith(("_QuantizeLinear_Output", "_DequantizeLinear_Output", "_zero_point"))]
    assert {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"} <= fp32_tensors
    source = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    written = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert source and source.items() <= written.items()


def test_result_reports_what_was_written(quantized, calibration):
    _, int8, result, calls = quantized
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert result.quantize_nodes == ops.count("QuantizeLinear") > 50
    assert result.dequantize_nodes == ops.count("DequantizeLinear") > result.quantize_nodes
    assert result.seconds > 0
    assert calls == [(i, len(calibration)) for i in range(1, len(calibration) + 1)]
    assert [p.name for p in int8.parent.iterdir()] == [int8.name]  # no temporary file left behind


def test_signed_activations(export, calibration, tmp_path):
    int8 = tmp_path / "s8.onnx"
    quantize_model(export("yolov8n"), int8, calibration[:2], QuantizeOptions(activation_type="int8"))
    model = onnx.load(str(int8))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = {inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert zero_points == {onnx.TensorProto.INT8}
    assert run(int8, calibration[0]).shape == (1, 84, 525)


@pytest.mark.parametrize("name", ["yolo26n-end2end", "yolo26n-classic"])
def test_yolo26_quantizes(name, export, calibration, tmp_path):
    fp32, int8 = export(name), tmp_path / "m.onnx"
    result = quantize_model(fp32, int8, calibration[:2], QuantizeOptions(calibration_method="percentile"))
    excluded_ops = {n.op_type for n in onnx.load(str(int8)).graph.node if n.name in result.excluded_nodes}
    assert ("TopK" in excluded_ops) == name.endswith("end2end")  # the end-to-end selection stays float
    assert "Sigmoid" in excluded_ops
    assert run(int8, calibration[0]).shape == run(fp32, calibration[0]).shape


def test_whole_graph_quantization_can_be_requested(export, calibration, tmp_path):
    int8 = tmp_path / "all.onnx"
    result = quantize_model(export("yolov8n"), int8, calibration[:2], QuantizeOptions(exclude_head_tail=False))
    assert result.excluded_nodes == ()
    model = onnx.load(str(int8))
    final = producers(model)[model.graph.output[0].name]
    assert final.op_type == "DequantizeLinear"  # even the output Concat is int8: what the default avoids


def test_empty_calibration_raises_and_writes_nothing(export, tmp_path):
    int8 = tmp_path / "m.onnx"
    with pytest.raises(QuantizationError, match="calibration set is empty"):
        quantize_model(export("yolov8n"), int8, [], QuantizeOptions())
    assert list(tmp_path.iterdir()) == []


def test_misshaped_calibration_raises_and_keeps_the_old_file(export, calibration, tmp_path):
    int8 = tmp_path / "m.onnx"
    int8.write_bytes(b"previous model")
    wrong = np.zeros((1, 3, 320, 320), np.float32)
    with pytest.raises(QuantizationError, match=r"calibration tensor 1 is float32 \(1, 3, 320, 320\)"):
        quantize_model(export("yolov8n"), int8, [calibration[0], wrong], QuantizeOptions())
    with pytest.raises(QuantizationError, match="tensor 0 is float64"):
        quantize_model(export("yolov8n"), int8, [calibration[0].astype(np.float64)], QuantizeOptions())
    assert int8.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ----------------------------------------------------------------------------- options and helpers


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("activation_type", "uint16", "'uint8', 'int8'"),
        ("calibration_method", "kl", "'minmax', 'entropy', 'percentile'"),
        ("per_channel", "yes", "True or False"),
        ("exclude_head_tail", 1, "True or False"),
    ],
)
def test_options_are_validated(field, value, allowed):
    with pytest.raises(ValueError) as error:
        QuantizeOptions(**{field: value})
    message = str(error.value)
    assert field in message and repr(value) in message and allowed in message


def test_default_options_are_valid():
    options = QuantizeOptions()
    assert (options.activation_type, options.per_channel, options.exclude_head_tail) == ("uint8", True, True)


@pytest.mark.parametrize(
    ("images", "bytes_per_image", "stride"),
    [(200, 500 << 20, 2), (200, 130 << 20, 5), (7, 500 << 20, 1), (6, 1, 6), (1, 10 << 30, 1)],
)
def test_calibration_is_fed_in_chunks_that_fit_the_memory_budget(images, bytes_per_image, stride):
    # Entropy/percentile hold every activation of a chunk: ~0.5 GiB per image for a nano model at 640.
    assert _calibration_stride(images, bytes_per_image) == stride


def test_inner_softmax_decomposition_is_exact():
    value = onnx.helper.make_tensor_value_info
    nodes = [
        onnx.helper.make_node("Softmax", ["x"], ["y"], name="inner", axis=1),
        onnx.helper.make_node("Softmax", ["x"], ["z"], name="last", axis=-1),
    ]
    shape = [1, 16, 4, 5]
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [value("x", onnx.TensorProto.FLOAT, shape)],
        [value("y", onnx.TensorProto.FLOAT, shape), value("z", onnx.TensorProto.FLOAT, shape)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    x = np.random.default_rng(0).normal(0, 20, shape).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})

    added = decompose_inner_softmax(model)

    assert [n.op_type for n in model.graph.node] == ["ReduceMax", "Sub", "Exp", "ReduceSum", "Div", "Softmax"]
    assert set(added) == {n.name for n in model.graph.node[:5]}
    onnx.checker.check_model(model)
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    np.testing.assert_array_equal(after[1], before[1])

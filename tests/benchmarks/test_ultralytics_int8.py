"""The wrapper that runs Ultralytics' INT8 export offline: its data.yaml, environment and patch point
(no export here: that is the benchmark's job)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from benchmarks import ultralytics_int8
from benchmarks.ultralytics_int8 import (
    calibration_yaml_text,
    exported_path,
    offline_environment,
    write_calibration_yaml,
)


def test_calibration_yaml_points_both_splits_at_the_images_and_keeps_names_strings(tmp_path: Path) -> None:
    images = tmp_path / "calib" / "images"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"")
    path = write_calibration_yaml(images, {1: "yes", 0: "it's", 2: "null"}, tmp_path / "calib.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["train"] == data["val"] == str(images.resolve())
    assert data["names"] == {0: "it's", 1: "yes", 2: "null"}


def test_calibration_yaml_refuses_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no calibration images"):
        write_calibration_yaml(tmp_path, {0: "a"}, tmp_path / "calib.yaml")


def test_calibration_yaml_text_is_absolute_from_a_relative_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(calibration_yaml_text(Path("images"), {0: "circle"}))
    assert Path(data["val"]).is_absolute() and Path(data["val"]) == tmp_path / "images"


def test_offline_environment_switches_ultralytics_offline_without_touching_the_base(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "YOLO_OFFLINE": "0"}
    env = offline_environment(base, tmp_path / "config")
    assert env["PATH"] == "/usr/bin"
    assert (env["YOLO_OFFLINE"], env["YOLO_AUTOINSTALL"], env["YOLO_CONFIG_DIR"]) == (
        "1",
        "False",
        str(tmp_path / "config"),
    )
    assert base == {"PATH": "/usr/bin", "YOLO_OFFLINE": "0"}


def test_exported_path_is_beside_the_staged_copy(tmp_path: Path) -> None:
    assert exported_path(Path("/weights/best.pt"), tmp_path) == tmp_path / "best_int8.onnx"


class _Reader:
    def __init__(self, count: int) -> None:
        self.feeds = [{"images": np.zeros((1, 3, 2, 2), np.float32)} for _ in range(count)]

    def get_next(self):
        return self.feeds.pop() if self.feeds else None

    def rewind(self) -> None:
        self.feeds = []


def test_the_counting_wrapper_passes_every_argument_and_image_through() -> None:
    calls = []

    def fake_quantize_static(model_input, model_output, reader, **kwargs):
        fed = list(iter(reader.get_next, None))
        reader.rewind()  # attributes Ultralytics' reader has reach through the wrapper
        calls.append((model_input, model_output, len(fed), kwargs))

    ultralytics_int8._counting(fake_quantize_static)("in.onnx", "out.onnx", _Reader(30), nodes_to_exclude=["a"])
    assert calls == [("in.onnx", "out.onnx", 30, {"nodes_to_exclude": ["a"]})]


def test_ultralytics_reads_quantize_static_where_the_patch_puts_it(tmp_path: Path, monkeypatch) -> None:
    """Ultralytics imports quantize_static when it quantizes, so replacing the module attribute reaches it;
    and it excludes every node but Conv, Gemm and MatMul, as the benchmark's notes say."""
    import onnxruntime.quantization
    from ultralytics.utils.export.onnx import onnx_int8_quantize

    seen = {}

    def fake_quantize_static(model_input, model_output, reader, **kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", fake_quantize_static)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Sigmoid", ["c"], ["y"], name="sig"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
        [onnx.numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")],
    )
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    onnx_int8_quantize(tmp_path / "m.onnx", tmp_path / "m_int8.onnx", [], lambda batch: batch)
    assert seen["nodes_to_exclude"] == ["sig"]

"""The converter as a user runs it: errors first (fast), then real conversions (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from agent.bundle import load_bundle, sha256_file, verify_model_file
from agent.pipeline.inference import InferenceModel
from agent.pipeline.letterbox import Letterbox
from agent.pipeline.postprocess import Postprocessor, PostprocessSettings
from converter.cli import main
from converter.graph_edits import find_head_tail_nodes
from converter.metrics import box_iou_xyxy


def run_cli(capsys, *args: str | Path) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    from benchmarks.fixture.shapes import render_scene

    folder = tmp_path_factory.mktemp("images")
    for index in range(12):
        cv2.imwrite(str(folder / f"{index:03d}.jpg"), render_scene(7, index, 240, 320).image)
    return folder


@pytest.fixture(scope="module")
def segment_weights(tmp_path_factory) -> Path:
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("seg") / "yolo11n-seg.pt"
    YOLO("yolo11n-seg.yaml").save(str(path))
    return path


def error_cases(tmp_path: Path, image_folder: Path) -> list[tuple[list, str]]:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    empty = tmp_path / "empty"
    empty.mkdir()
    existing = tmp_path / "existing"
    existing.mkdir()
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    return [
        ([tmp_path / "missing.pt", "--out", tmp_path / "b", "--calib", image_folder], "do not exist"),
        ([junk, "--out", tmp_path / "b", "--calib", image_folder], "cannot load weights"),
        ([weights, "--out", tmp_path / "b", "--calib", empty], "has no images"),
        ([weights, "--out", tmp_path / "b", "--calib", tmp_path / "nowhere"], "does not exist"),
        ([weights, "--out", tmp_path / "no" / "such" / "b", "--calib", image_folder], "does not exist"),
        ([weights, "--out", existing, "--calib", image_folder], "already exists; pass --force"),
        ([weights, "--out", tmp_path / "b"], "INT8 needs calibration images"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_user_errors_give_one_line_and_exit_2(case, tmp_path, image_folder, capsys):
    args, expected = error_cases(tmp_path, image_folder)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, output = run_cli(capsys, *args)
    assert code == 2
    assert expected in output
    assert len([line for line in output.splitlines() if line.startswith("yolo-edge-convert: error")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written


@pytest.mark.parametrize("more", [[], ["--imgsz", "320"]])
def test_a_mistyped_weights_path_is_named_before_the_other_arguments(tmp_path, capsys, more):
    # Without --calib and with an --out that exists: both would be refused too, but the weights come first.
    existing = tmp_path / "b"
    existing.mkdir()
    code, output = run_cli(capsys, tmp_path / "nope.pt", "--out", existing, *more)
    assert code == 2
    assert f"weights {tmp_path / 'nope.pt'} do not exist" in output
    assert "calibration" not in output and "already exists" not in output


def test_unwritable_out_directory(tmp_path, image_folder, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, output = run_cli(capsys, tmp_path / "w.pt", "--out", locked / "b", "--calib", image_folder)
    assert code == 2 and "not writable" in output


@pytest.mark.slow
def test_segmentation_model_is_refused(segment_weights, tmp_path, image_folder, capsys):
    code, output = run_cli(capsys, segment_weights, "--out", tmp_path / "b", "--calib", image_folder)
    assert code == 2
    assert "segment model; yolo-edge supports detection models only" in output
    assert not (tmp_path / "b").exists()


def quantize_op_inputs(model: onnx.ModelProto) -> dict[str, list[str]]:
    producers = {output: node for node in model.graph.node for output in node.output}
    return {node.name: [producers[i].op_type for i in node.input if i in producers] for node in model.graph.node}


@pytest.mark.slow
def test_fixture_bundle_matches_its_manifest(fixture_bundle, fixture_weights):
    from ultralytics import YOLO

    trained_at = YOLO(str(fixture_weights)).ckpt["train_args"]["imgsz"]  # no --imgsz: the training size is kept
    manifest = json.loads((fixture_bundle / "manifest.json").read_text())
    assert manifest["format"] == "yolo-edge-bundle" and manifest["version"] == 1
    assert manifest["head"] == "classic" and manifest["imgsz"] == [trained_at, trained_at]
    assert manifest["names"] == {"0": "circle", "1": "square", "2": "triangle", "3": "star"}
    assert manifest["deployable"] is True
    for precision in ("fp32", "int8"):
        entry = manifest["files"][precision]
        path = fixture_bundle / entry["path"]
        assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
    validation = manifest["validation"]["per_precision"]
    assert validation["fp32"]["map50_95"] > 0.5
    assert validation["fp32"]["map50_95"] - validation["int8"]["map50_95"] <= 0.01
    assert (fixture_bundle / "report.md").read_text().startswith("# yolo-edge bundle")
    assert sorted(p.name for p in fixture_bundle.iterdir()) == [
        "manifest.json",
        "model.fp32.onnx",
        "model.int8.onnx",
        "report.md",
    ]


@pytest.mark.slow
def test_int8_model_quantizes_convolutions_but_not_the_head_tail(fixture_bundle):
    model = onnx.load(str(fixture_bundle / "model.int8.onnx"))
    fp32 = onnx.load(str(fixture_bundle / "model.fp32.onnx"))
    tail = set(find_head_tail_nodes(fp32))
    inputs = quantize_op_inputs(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized = [n for n in convs if inputs[n.name] and inputs[n.name][0] == "DequantizeLinear"]
    assert len(quantized) >= 0.9 * (len(convs) - 1)
    tail_nodes = [n for n in model.graph.node if n.name in tail]
    assert tail_nodes, "the head tail should survive quantization under its own names"
    assert all("DequantizeLinear" not in inputs[n.name] for n in tail_nodes if n.op_type != "Concat")
    assert {p.key: p.value for p in model.metadata_props}["yolo_edge_head"] == "classic"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_both_models_detect_the_fixture_objects(fixture_bundle, precision):
    from benchmarks.fixture.shapes import render_scene

    bundle = load_bundle(fixture_bundle)
    model = InferenceModel(verify_model_file(bundle, precision), threads=2)
    letterbox = Letterbox(bundle.imgsz)
    postprocess = Postprocessor(bundle.head, PostprocessSettings(confidence=0.25))
    found = expected = 0
    # 20 unseen scenes (about 70 objects), so one missed shape cannot decide the outcome; the fixture
    # recalls about 82% of them at IoU 0.5, an untrained or broken model none.
    for index in range(20):
        scene = render_scene(424242, index, 288, 384)
        tensor, transform = letterbox(scene.image)
        detections = postprocess(model.run(tensor), transform)
        iou = box_iou_xyxy(scene.boxes_xyxy, detections.boxes_xyxy)
        same_class = scene.class_ids[:, None] == detections.class_ids[None, :]
        found += int(((iou > 0.5) & same_class).any(axis=1).sum())
        expected += len(scene.class_ids)
    assert found >= 0.7 * expected, f"{precision}: found {found} of {expected} objects"


@pytest.mark.slow
def test_map_agrees_with_ultralytics_val(fixture_bundle, shapes_dataset):
    from ultralytics import YOLO

    manifest = json.loads((fixture_bundle / "manifest.json").read_text())
    ours = manifest["validation"]["per_precision"]["fp32"]
    theirs = YOLO(str(fixture_bundle / "model.fp32.onnx"), task="detect").val(
        data=str(shapes_dataset), imgsz=manifest["imgsz"][0], batch=1, device="cpu", plots=False, verbose=False
    )
    assert abs(theirs.box.map - ours["map50_95"]) <= 0.02
    assert abs(theirs.box.map50 - ours["map50"]) <= 0.02


@pytest.mark.slow
def test_existing_bundle_is_replaced_only_with_force(fixture_bundle, fixture_weights, shapes_dataset, capsys):
    before = (fixture_bundle / "manifest.json").read_text()
    code, output = run_cli(capsys, fixture_weights, "--out", fixture_bundle, "--calib", shapes_dataset)
    assert code == 2 and "already exists" in output
    assert (fixture_bundle / "manifest.json").read_text() == before


@pytest.mark.slow
def test_untrained_model_without_labels_is_not_deployable_unless_forced(tmp_path, image_folder, capsys):
    from ultralytics import YOLO

    weights = tmp_path / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(str(weights))
    out = tmp_path / "bundle"
    code, output = run_cli(capsys, weights, "--out", out, "--calib", image_folder, "--imgsz", "160")
    assert code == 1 and "not deployable" in output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]  # staging cleaned up
    code, output = run_cli(capsys, weights, "--out", out, "--calib", image_folder, "--imgsz", "160", "--force")
    assert code == 0
    assert json.loads((out / "manifest.json").read_text())["deployable"] is False


@pytest.mark.slow
@pytest.mark.parametrize(("head", "expected_shape"), [("auto", (1, 300, 6)), ("classic", (1, 84, 525))])
def test_yolo26_heads(tmp_path, image_folder, capsys, head, expected_shape):
    from ultralytics import YOLO

    weights = tmp_path / "yolo26n.pt"
    YOLO("yolo26n.yaml").save(str(weights))
    out = tmp_path / "bundle"
    code, _ = run_cli(
        capsys,
        weights,
        "--out",
        out,
        "--calib",
        image_folder,
        "--imgsz",
        "160",
        "--head",
        head,
        "--force",
        "--precision",
        "both",
    )
    assert code == 0
    bundle = load_bundle(out)
    assert bundle.head == ("end2end" if head == "auto" else "classic")
    for precision in ("fp32", "int8"):
        model = InferenceModel(verify_model_file(bundle, precision), threads=1)
        output = model.run(np.zeros((1, 3, 160, 160), np.float32))
        assert output.shape == expected_shape

"""Ultralytics weights -> FP32 ONNX, with Ultralytics' own exporter.

Only this module (and the fixture trainer) imports ultralytics; the agent never does.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from agent.bundle import sha256_file
from agent.pipeline.inference import infer_head
from converter.errors import ConvertError

# onnxruntime's static quantization does not handle opset 21 and newer.
EXPORT_OPSET = 20
HEAD_CHOICES = ("auto", "classic", "end2end")


@dataclass(frozen=True)
class ExportedModel:
    """An FP32 ONNX model ready to quantize. imgsz: (height, width) pixels."""

    onnx_path: Path
    model_name: str
    names: dict[int, str]
    imgsz: tuple[int, int]
    stride: int
    head: str
    source_path: Path
    source_sha256: str
    source_kind: str  # 'pt' or 'onnx'
    ultralytics_version: str | None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _write_metadata(path: Path, values: dict[str, str]) -> None:
    """Record what the agent needs in the ONNX file itself, so a bare model is self-describing."""
    model = onnx.load(str(path))
    existing = {prop.key: prop for prop in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _pick_head(requested: str, supports_end2end: bool, weights: Path) -> str:
    if requested == "end2end" and not supports_end2end:
        raise ConvertError(
            f"{weights} has no end-to-end (NMS-free) head; only YOLO26-style models do. Use --head classic or auto"
        )
    if requested == "auto":
        return "end2end" if supports_end2end else "classic"
    return requested


def export_pt(weights: Path, workdir: Path, imgsz: int | None, head: str) -> ExportedModel:
    """Export an Ultralytics detection checkpoint to `workdir/model.onnx`."""
    try:
        from ultralytics import YOLO
        from ultralytics import __version__ as ultralytics_version
    except ImportError:
        raise ConvertError("converting .pt weights needs the extra: pip install 'yolo-edge[convert]'") from None
    try:
        model = YOLO(str(weights))
    except Exception as error:  # torch and ultralytics raise many types for a bad checkpoint
        raise ConvertError(f"cannot load weights {weights}: {_first_line(error)}; is it an Ultralytics .pt?") from None
    if model.task != "detect":
        raise ConvertError(f"{weights} is a {model.task} model; yolo-edge supports detection models only")
    detect_head = model.model.model[-1]
    supports_end2end = getattr(detect_head, "one2one_cv2", None) is not None
    chosen_head = _pick_head(head, supports_end2end, weights)
    train_args = getattr(model.model, "args", {}) or {}
    size = imgsz or (train_args.get("imgsz") if isinstance(train_args, dict) else None) or 640
    # Export next to a copy of the weights: Ultralytics writes the .onnx beside its input.
    staged = workdir / "model.pt"
    shutil.copyfile(weights, staged)
    try:
        exported = YOLO(str(staged)).export(
            format="onnx",
            imgsz=size,
            opset=EXPORT_OPSET,
            simplify=True,
            dynamic=False,
            batch=1,
            device="cpu",
            nms=False if chosen_head == "end2end" else None,
            verbose=False,
        )
    except Exception as error:
        raise ConvertError(f"Ultralytics could not export {weights} to ONNX: {_first_line(error)}") from None
    onnx_path = Path(exported)
    return _describe_onnx(onnx_path, weights, "pt", chosen_head, ultralytics_version)


def adopt_onnx(weights: Path, workdir: Path, head: str) -> ExportedModel:
    """Take an ONNX model that Ultralytics exported: check it, copy it to `workdir/model.onnx`."""
    try:
        model = onnx.load(str(weights), load_external_data=False)
    except Exception as error:
        raise ConvertError(f"cannot read ONNX model {weights}: {_first_line(error)}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > EXPORT_OPSET:
        raise ConvertError(
            f"{weights} uses opset {opset}; onnxruntime quantizes opset {EXPORT_OPSET} and older. "
            f"Re-export it with opset={EXPORT_OPSET}, or pass the .pt"
        )
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if metadata.get("task", "detect") != "detect":
        raise ConvertError(f"{weights} is a {metadata['task']} model; yolo-edge supports detection models only")
    staged = workdir / "model.onnx"
    shutil.copyfile(weights, staged)
    output_dims = tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)
    actual_head = infer_head(output_dims, metadata)
    if head not in ("auto", actual_head):
        raise ConvertError(f"{weights} has a {actual_head} head; --head {head} needs a re-export from the .pt")
    return _describe_onnx(staged, weights, "onnx", actual_head, metadata.get("version"))


def _describe_onnx(
    onnx_path: Path, source: Path, kind: str, head: str, ultralytics_version: str | None
) -> ExportedModel:
    model = onnx.load(str(onnx_path), load_external_data=False)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[0] != 1 or 0 in dims:
        raise ConvertError(f"{source}: input shape {dims} is not a static (1, 3, H, W); export with dynamic=False")
    try:
        raw_names = ast.literal_eval(metadata.get("names", "{}"))
    except (ValueError, SyntaxError):
        raw_names = {}
    names = {int(k): str(v) for k, v in raw_names.items()} if isinstance(raw_names, dict) else {}
    if not names:
        output_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
        names = {i: str(i) for i in range(max(output_dims[1] - 4, 0))} if head == "classic" else {}
    stride = int(metadata.get("stride", 32))
    _write_metadata(
        onnx_path,
        {
            "yolo_edge_head": head,
            "task": "detect",
            "stride": str(stride),
            "imgsz": str([dims[2], dims[3]]),
            "names": str(names),
        },
    )
    return ExportedModel(
        onnx_path=onnx_path,
        model_name=source.stem,
        names=names,
        imgsz=(dims[2], dims[3]),
        stride=stride,
        head=head,
        source_path=source,
        source_sha256=sha256_file(source),
        source_kind=kind,
        ultralytics_version=ultralytics_version,
    )


def check_weights(weights: Path, imgsz: int | None) -> None:
    """Refuse weights that cannot be converted as given, before any other argument is looked at."""
    if not weights.is_file():
        raise ConvertError(f"weights {weights} do not exist; pass an Ultralytics .pt or an exported .onnx")
    if weights.suffix.lower() == ".onnx" and imgsz is not None:
        raise ConvertError("--imgsz applies to .pt weights only; an ONNX model has a fixed input size")


def export_model(weights: Path, workdir: Path, imgsz: int | None, head: str) -> ExportedModel:
    """Dispatch on the file type: .pt is exported, .onnx is adopted as it is."""
    check_weights(weights, imgsz)
    if weights.suffix.lower() == ".onnx":
        return adopt_onnx(weights, workdir, head)
    return export_pt(weights, workdir, imgsz, head)

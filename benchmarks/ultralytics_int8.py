"""Ultralytics' own INT8 ONNX export, run offline, as a contender for benchmarks.converter_bench.

    python -m benchmarks.ultralytics_int8 WEIGHTS --imgsz N --data CALIB.yaml --workdir DIR

converter_bench starts this module in a process of its own (run_export) and times it, as it
times `yolo-edge-convert`. The child calls what a user would call,

    YOLO(weights).export(format="onnx", quantize=8, data=CALIB.yaml, imgsz=N, device="cpu")

which in Ultralytics 8.4 exports the FP32 ONNX model (its default opset, simplified) and hands it
to `ultralytics.utils.export.onnx.onnx_int8_quantize`: onnxruntime's `quantize_static` with every
node but Conv, Gemm and MatMul excluded, and onnxruntime's defaults otherwise (QDQ, MinMax,
signed int8 activations and weights, one scale per tensor). It calibrates on the `val` split of
`data`, letterboxed by Ultralytics' own loader, so the calibration data.yaml written here points
both splits at the images our converter calibrated on.

Around it, only what keeps it offline and shows progress; neither changes the model it writes:
- YOLO_OFFLINE (no DNS probe, no pip "AutoUpdate" of a requirement it finds missing),
  YOLO_AUTOINSTALL=False, a config directory of its own (settings, no state shared with the
  user's), and `check_font` replaced by a no-op: the dataset check fetches Arial.ttf for plots
  that an export never draws.
- quantize_static's calibration reader is wrapped to print a line every PROGRESS_EVERY images
  (Ultralytics prints nothing while it calibrates, a minute or more at 640).
Memory needs no help: onnxruntime's MinMax calibrator keeps only each tensor's min and max per
image (ReduceMin/ReduceMax nodes), 1.1 GB peak RSS for 200 images at 256.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.tables import progress

PROGRESS_EVERY = 25


@dataclass(frozen=True)
class UltralyticsExport:
    """One run of Ultralytics' INT8 export. seconds: wall time of the process (export and calibration)."""

    onnx_path: Path
    seconds: float


def calibration_yaml_text(images: Path, names: Mapping[int, str]) -> str:
    """A data.yaml whose train and val splits are both `images`: Ultralytics calibrates on val."""
    folder = Path(images).resolve()
    lines = [f"path: {folder.parent}", f"train: {folder}", f"val: {folder}", "names:"]
    # Quoted: a class called "yes", "null" or "1" must stay a string in YAML.
    lines += [f"  {index}: {_yaml_quote(names[index])}" for index in sorted(names)]
    return "\n".join(lines) + "\n"


def _yaml_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_calibration_yaml(images: Path, names: Mapping[int, str], path: Path) -> Path:
    if not any(Path(images).iterdir()):
        raise ValueError(f"{images} holds no calibration images")
    path.write_text(calibration_yaml_text(images, names))
    return path


def offline_environment(base: Mapping[str, str], config_dir: Path) -> dict[str, str]:
    """The child's environment: Ultralytics offline, installing nothing, with its own settings directory."""
    return {
        **base,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "False",
        "YOLO_CONFIG_DIR": str(config_dir),
        "YOLO_VERBOSE": "False",
    }


class _CountingReader:
    """Ultralytics' calibration reader, passed through, printing how many images it has handed over."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._fed = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = self._reader.get_next()
        if feed is not None:
            self._fed += 1
            if self._fed % PROGRESS_EVERY == 0:
                progress(f"Ultralytics INT8: {self._fed} calibration images")
        return feed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def _counting(quantize_static: Any) -> Any:
    """quantize_static with its calibration reader counted; every argument as the caller gave it."""

    @functools.wraps(quantize_static)
    def wrapper(model_input: Any, model_output: Any, calibration_data_reader: Any, *args: Any, **kwargs: Any) -> Any:
        return quantize_static(model_input, model_output, _CountingReader(calibration_data_reader), *args, **kwargs)

    return wrapper


def export_int8(weights: Path, imgsz: int, data_yaml: Path, workdir: Path) -> Path:
    """In this process: Ultralytics' INT8 ONNX export of `weights`, written in `workdir`."""
    import onnxruntime.quantization
    import ultralytics.data.utils
    from ultralytics import YOLO

    # Ultralytics imports quantize_static inside onnx_int8_quantize, so patching the module attribute reaches it.
    onnxruntime.quantization.quantize_static = _counting(onnxruntime.quantization.quantize_static)
    ultralytics.data.utils.check_font = lambda *args, **kwargs: None
    # Ultralytics writes the .onnx beside its input; keep it out of the caller's folder.
    staged = workdir / Path(weights).name
    shutil.copyfile(weights, staged)
    exported = YOLO(str(staged)).export(format="onnx", quantize=8, data=str(data_yaml), imgsz=imgsz, device="cpu")
    if Path(exported).resolve() != exported_path(weights, workdir).resolve():
        raise RuntimeError(f"Ultralytics wrote {exported}, expected {exported_path(weights, workdir)}")
    return Path(exported)


def exported_path(weights: Path, workdir: Path) -> Path:
    """Where Ultralytics writes the INT8 model of workdir's copy of `weights`: beside it, stem + _int8.onnx."""
    return workdir / f"{Path(weights).stem}_int8.onnx"


def run_export(weights: Path, imgsz: int, data_yaml: Path, workdir: Path) -> UltralyticsExport:
    """Run export_int8 in a child process, offline, timing the whole command."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "ultralytics-config"
    config.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "benchmarks.ultralytics_int8",
        str(weights),
        "--imgsz",
        str(imgsz),
        "--data",
        str(data_yaml),
        "--workdir",
        str(workdir),
    ]
    progress(f"Ultralytics INT8 export: {weights.name} at {imgsz}")
    started = time.perf_counter()
    # Output passes through: the child's progress lines show as it goes.
    result = subprocess.run(command, env=offline_environment(os.environ, config), check=False)
    seconds = time.perf_counter() - started
    written = exported_path(weights, workdir)
    if result.returncode != 0 or not written.exists():
        raise SystemExit(f"converter_bench: Ultralytics' INT8 export of {weights} failed (exit {result.returncode})")
    return UltralyticsExport(written, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ultralytics_int8", description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--imgsz", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="calibration data.yaml (its val split)")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    progress(f"Ultralytics INT8: wrote {export_int8(args.weights, args.imgsz, args.data, args.workdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

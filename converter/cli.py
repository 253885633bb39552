"""yolo-edge-convert: Ultralytics weights -> validated FP32 + INT8 ONNX bundle."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.bundle import BundleError
from agent.pipeline.inference import ModelLoadError
from converter.archive import BundleArchive, write_archive
from converter.errors import ConvertError
from converter.export import HEAD_CHOICES
from converter.pipeline import PRECISION_CHOICES, ConvertRequest, convert
from converter.quantize import QuantizeOptions

EXIT_USER_ERROR = 2
EXIT_NOT_DEPLOYABLE = 1


def build_parser() -> argparse.ArgumentParser:
    defaults = QuantizeOptions()
    parser = argparse.ArgumentParser(
        prog="yolo-edge-convert",
        description="Convert Ultralytics YOLO detection weights into a validated FP32 + INT8 ONNX bundle.",
    )
    parser.add_argument("weights", type=Path, help="Ultralytics detection .pt (YOLOv8/YOLO11/YOLO26) or exported .onnx")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--calib", type=Path, help="calibration images: folder, video file or data.yaml (train split)")
    parser.add_argument("--val", type=Path, help="validation images: folder, video or data.yaml (val split)")
    parser.add_argument("--imgsz", type=int, help="input size in pixels (default: the size the model was trained at)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="both")
    parser.add_argument(
        "--head", choices=HEAD_CHOICES, default="auto", help="auto: end2end for YOLO26, classic otherwise"
    )
    parser.add_argument(
        "--max-map-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="largest INT8 mAP50-95 drop (points) that is still deployable (default 1.0)",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.9,
        help="without labels: least INT8-vs-FP32 agreement mAP50 that is deployable (default 0.9)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing bundle; write a failing one marked not deployable"
    )
    parser.add_argument(
        "--archive",
        action="store_true",
        help="also write BUNDLE.tar.gz and print its sha256, for `<prefix>/<device>/deploy`",
    )
    parser.add_argument("--calib-size", type=int, default=200, help="calibration images to use (default 200)")
    parser.add_argument("--val-size", type=int, default=300, help="validation images to use (default 300)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads for validation timing (default: all cores)")
    parser.add_argument("--activation-type", choices=("uint8", "int8"), default=defaults.activation_type)
    parser.add_argument(
        "--calibration-method", choices=("minmax", "entropy", "percentile"), default=defaults.calibration_method
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("YOLO_VERBOSE", "False")  # Ultralytics' banner is noise next to our progress bars
    for name in ("calib_size", "val_size"):
        if getattr(args, name) < 1:
            print(f"yolo-edge-convert: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return EXIT_USER_ERROR
    request = ConvertRequest(
        weights=args.weights,
        out=args.out,
        calib=args.calib,
        val=args.val,
        imgsz=args.imgsz,
        precision=args.precision,
        head=args.head,
        max_map_drop=args.max_map_drop,
        min_agreement=args.min_agreement,
        force=args.force,
        calib_size=args.calib_size,
        val_size=args.val_size,
        threads=args.threads,
        quantize=QuantizeOptions(activation_type=args.activation_type, calibration_method=args.calibration_method),
    )
    try:
        outcome = convert(request)
    except (ConvertError, BundleError, ModelLoadError) as error:
        print(f"yolo-edge-convert: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("yolo-edge-convert: interrupted; nothing was written", file=sys.stderr)
        return 130
    if outcome.bundle is None:
        print(
            f"yolo-edge-convert: not deployable: {outcome.verdict}. Nothing written; "
            "--force writes it marked not deployable",
            file=sys.stderr,
        )
        return EXIT_NOT_DEPLOYABLE
    state = "deployable" if outcome.deployable else "NOT deployable"
    print(f"wrote {outcome.bundle} ({state}: {outcome.verdict})")
    print((outcome.bundle / "report.md").read_text(), end="")
    if args.archive:
        try:
            archive = write_archive(outcome.bundle)
        except ConvertError as error:
            print(f"yolo-edge-convert: error: {error} (the bundle itself was written)", file=sys.stderr)
            return EXIT_USER_ERROR
        print_archive(archive)
    return 0


def print_archive(archive: BundleArchive) -> None:
    """The archive's sha256 and the command that deploys it, to fill in with the URL it is served at."""
    command = f'{{"url": "https://HOST/{archive.path.name}", "sha256": "{archive.sha256}"}}'
    print(f"archive: {archive.path} ({archive.bytes / 1e6:.1f} MB)")
    print(f"sha256: {archive.sha256}")
    print(f"deploy: mosquitto_pub -h BROKER -t yolo-edge/DEVICE/deploy -m '{command}'")


if __name__ == "__main__":
    sys.exit(main())

"""The bundle format: a directory holding models, their manifest and a report.

The converter writes bundles with the names defined here and the agent reads
them with `load_bundle`, which checks every file against its sha256 before a
model is handed to onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLE_FORMAT = "yolo-edge-bundle"
BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.md"
MODEL_FILE_NAMES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx"}
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


class BundleError(Exception):
    """A bundle is missing, malformed or fails verification; the message names the file."""


@dataclass(frozen=True)
class BundleFile:
    """One model file as the manifest records it (path relative to the bundle)."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Bundle:
    """A parsed manifest. imgsz: (height, width) pixels. names: class id -> label."""

    root: Path
    files: Mapping[str, BundleFile]
    names: Mapping[int, str]
    imgsz: tuple[int, int]
    head: str
    pad_value: int
    deployable: bool
    model_name: str
    manifest: Mapping[str, Any]

    def model_path(self, precision: str) -> Path:
        return self.root / self.files[precision].path


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(root: Path, relative: str) -> dict[str, Any]:
    """The manifest entry for a file inside the bundle directory `root`."""
    path = root / relative
    return {"path": relative, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _require(manifest: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in manifest:
        raise BundleError(f"{where}: missing key {key!r}; rebuild the bundle with yolo-edge-convert")
    value = manifest[key]
    if not isinstance(value, kind):
        raise BundleError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def load_bundle(root: Path) -> Bundle:
    """Parse `root/manifest.json`. Raises BundleError with a message naming the file."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory; pass a bundle written by yolo-edge-convert")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{manifest_path} does not exist; is {root} a yolo-edge bundle?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{manifest_path} is not valid JSON ({error}); rebuild the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not a {BUNDLE_FORMAT} manifest")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{manifest_path} has version {manifest.get('version')!r}; this agent reads {BUNDLE_VERSION}")
    files: dict[str, BundleFile] = {}
    for precision, entry in _require(manifest, "files", dict, manifest_path).items():
        if precision not in PRECISIONS or not isinstance(entry, dict):
            raise BundleError(f"{manifest_path}: unknown entry files.{precision}")
        relative = str(entry.get("path", ""))
        # A manifest must not point outside its own directory.
        if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise BundleError(f"{manifest_path}: files.{precision}.path {relative!r} must be a plain file name")
        files[precision] = BundleFile(relative, str(entry.get("sha256", "")), int(entry.get("bytes", -1)))
    if not files:
        raise BundleError(f"{manifest_path}: lists no model files")
    imgsz = _require(manifest, "imgsz", list, manifest_path)
    preprocess = manifest.get("preprocess", {})
    return Bundle(
        root=root,
        files=files,
        names={int(k): str(v) for k, v in _require(manifest, "names", dict, manifest_path).items()},
        imgsz=(int(imgsz[0]), int(imgsz[-1])),
        head=str(_require(manifest, "head", str, manifest_path)),
        pad_value=int(preprocess.get("pad_value", 114)),
        deployable=bool(manifest.get("deployable", False)),
        model_name=str(manifest.get("model_name", root.name)),
        manifest=manifest,
    )


def verify_model_file(bundle: Bundle, precision: str) -> Path:
    """Check size and sha256 of one model file; return its path or raise BundleError naming it."""
    if precision not in bundle.files:
        available = ", ".join(bundle.files)
        raise BundleError(f"bundle {bundle.root} has no {precision} model (it has: {available})")
    entry = bundle.files[precision]
    path = bundle.root / entry.path
    if not path.is_file():
        raise BundleError(f"{path} is missing from the bundle; copy the whole bundle directory again")
    if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
        raise BundleError(f"{path} does not match its sha256 in the manifest; the file is corrupt or was changed")
    return path

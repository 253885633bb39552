"""The bundle format: a directory holding models, their manifest and a report.

The converter writes bundles with the names defined here and the agent reads
them with `load_bundle`, which checks every file against its sha256 before a
model is handed to onnxruntime.

The manifest is untrusted input (a deployment downloads it): `load_bundle` validates every key
the agent reads, whole, before building a Bundle, and anything wrong is one BundleError that
names manifest.json and the key. Keys the agent does not read (validation figures, tool
versions, ...) are left alone, so a newer converter can add some.
"""

from __future__ import annotations

import hashlib
import json
import re
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
# What a manifest may declare, held here (not in pipeline/) since the bundle format sits below the
# pipeline: the converter and the deployer read bundles without the frame loop's modules.
HEAD_KINDS: tuple[str, ...] = ("classic", "end2end")  # classic: (1, 4+nc, N) output; end2end: (1, N, 6)
DEFAULT_PAD_VALUE = 114  # the letterbox's grey, Ultralytics' own

_SHA256 = re.compile(r"[0-9a-f]{64}")  # sha256_file's hexdigest: an upper-case one would never match
# str(int), as the converter writes it (int() alone takes " 1" and "1_0"); six digits keep int() in its limit.
_CLASS_ID = re.compile(r"0|[1-9][0-9]{0,5}")
_REBUILD = "rebuild the bundle with yolo-edge-convert"


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


# -- validating the manifest ------------------------------------------------------------------------


def _shown(value: object) -> str:
    """A value for an error message: scalars as repr (escaped, so one line), short; containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a number


def _is_text(value: object) -> bool:
    """A non-empty single-line string: labels and names end up in log lines and MQTT payloads."""
    return isinstance(value, str) and bool(value.strip()) and value.isprintable()


def _is_file_name(value: object) -> bool:
    """A plain file name in the bundle directory: a manifest must not point outside it."""
    return _is_text(value) and value not in (".", "..") and "/" not in value and "\\" not in value  # type: ignore[operator]


class _Manifest:
    """The manifest's dict and where it came from; `fail` makes the one-line BundleError naming a key."""

    def __init__(self, body: dict[str, Any], where: Path) -> None:
        self.body, self.where = body, where

    def fail(self, key: str, problem: str) -> BundleError:
        return BundleError(f"{self.where}: {key} {problem}; {_REBUILD}")

    def required(self, key: str) -> Any:
        if key not in self.body:
            raise BundleError(f"{self.where}: missing key {key!r}; {_REBUILD}")
        return self.body[key]

    def object(self, key: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object, not {_shown(value)}")
        return value


def _files(manifest: _Manifest) -> dict[str, BundleFile]:
    files: dict[str, BundleFile] = {}
    for precision, entry in manifest.object("files", manifest.required("files")).items():
        if precision not in PRECISIONS:
            known = ", ".join(PRECISIONS)
            raise manifest.fail("files", f"has an unknown precision {_shown(precision)} (known: {known})")
        key = f"files.{precision}"
        entry = manifest.object(key, entry)
        path, sha256, size = entry.get("path"), entry.get("sha256"), entry.get("bytes")
        if not _is_file_name(path):
            raise manifest.fail(f"{key}.path", f"is {_shown(path)}; it must be a file name inside the bundle")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise manifest.fail(f"{key}.sha256", f"is {_shown(sha256)}; it must be 64 lower-case hex digits")
        if not _is_int(size) or size < 0:
            raise manifest.fail(f"{key}.bytes", f"is {_shown(size)}; it must be a whole number >= 0")
        files[precision] = BundleFile(path, sha256, size)
    if not files:
        raise manifest.fail("files", "lists no model files")
    return files


def _names(manifest: _Manifest) -> dict[int, str]:
    body = manifest.object("names", manifest.required("names"))
    names: dict[int, str] = {}
    for class_id, label in body.items():
        if not _CLASS_ID.fullmatch(class_id):
            raise manifest.fail("names", f"has the key {_shown(class_id)}; class ids are 0, 1, 2, ...")
        if not _is_text(label):
            raise manifest.fail(f"names[{class_id!r}]", f"is {_shown(label)}; a label is a non-empty line of text")
        names[int(class_id)] = label
    if not names:
        raise manifest.fail("names", "holds no labels")
    # The model's outputs are indexed 0..n-1 by class: a gap would be a detection without a label.
    if sorted(names) != list(range(len(names))):
        raise manifest.fail("names", f"must hold the class ids 0..n-1 with no gap (it has {len(names)} labels)")
    return names


def _imgsz(manifest: _Manifest) -> tuple[int, int]:
    # Any positive size: the converter writes what the ONNX input has, and an imported ONNX need
    # not be a multiple of 32. The first inference after a deployment checks it against the model.
    value = manifest.required("imgsz")
    if not isinstance(value, list) or len(value) != 2 or not all(_is_int(side) and side > 0 for side in value):
        raise manifest.fail("imgsz", f"is {_shown(value)}; it must be [height, width], two whole numbers > 0")
    return value[0], value[1]


def _pad_value(manifest: _Manifest) -> int:
    preprocess = manifest.object("preprocess", manifest.body.get("preprocess", {}))
    pad_value = preprocess.get("pad_value", DEFAULT_PAD_VALUE)
    if not _is_int(pad_value) or not 0 <= pad_value <= 255:
        raise manifest.fail("preprocess.pad_value", f"is {_shown(pad_value)}; it must be a whole number 0..255")
    return pad_value


def parse_manifest(body: object, root: Path) -> Bundle:
    """The Bundle a parsed manifest.json describes, every key the agent reads checked; else BundleError."""
    where = root / MANIFEST_NAME
    if not isinstance(body, dict) or body.get("format") != BUNDLE_FORMAT:
        raise BundleError(f'{where} is not a {BUNDLE_FORMAT} manifest (no "format": {BUNDLE_FORMAT!r})')
    version = body.get("version")
    if not _is_int(version) or version != BUNDLE_VERSION:
        shown = _shown(version)
        raise BundleError(f"{where} has version {shown}; this agent reads {BUNDLE_VERSION}: use a matching converter")
    manifest = _Manifest(body, where)
    head = manifest.required("head")
    if head not in HEAD_KINDS:
        raise manifest.fail("head", f"is {_shown(head)}; it must be one of {', '.join(HEAD_KINDS)}")
    deployable = body.get("deployable", False)
    if not isinstance(deployable, bool):
        raise manifest.fail("deployable", f"is {_shown(deployable)}; it must be true or false")
    model_name = body.get("model_name", root.name)
    if not _is_text(model_name):
        raise manifest.fail("model_name", f"is {_shown(model_name)}; it must be a non-empty line of text")
    return Bundle(
        root=root,
        files=_files(manifest),
        names=_names(manifest),
        imgsz=_imgsz(manifest),
        head=head,
        pad_value=_pad_value(manifest),
        deployable=deployable,
        model_name=model_name,
        manifest=body,
    )


def load_bundle(root: Path) -> Bundle:
    """Parse and validate `root/manifest.json`. Raises BundleError with a message naming the file."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory; pass a bundle written by yolo-edge-convert")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{manifest_path} does not exist; is {root} a yolo-edge bundle?") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BundleError(f"{manifest_path} cannot be read ({_first_line(error)}); {_REBUILD}") from None
    try:
        body = json.loads(text)
    # ValueError: bad JSON, and integers past Python's digit limit; RecursionError: nesting too deep.
    except (ValueError, RecursionError) as error:
        raise BundleError(f"{manifest_path} is not valid JSON ({_first_line(error)}); {_REBUILD}") from None
    return parse_manifest(body, root)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def verify_model_file(bundle: Bundle, precision: str) -> Path:
    """Check size and sha256 of one model file; return its path or raise BundleError naming it."""
    if precision not in bundle.files:
        available = ", ".join(bundle.files)
        raise BundleError(f"bundle {bundle.root} has no {precision} model (it has: {available})")
    entry = bundle.files[precision]
    path = bundle.root / entry.path
    if not path.is_file():
        raise BundleError(f"{path} is missing from the bundle; copy the whole bundle directory again")
    try:
        matches = path.stat().st_size == entry.bytes and sha256_file(path) == entry.sha256
    except OSError as error:
        raise BundleError(f"{path} cannot be read ({_first_line(error)})") from None
    if not matches:
        raise BundleError(f"{path} does not match its sha256 in the manifest; the file is corrupt or was changed")
    return path

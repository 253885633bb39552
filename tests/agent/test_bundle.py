"""manifest.json is untrusted input: every key the agent reads is checked, and anything wrong is one BundleError.

The property test over random manifests is in tests/fault/test_fuzz.py; here are the cases that
once crashed or were let through, each with the key its message must name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST_NAME, Bundle, BundleError, load_bundle

SHA = "ab" * 32


def converter_manifest() -> dict[str, Any]:
    """A manifest with the keys converter/pipeline.py writes (the figures it records are left out)."""
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created": "2025-01-01T00:00:00+00:00",
        "model_name": "shapes",
        "task": "detect",
        "files": {
            "fp32": {"path": "model.fp32.onnx", "sha256": SHA, "bytes": 1000},
            "int8": {"path": "model.int8.onnx", "sha256": "cd" * 32, "bytes": 400},
        },
        "names": {"0": "circle", "1": "square", "2": "triangle", "3": "star"},
        "imgsz": [320, 320],
        "stride": 32,
        "head": "classic",
        "preprocess": {"letterbox": True, "pad_value": 114, "color": "RGB", "scale": 1 / 255, "layout": "NCHW"},
        "quantization": None,
        "calibration": None,
        "validation": {"images": 60},
        "deployable": True,
        "verdict": "ok",
        "tools": {"onnxruntime": "1.20"},
    }


def write(root: Path, manifest: object) -> Path:
    root.mkdir(exist_ok=True)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    return root


def test_the_converters_manifest_loads(tmp_path: Path) -> None:
    bundle = load_bundle(write(tmp_path / "b", converter_manifest()))
    assert isinstance(bundle, Bundle)
    assert bundle.names == {0: "circle", 1: "square", 2: "triangle", 3: "star"}
    assert (bundle.imgsz, bundle.head, bundle.pad_value, bundle.deployable) == ((320, 320), "classic", 114, True)
    assert bundle.files["int8"].bytes == 400 and bundle.model_name == "shapes"


def test_optional_keys_take_their_defaults(tmp_path: Path) -> None:
    manifest = converter_manifest()
    for key in ("preprocess", "deployable", "model_name"):
        del manifest[key]
    bundle = load_bundle(write(tmp_path / "b", manifest))
    assert (bundle.pad_value, bundle.deployable, bundle.model_name) == (114, False, "b")


def setter(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """Set the dotted key `path` (`files.fp32.bytes`) of a manifest to `value`."""

    def change(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = manifest
        for parent in parents:
            target = target[parent]
        target[last] = value

    return change


def dropper(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest.pop(key)


NAMES = {"0": "circle", "1": "square"}
# (id, change, what the one-line message must hold)
BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("names key not a number", setter("names", {"a": "circle"}), "names has the key 'a'"),
    ("names key with a space", setter("names", {" 0": "circle"}), "names has the key ' 0'"),
    ("names with a gap", setter("names", {"0": "circle", "2": "square"}), "names must hold the class ids 0..n-1"),
    ("names empty", setter("names", {}), "names holds no labels"),
    ("names not an object", setter("names", ["circle"]), "names must be an object"),
    ("label empty", setter("names", {**NAMES, "1": ""}), "names['1'] is ''"),
    ("label of two lines", setter("names", {**NAMES, "1": "a\nb"}), "names['1'] is 'a\\nb'"),
    ("label a number", setter("names", {**NAMES, "1": 7}), "names['1'] is 7"),
    ("names missing", dropper("names"), "missing key 'names'"),
    ("preprocess null", setter("preprocess", None), "preprocess must be an object, not null"),
    ("pad_value too big", setter("preprocess.pad_value", 300), "preprocess.pad_value is 300"),
    ("pad_value a string", setter("preprocess.pad_value", "114"), "preprocess.pad_value is '114'"),
    ("imgsz one number", setter("imgsz", [640]), "imgsz is an array; it must be [height, width]"),
    ("imgsz three numbers", setter("imgsz", [640, 640, 3]), "imgsz is an array"),
    ("imgsz zero", setter("imgsz", [0, 640]), "imgsz is an array"),
    ("imgsz strings", setter("imgsz", ["640", "640"]), "imgsz is an array"),
    ("imgsz floats", setter("imgsz", [640.5, 640]), "imgsz is an array"),
    ("imgsz a number", setter("imgsz", 640), "imgsz is 640"),
    ("imgsz missing", dropper("imgsz"), "missing key 'imgsz'"),
    ("head unknown", setter("head", "yolo"), "head is 'yolo'; it must be one of classic, end2end"),
    ("head missing", dropper("head"), "missing key 'head'"),
    ("deployable a string", setter("deployable", "false"), "deployable is 'false'; it must be true or false"),
    ("model_name a number", setter("model_name", 5), "model_name is 5"),
    ("model_name of two lines", setter("model_name", "a\nb"), "model_name is 'a\\nb'"),
    ("files empty", setter("files", {}), "files lists no model files"),
    ("files unknown precision", setter("files.fp16", {}), "files has an unknown precision 'fp16'"),
    ("file entry null", setter("files.fp32", None), "files.fp32 must be an object, not null"),
    ("file path in a directory", setter("files.fp32.path", "sub/model.onnx"), "files.fp32.path is 'sub/model.onnx'"),
    ("file path outside", setter("files.fp32.path", "../model.onnx"), "files.fp32.path is '../model.onnx'"),
    ("file path absolute", setter("files.fp32.path", "/etc/passwd"), "files.fp32.path is '/etc/passwd'"),
    ("file path a number", setter("files.fp32.path", 5), "files.fp32.path is 5"),
    ("sha256 short", setter("files.fp32.sha256", "abc"), "files.fp32.sha256 is 'abc'"),
    ("sha256 upper case", setter("files.fp32.sha256", "AB" * 32), "files.fp32.sha256 is 'ABABAB"),
    ("sha256 missing", lambda m: m["files"]["fp32"].pop("sha256"), "files.fp32.sha256 is null"),
    ("bytes a string", setter("files.fp32.bytes", "x"), "files.fp32.bytes is 'x'"),
    ("bytes null", setter("files.fp32.bytes", None), "files.fp32.bytes is null"),
    ("bytes negative", setter("files.fp32.bytes", -1), "files.fp32.bytes is -1"),
    ("bytes true", setter("files.fp32.bytes", True), "files.fp32.bytes is True"),
    ("version true", setter("version", True), "has version True; this agent reads 1"),
    ("version 2", setter("version", 2), "has version 2; this agent reads 1"),
    ("format other", setter("format", "other"), "is not a yolo-edge-bundle manifest"),
]


@pytest.mark.parametrize(("change", "fragment"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_a_broken_manifest_is_one_bundle_error_naming_the_key(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    manifest = copy.deepcopy(converter_manifest())
    change(manifest)
    with pytest.raises(BundleError) as caught:
        load_bundle(write(tmp_path / "b", manifest))
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "b" / MANIFEST_NAME)), message
    assert fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[]", "is not a yolo-edge-bundle manifest"),
        ("null", "is not a yolo-edge-bundle manifest"),
        ("{", "is not valid JSON"),
        ("[" * 100_000, "is not valid JSON"),  # nesting past Python's recursion limit
        ('{"version": 1' + "0" * 5000 + "}", "is not valid JSON"),  # past Python's int digit limit
    ],
    ids=["array", "null", "truncated", "deep nesting", "huge number"],
)
def test_a_manifest_that_is_not_a_manifest_object_is_one_bundle_error(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(BundleError, match=fragment) as caught:
        load_bundle(tmp_path)
    assert MANIFEST_NAME in str(caught.value) and "\n" not in str(caught.value)


def test_an_unreadable_manifest_is_one_bundle_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).mkdir()  # a directory where the file should be: reading it is an OSError
    with pytest.raises(BundleError, match=rf"{MANIFEST_NAME} cannot be read"):
        load_bundle(tmp_path)

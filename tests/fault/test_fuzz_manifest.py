"""A bundle's manifest.json, fuzzed: load_bundle returns a sound Bundle or raises one BundleError naming the file.

A deployment downloads the manifest, so it is input from outside like the command topics
(test_fuzz.py). The documents are the converter's manifest with keys dropped, replaced by
wrong types and bad values, or added; random JSON; and random bytes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agent.bundle import HEAD_KINDS, MANIFEST_NAME, PRECISIONS, Bundle, BundleError, load_bundle
from tests.agent.test_bundle import converter_manifest
from tests.fault.fuzzing import FUZZ, json_bytes, json_values, one_line, reaches, text

pytestmark = pytest.mark.fault

Key = str | int  # a dict key or a list index
# Values close to the ones the manifest holds, where random JSON is rarely near the edge.
EDGES = st.sampled_from(
    [
        *(None, True, False, 0, -1, 1, 31, 32, 255, 256, 2**63, 0.5, float("nan"), "", "a\nb", "0", "01", " 1"),
        *([], {}, [640], [640, 640], [0, 640], [640, 640, 3], ["640", "640"], "classic", "end2end", "yolo"),
        *("ab" * 32, "AB" * 32, "model.fp32.onnx", "../model.fp32.onnx", "/etc/passwd", "sub/m.onnx", ".", "fp16"),
        *({"0": "a"}, {"1": "a"}, {"0": ""}, {"path": "m.onnx", "sha256": "ab" * 32, "bytes": 1}),
    ]
)
# Copied: a later change may edit the value in place, and EDGES hands out the same object every time.
values = (EDGES | json_values).map(copy.deepcopy)


def key_paths(value: object, prefix: tuple[Key, ...] = ()) -> Iterator[tuple[Key, ...]]:
    """The path of every value inside `value` (the whole of it first): dict keys and list indexes."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from key_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from key_paths(child, (*prefix, index))


@st.composite
def mutated_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """The converter's manifest after 0..3 changes: a value dropped, replaced, or a key added beside it."""
    manifest = copy.deepcopy(converter_manifest())
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(key_paths(manifest))[1:]))
        *parents, last = path
        container: Any = manifest
        for key in parents:
            container = container[key]
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            del container[last]
        elif action == "replace":
            container[last] = draw(values)
        elif isinstance(container, dict):
            container[draw(text | st.sampled_from(list(manifest)))] = draw(values)
        else:
            container.append(draw(values))
    return manifest


documents = st.one_of(
    mutated_manifests().map(json_bytes),
    json_values.map(json_bytes),
    st.binary(max_size=200),
)


def load(root: Path, document: bytes) -> Bundle:
    root.mkdir(exist_ok=True)
    (root / MANIFEST_NAME).write_bytes(document)
    return load_bundle(root)


def outcome(root: Path, document: bytes) -> str:
    try:
        load(root, document)
    except BundleError:
        return "rejected"
    return "accepted"


def sound(bundle: Bundle) -> None:
    """What the agent relies on once load_bundle has returned."""
    assert bundle.files and set(bundle.files) <= set(PRECISIONS)
    for entry in bundle.files.values():
        assert "/" not in entry.path and entry.path not in ("", ".", "..")
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and type(entry.bytes) is int and entry.bytes >= 0
    assert sorted(bundle.names) == list(range(len(bundle.names))) and bundle.names
    assert all(isinstance(label, str) and label.strip() and "\n" not in label for label in bundle.names.values())
    assert len(bundle.imgsz) == 2 and all(type(side) is int and side > 0 for side in bundle.imgsz)
    assert bundle.head in HEAD_KINDS and type(bundle.pad_value) is int and 0 <= bundle.pad_value <= 255
    assert type(bundle.deployable) is bool and isinstance(bundle.model_name, str) and bundle.model_name.strip()


@FUZZ
@given(document=documents)
@example(document=b'{"format": "yolo-edge-bundle", "version": 1, "names": {"a": "x"}}')
@example(document=json_bytes({**converter_manifest(), "names": {"zero": "circle"}}))
@example(document=json_bytes({**converter_manifest(), "preprocess": None}))
@example(document=json_bytes({**converter_manifest(), "imgsz": [640]}))
@example(document=json_bytes({**converter_manifest(), "files": {"fp32": {"path": "m.onnx", "bytes": None}}}))
@example(document=b"[" * 100_000)
@example(document=b'{"version": 1' + b"0" * 5000 + b"}")
def test_a_manifest_gives_a_sound_bundle_or_one_bundle_error(tmp_path: Path, document: bytes) -> None:
    try:
        bundle = load(tmp_path / "b", document)
    except BundleError as error:
        one_line(str(error))
        assert MANIFEST_NAME in str(error), str(error)
    else:
        sound(bundle)


@pytest.mark.parametrize("wanted", ["accepted", "rejected"])
def test_the_manifest_strategy_reaches_both_outcomes(tmp_path: Path, wanted: str) -> None:
    reaches(documents, lambda document: outcome(tmp_path / "b", document), wanted)
    reaches(mutated_manifests().map(json_bytes), lambda document: outcome(tmp_path / "b", document), wanted)

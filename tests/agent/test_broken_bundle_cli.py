"""yolo-edge-agent with a bundle whose manifest.json is broken: one error line naming it, exit 2, no traceback.

And with a broken *deployed* bundle recorded in the state directory: the agent starts on
`[model] path` and says so in one warning. The agent runs as a subprocess, as a user runs it,
on a tiny ONNX model (tests/agent/deploy_helpers.py) and a one-image folder; no broker is
needed, since the model is loaded before the agent connects.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.bundle import MANIFEST_NAME
from agent.control.deploy.active_bundle import ActiveBundle, write_active
from tests.agent.agent_process import agent_env, run_agent
from tests.agent.deploy_helpers import reshape_model, write_bundle
from tests.broker import free_port

HW = (64, 64)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "frames"
    images.mkdir()
    assert cv2.imwrite(str(images / "000.jpg"), np.full((48, 80, 3), 90, np.uint8))
    return images


@pytest.fixture
def good_bundle(tmp_path: Path) -> Path:
    model = reshape_model(tmp_path / "m.onnx", HW, (1, 8, 3 * 64 * 64 // 8))  # 4 labels: (1, 4 + 4, N)
    return write_bundle(tmp_path / "good", model, HW, "good")


def break_manifest(bundle: Path, **changes: object) -> Path:
    path = bundle / MANIFEST_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return bundle


def agent(tmp_path: Path, command: list[str], source: Path, model: Path) -> tuple[int, str, str]:
    # A port nothing listens on: a run that got past the model would fail there, with another message.
    flags = ["--source", str(source), "--model", str(model), "--mqtt-host", "127.0.0.1", "--mqtt-port"]
    result = run_agent([*command, *flags, str(free_port())], agent_env(tmp_path / "state"), tmp_path)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(
    "command", [["check"], ["run"], ["run", "--dry-run"], ["bench", "--frames", "1"]], ids=" ".join
)
def test_a_broken_manifest_is_one_error_line_and_exit_2(
    tmp_path: Path, folder: Path, good_bundle: Path, command: list[str]
) -> None:
    broken = break_manifest(good_bundle, names={"zero": "circle"})
    code, _, stderr = agent(tmp_path, command, folder, broken)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("yolo-edge-agent:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"yolo-edge-agent: error: {broken / MANIFEST_NAME}: names has the key 'zero'")


def test_a_broken_deployed_bundle_falls_back_to_model_path(tmp_path: Path, folder: Path, good_bundle: Path) -> None:
    state = tmp_path / "state"
    deployed = state / "bundles" / f"deploy-{'cd' * 8}"
    shutil.copytree(good_bundle, deployed)
    break_manifest(deployed, preprocess=None)
    write_active(state, ActiveBundle(deployed, "cd" * 32, "https://h/b.tar.gz", 1.0))
    code, stdout, stderr = agent(tmp_path, ["run", "--dry-run"], folder, good_bundle)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    fallbacks = [line for line in stderr.splitlines() if "falling back to [model] path" in line]
    assert len(fallbacks) == 1, stderr
    assert f"{deployed / MANIFEST_NAME}: preprocess must be an object, not null" in fallbacks[0]
    assert '"name":"good"' in stdout.replace(" ", ""), "the detections come from the configured bundle"

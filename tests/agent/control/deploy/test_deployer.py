"""Deployments in one process: the first-inference check, the start-up choice, and the frame loop's switch.

The frame loop runs for real (AgentLoop with the JSON-lines publisher, which is a real Publisher),
on generated frames, with tiny ONNX models built here, so each test takes well under a second
of CPU. The agent against a real broker is tests/agent/control/deploy/test_deploy_e2e.py.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.bundle import BundleError
from agent.control.commands import CommandInbox
from agent.control.deploy.active_bundle import RECORD_NAME, ActiveBundle, load_startup_model, read_active, write_active
from agent.control.deploy.deployer import PROBATION_FRAMES, Deployer, DeploySettings
from agent.control.deploy.download import DownloadLimits
from agent.control.deploy.probe import ProbeError, probe
from agent.control.remote_settings import RuntimeSettings
from agent.control.response_topics import ResponseTopics
from agent.pipeline.detector import Detector, load_detector
from agent.pipeline.frames import Frame
from agent.runtime.loop import LoopSettings, RemoteControl
from agent.transport.publisher import ReplyTo, StdoutPublisher
from converter.archive import write_archive
from tests.agent.deploy_helpers import HttpFiles, reshape_model, write_bundle
from tests.agent.loop_rig import frame_loop

HW = (64, 64)
GOOD_SHAPE = (1, 8, 3 * 64 * 64 // 8)  # 4 labels: (1, 4 + 4, N)


def load(path: Path) -> Detector:
    return load_detector(path, "fp32", 1)[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny ONNX models: one whose output fits 4 labels, and garbage ones."""
    folder = tmp_path_factory.mktemp("models")
    return {
        "good": reshape_model(folder / "good.onnx", HW, GOOD_SHAPE),
        "classes": reshape_model(folder / "classes.onnx", HW, (1, 6, 2048)),
        "nan": reshape_model(folder / "nan.onnx", HW, GOOD_SHAPE, nan=True),
        "e2e": reshape_model(folder / "e2e.onnx", HW, (1, 2048, 6)),
    }


def bundle(tmp_path: Path, models: dict[str, Path], model: str = "good", name: str = "v1", **kwargs: object) -> Path:
    return write_bundle(tmp_path / name, models[model], HW, name, **kwargs)  # type: ignore[arg-type]


FRAME = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)

# -- the first inference ------------------------------------------------------------------------------


def test_a_sound_model_passes_its_first_inference(tmp_path: Path, models: dict[str, Path]) -> None:
    probe(load(bundle(tmp_path, models)), FRAME, HW)


@pytest.mark.parametrize(
    ("model", "head", "fragment"),
    [
        ("classes", "classic", "the model's output has shape (1, 6, 2048); its 4 labels need (1, 8, N)"),
        ("nan", "classic", "NaN or infinite"),
        ("good", "end2end", "an end-to-end head needs (1, N, 6)"),
    ],
)
def test_garbage_output_fails_the_first_inference(
    tmp_path: Path, models: dict[str, Path], model: str, head: str, fragment: str
) -> None:
    detector = load(bundle(tmp_path, models, model, head=head))
    with pytest.raises(ProbeError) as caught:
        probe(detector, FRAME, HW)
    assert fragment in str(caught.value)


def test_a_model_of_another_size_than_its_manifest_fails(tmp_path: Path, models: dict[str, Path]) -> None:
    detector = load(write_bundle(tmp_path / "b", models["good"], (320, 320)))
    with pytest.raises(ProbeError, match="the model's input is 64x64; the manifest says 320x320"):
        probe(detector, FRAME, (320, 320))


# -- which model the agent starts with ------------------------------------------------------------------


def record(state: Path, source: Path, sha: str = "cd" * 32) -> Path:
    """A deployed bundle in `state` as a deployment leaves it, recorded as the active one."""
    import shutil

    dest = state / "bundles" / f"deploy-{sha[:16]}"
    shutil.copytree(source, dest)
    write_active(state, ActiveBundle(dest, sha, "https://h/b.tar.gz", 1.0))
    return dest


def test_start_up_prefers_the_recorded_bundle(tmp_path: Path, models: dict[str, Path]) -> None:
    configured = bundle(tmp_path, models, name="configured")
    deployed = record(tmp_path / "state", bundle(tmp_path, models, name="deployed"))
    detector, startup = load_startup_model(tmp_path / "state", True, configured, load)
    assert detector.identity.name == "deployed" and startup.path == deployed
    assert startup.deployed is not None and startup.fallback_reason is None
    detector, startup = load_startup_model(tmp_path / "state", False, configured, load)
    assert detector.identity.name == "configured" and startup.record is None, "[deploy] enabled = false: config"


def test_start_up_falls_back_when_the_recorded_bundle_no_longer_verifies(
    tmp_path: Path, models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    configured = bundle(tmp_path, models, name="configured")
    deployed = record(tmp_path / "state", bundle(tmp_path, models, name="deployed"))
    with open(deployed / "model.fp32.onnx", "ab") as stream:
        stream.write(b"\0")
    detector, startup = load_startup_model(tmp_path / "state", True, configured, load)
    assert detector.identity.name == "configured" and startup.path == configured
    assert startup.deployed is None and startup.record is not None
    assert "does not match its sha256" in (startup.fallback_reason or "")
    assert "falling back to [model] path" in caplog.text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("names", {"zero": "circle"}),
        ("preprocess", None),
        ("imgsz", [64]),
        ("files", {"fp32": {"path": "model.fp32.onnx", "sha256": "ab" * 32, "bytes": None}}),
    ],
)
def test_start_up_falls_back_when_the_recorded_bundles_manifest_is_broken(
    tmp_path: Path, models: dict[str, Path], caplog: pytest.LogCaptureFixture, key: str, value: object
) -> None:
    configured = bundle(tmp_path, models, name="configured")
    deployed = record(tmp_path / "state", bundle(tmp_path, models, name="deployed"))
    manifest = json.loads((deployed / "manifest.json").read_text())
    (deployed / "manifest.json").write_text(json.dumps({**manifest, key: value}))
    with caplog.at_level("INFO", logger="yolo_edge.deploy"):
        detector, startup = load_startup_model(tmp_path / "state", True, configured, load)
    assert detector.identity.name == "configured" and startup.path == configured and startup.deployed is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert f"{deployed / 'manifest.json'}: {key}" in warnings[0] and "falling back to [model] path" in warnings[0]
    assert "\n" not in warnings[0]


def test_without_a_record_the_config_model_runs(tmp_path: Path, models: dict[str, Path]) -> None:
    configured = bundle(tmp_path, models, name="configured")
    detector, startup = load_startup_model(tmp_path / "state", True, configured, load)
    assert detector.identity.name == "configured" and startup.record is None


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"sha256": "x"}', '{"path": "../../etc", "sha256": "x"}', '{"path": 5, "sha256": "x"}']
)
def test_a_damaged_or_tampered_record_is_ignored(tmp_path: Path, text: str) -> None:
    (tmp_path / RECORD_NAME).write_text(text)
    assert read_active(tmp_path) is None


def test_an_unloadable_config_model_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        load_startup_model(tmp_path / "state", True, tmp_path / "missing", load)


# -- deployments through the frame loop -------------------------------------------------------------------


class Frames:
    """A camera that never ends: a new frame every few milliseconds until `stop` is set."""

    ended = False

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.count = 0

    def read(self, timeout: float) -> Frame | None:
        if self.stop.wait(0.005):
            return None
        self.count += 1
        return Frame(FRAME, self.count, time.time(), time.monotonic())

    def health(self) -> object:
        return None


class FailingDetector(Detector):
    """Passes its first inference (which does not go through detect()) and fails in the frame loop."""

    def detect(self, image_bgr: np.ndarray) -> tuple:
        raise RuntimeError("out of memory in the new model")


def failing(path: Path) -> Detector:
    good = load(path)
    return FailingDetector(good.model, good.identity, good.names, good.postprocessor.head, 114, good.settings)


class Deployment:
    """An AgentLoop on endless frames with a Deployer, an HTTP server for archives, and what got published."""

    def __init__(self, tmp_path: Path, models: dict[str, Path], keep: int = 3, runtime: RuntimeSettings | None = None):
        self.tmp_path, self.models = tmp_path, models
        self.state = tmp_path / "state"
        self.files = HttpFiles()
        self.states: list[tuple[dict, bool]] = []
        self.loaders = {"normal": load}
        self.loader = "normal"
        self.stop = threading.Event()
        self.output = io.StringIO()
        configured = bundle(tmp_path, models, name="configured")
        detector, startup = load_startup_model(self.state, True, configured, load)
        limits = DownloadLimits(1 << 20, timeout_s=2, max_duration_s=10, allow_http=True)

        def publish(payload: bytes, retain: bool) -> None:
            self.states.append((json.loads(payload), retain))

        self.routed: list[tuple[ReplyTo, dict]] = []  # answers sent to MQTT 5 response topics
        self.deployer = Deployer(
            DeploySettings(self.state, limits, keep),
            lambda p: self.loaders[self.loader](p),
            publish,
            startup,
            ResponseTopics("yolo-edge/t", lambda route, payload: self.routed.append((route, json.loads(payload)))),
        )
        self.replies: list[dict] = []
        self.inbox = CommandInbox(detector.names, lambda payload: self.replies.append(json.loads(payload)))
        self.loop = frame_loop(
            Frames(self.stop),
            detector,
            StdoutPublisher("yolo-edge/t", self.output),
            LoopSettings(stats_interval=60),
            control=RemoteControl(runtime or RuntimeSettings(), self.inbox),
            deployments=self.deployer,
            stop=self.stop,
        )
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def deploy(
        self,
        name: str,
        model: str = "good",
        request_id: str | None = None,
        reply_to: ReplyTo | None = None,
        **kwargs: object,
    ) -> dict:
        """Serve a bundle named `name`, send its deploy command, return the final state."""
        root = self.tmp_path / name
        archive = write_archive(root if root.exists() else bundle(self.tmp_path, self.models, model, name, **kwargs))
        url = self.files.add(f"/{name}.tar.gz", archive.path.read_bytes())
        before = len(self.states)
        command = {"url": url, "sha256": archive.sha256} | ({"request_id": request_id} if request_id else {})
        self.deployer.on_deploy(json.dumps(command).encode(), reply_to)
        deadline = time.monotonic() + 10
        while not any(s["state"] in ("active", "failed", "rolled_back") for s, _ in self.states[before:]):
            assert time.monotonic() < deadline, self.states[before:]
            time.sleep(0.02)
        return next(s for s, _ in self.states[before:] if s["state"] in ("active", "failed", "rolled_back"))

    def frames_by(self, count: int = 3) -> set[str]:
        """The models that ran the next `count` frames."""
        names: set[str] = set()
        for _ in range(count):
            seen = self.loop.counters.processed
            while self.loop.counters.processed == seen:
                time.sleep(0.005)
            names.add(self.loop.detector.identity.name)
        return names

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.deployer.close()
        self.files.stop()

    def deployed_dirs(self) -> list[str]:
        return sorted(p.name for p in (self.state / "bundles").iterdir())


@pytest.fixture
def deployment(tmp_path: Path, models: dict[str, Path]) -> Iterator[Deployment]:
    made = Deployment(tmp_path, models)
    yield made
    made.close()


def test_a_good_bundle_is_switched_to_between_frames(deployment: Deployment) -> None:
    final = deployment.deploy("v2")
    states = [s["state"] for s, _ in deployment.states]
    assert states == ["downloading", "verifying", "active"]
    assert all(retained for _, retained in deployment.states)
    assert final["model"]["name"] == "v2"
    assert deployment.frames_by() == {"v2"}
    recorded = read_active(deployment.state)
    assert recorded is not None and recorded.sha256 == final["sha256"] and recorded.path.name.startswith("deploy-")
    assert deployment.loop.counters.processed > PROBATION_FRAMES


def test_every_state_of_a_deployment_carries_its_request_id_and_goes_to_its_response_topic(
    deployment: Deployment,
) -> None:
    route = ReplyTo("yolo-edge/t/reply/operator-7", b"corr")
    deployment.deploy("v2", request_id="deploy-42", reply_to=route)
    assert [s["state"] for s, _ in deployment.states] == ["downloading", "verifying", "active"]
    assert [s.get("request_id") for s, _ in deployment.states] == ["deploy-42"] * 3
    assert deployment.routed == [(route, state) for state, _ in deployment.states]
    deployment.deploy("v2")  # no id: its answer carries none, and goes nowhere else
    assert "request_id" not in deployment.states[-1][0] and len(deployment.routed) == 3


@pytest.mark.parametrize(
    "topic", ["operators/7/replies", "yolo-edge/t/status", "yolo-edge/t/reply/", "yolo-edge/other/reply/7"]
)
def test_a_response_topic_outside_the_reply_subtree_gets_no_state(
    deployment: Deployment, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    deployment.deployer.on_deploy(b'{"url": "file:///etc/passwd", "sha256": "00"}', ReplyTo(topic, b"c"))
    assert deployment.states[-1][0]["state"] == "failed", "answered on deploy/state all the same"
    assert deployment.routed == []
    assert f"deploy: response topic {topic!r} refused" in caplog.text


def test_a_refused_deploy_command_answers_with_its_request_id(deployment: Deployment) -> None:
    deployment.deployer.on_deploy(b'{"url": "file:///etc/passwd", "sha256": "00", "request_id": "r-1"}')
    state, retained = deployment.states[-1]
    assert state["state"] == "failed" and state["request_id"] == "r-1" and not retained
    deployment.deployer.on_deploy(b'{"url": "https://x/a.tar.gz", "sha256": "00", "request_id": 5}')
    state, _ = deployment.states[-1]
    assert "request_id: 5 is not allowed" in state["reason"] and "request_id" not in state


def test_the_same_archive_again_is_already_active(deployment: Deployment) -> None:
    deployment.deploy("v2")
    final = deployment.deploy("v2")
    assert final["state"] == "active" and final["note"] == "already active"
    assert deployment.files.requests["/v2.tar.gz"] == 1, "not downloaded again"


def test_a_model_failing_in_the_frame_loop_is_rolled_back(deployment: Deployment) -> None:
    deployment.loader = "failing"
    deployment.loaders["failing"] = failing
    final = deployment.deploy("v2")
    assert final["state"] == "rolled_back"
    assert "the new model failed in the frame loop: out of memory in the new model" in final["reason"]
    assert final["model"]["name"] == "configured"
    assert deployment.frames_by() == {"configured"}
    assert read_active(deployment.state) is None, "never recorded: a restart runs the old model too"
    assert deployment.deployed_dirs() == [], "the failed bundle is removed"
    assert deployment.thread.is_alive()


@pytest.mark.parametrize(("model", "fragment"), [("classes", "its 4 labels need (1, 8, N)"), ("nan", "NaN")])
def test_a_model_failing_its_first_inference_is_never_switched_to(
    deployment: Deployment, model: str, fragment: str
) -> None:
    final = deployment.deploy("bad", model)
    assert final["state"] == "failed" and fragment in final["reason"]
    assert deployment.frames_by() == {"configured"}
    assert deployment.deployed_dirs() == []


def test_the_previous_bundle_is_kept_and_older_ones_pruned(tmp_path: Path, models: dict[str, Path]) -> None:
    deployment = Deployment(tmp_path, models, keep=2)
    try:
        shas = [deployment.deploy(name)["sha256"] for name in ("v2", "v3", "v4")]
        assert deployment.frames_by() == {"v4"}
        assert deployment.deployed_dirs() == sorted(f"deploy-{sha[:16]}" for sha in shas[1:])
    finally:
        deployment.close()


def test_settings_naming_labels_the_new_model_lacks_refuse_the_switch(tmp_path: Path, models: dict[str, Path]) -> None:
    runtime = RuntimeSettings(classes=("circle",))
    deployment = Deployment(tmp_path, models, runtime=runtime)
    try:
        final = deployment.deploy("v2", names={0: "cat", 1: "dog", 2: "cow", 3: "hen"})
        assert final["state"] == "failed"
        assert "the settings in force name labels the new model does not know (circle)" in final["reason"]
        assert deployment.frames_by() == {"configured"}
    finally:
        deployment.close()


def test_a_second_deploy_while_one_runs_is_refused_as_busy(deployment: Deployment) -> None:
    from tests.agent.deploy_helpers import Route

    gate = threading.Event()
    archive = write_archive(bundle(deployment.tmp_path, deployment.models, name="slow"))
    url = deployment.files.add("/slow.tar.gz", Route(archive.path.read_bytes(), gate=gate))
    deployment.deployer.on_deploy(json.dumps({"url": url, "sha256": archive.sha256}).encode())
    deployment.deployer.on_deploy(json.dumps({"url": url, "sha256": "0" * 64}).encode())
    busy = deployment.states[-1]
    assert busy[0]["state"] == "failed" and busy[0]["reason"].startswith(f"busy: deploying {archive.sha256[:16]}")
    assert busy[1] is False, "a refusal does not replace the retained state of the deployment in progress"
    gate.set()
    deadline = time.monotonic() + 10
    while deployment.states[-1][0]["state"] != "active":
        assert time.monotonic() < deadline, deployment.states
        time.sleep(0.02)


def test_stopping_during_a_download_reports_it(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.agent.deploy_helpers import Route

    # shorter than the download's 2 s read timeout
    monkeypatch.setattr("agent.control.deploy.deployer.CLOSE_WAIT_S", 0.2)

    gate = threading.Event()
    url = deployment.files.add("/stuck.tar.gz", Route(bytes(100_000), gate=gate))
    deployment.deployer.on_deploy(json.dumps({"url": url, "sha256": "0" * 64}).encode())
    deadline = time.monotonic() + 5
    while not [p for p in (deployment.state / "bundles").glob(".partial-*") if p.stat().st_size >= 50_000]:
        assert time.monotonic() < deadline, "the first half of the archive never arrived"
        time.sleep(0.01)
    # The download now waits in a read for the second half, so it cannot notice the stop itself.
    deployment.stop.set()
    deployment.thread.join(5)
    deployment.deployer.close()
    last = deployment.states[-1][0]
    assert last["state"] == "failed" and "the agent stopped during the deployment" in last["reason"]
    assert [p for p in (deployment.state / "bundles").iterdir()] == [], "the partial download is removed"
    gate.set()


def test_settings_are_checked_against_the_labels_of_the_model_now_running(deployment: Deployment) -> None:
    deployment.deploy("v2", names={0: "cat", 1: "dog", 2: "cow", 3: "hen"})
    deployment.frames_by(1)
    deployment.inbox.on_set(b'{"classes": ["circle"]}')  # a label of the model that ran before
    deployment.inbox.on_set(b'{"classes": ["dog"]}')
    deadline = time.monotonic() + 5
    while len(deployment.replies) < 1 or deployment.loop.runtime.classes != ("dog",):
        assert time.monotonic() < deadline, deployment.replies
        time.sleep(0.01)
    assert deployment.replies[0]["ok"] is False and "unknown" in deployment.replies[0]["error"]
    assert deployment.loop.detector.settings.classes == frozenset({1})

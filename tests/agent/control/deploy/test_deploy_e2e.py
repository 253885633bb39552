"""Model deployment end to end: `deploy` over a real Mosquitto, archives from an HTTP server on 127.0.0.1.

The real `yolo-edge-agent run` as a subprocess plays the sample video in a loop on the fixture
bundle, publishing every frame. The tests take turns with it in file order: commands that must
fail (each ends in `failed` with the agent still detecting on the old bundle), then a good
bundle (it switches, keeps detecting, and a restart keeps it), then a restart with the deployed
bundle damaged (it falls back to `[model] path`). Waits are bounded and short.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import publish

from agent.control.deploy.active_bundle import RECORD_NAME, read_active
from converter.archive import write_archive
from tests.agent.agent_process import AgentProcess, Message, Observer, agent_env, broker_args, retained
from tests.agent.deploy_helpers import (
    HttpFiles,
    Route,
    bundle_members,
    huge_header_tar_gz,
    link,
    renamed_copy,
    reshape_model,
    sha256,
    tar_gz,
    write_bundle,
)
from tests.broker import Broker
from tests.fault.processes import largest_file, limit_file_size

pytestmark = pytest.mark.slow

DEVICE = "e2e-deploy"
TOPICS = f"yolo-edge/{DEVICE}"
LOOP_FPS = 8
NEW_NAME = "shapes-v2"
ZEROS_MODEL_BYTES = (4 << 20) + (512 << 10)  # a model of zeros: a download of a few KB that unpacks to 4.5 MB
FINAL = ("active", "failed", "rolled_back")


@dataclass(frozen=True)
class Archive:
    path: str  # on the HTTP server
    sha256: str


@dataclass
class Running:
    broker: Broker
    files: HttpFiles
    observer: Observer
    agent: AgentProcess
    args: list[str]
    env: dict[str, str]
    workdir: Path
    state: Path
    old_name: str
    archives: dict[str, Archive]
    max_bytes: int
    gate: threading.Event


def _archives(workdir: Path, fixture_bundle: Path, files: HttpFiles, gate: threading.Event) -> tuple[dict, int]:
    """Every archive the tests deploy, served; and the agent's max_bytes (the good archive fits, barely)."""
    good_bundle = renamed_copy(fixture_bundle, workdir / "shapes-v2", NEW_NAME)
    good = write_archive(good_bundle).path.read_bytes()
    max_bytes = len(good) + 256 * 1024
    manifest = json.loads((fixture_bundle / "manifest.json").read_text())
    height, width = manifest["imgsz"]
    # Loads, verifies and runs; its output (1, 96, N) is garbage for a model with 4 labels.
    garbage = reshape_model(workdir / "garbage.onnx", (height, width), (1, 96, 3 * height * width // 96))
    garbage_bundle = write_bundle(workdir / "garbage", garbage, (height, width), "garbage")
    corrupt = os.urandom(200_000)
    bodies: dict[str, bytes] = {
        "good": good,
        "corrupt": corrupt,
        "dotdot": tar_gz([*bundle_members(good_bundle), ("../escaped.txt", b"x")]),
        "symlink": tar_gz([*bundle_members(good_bundle), ("shapes/passwd", link(tarfile.SYMTYPE, "/etc/passwd"))]),
        "too-large": os.urandom(max_bytes + 1),
        "garbage": write_archive(garbage_bundle).path.read_bytes(),
        "pax-bomb": huge_header_tar_gz(tarfile.XHDTYPE, 32 << 20),  # 32 KB announcing a 32 MB header
        "zeros": tar_gz([("shapes/manifest.json", b"{}"), ("shapes/model.fp32.onnx", bytes(ZEROS_MODEL_BYTES))]),
    }
    archives = {name: Archive(f"/{name}.tar.gz", sha256(body)) for name, body in bodies.items()}
    for name, body in bodies.items():
        files.add(archives[name].path, body)
    files.add("/slow.tar.gz", Route(corrupt, gate=gate))
    archives["slow"] = Archive("/slow.tar.gz", sha256(corrupt))
    archives["wrong-sha"] = Archive("/good.tar.gz", sha256(b"another archive"))
    archives["missing"] = Archive("/missing.tar.gz", sha256(b"nothing"))
    return archives, max_bytes


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, fixture_bundle: Path, sample_video: tuple[Path, list]):
    workdir = tmp_path_factory.mktemp("deploy-e2e")
    broker = Broker(workdir).start()
    files = HttpFiles()
    gate = threading.Event()
    archives, max_bytes = _archives(workdir, fixture_bundle, files, gate)
    observer = Observer(broker.host, broker.port, DEVICE)
    args = ["run", "--source", str(sample_video[0]), "--loop", "--model", str(fixture_bundle), "--precision", "fp32"]
    args += broker_args(broker.host, broker.port, DEVICE)
    env = agent_env(
        workdir / "state",
        source_fps=LOOP_FPS,
        stats_interval=1,
        mqtt_publish_empty=True,
        snapshot_enabled=False,
        homeassistant_discovery=False,
        deploy_allow_http=True,
        deploy_max_bytes=max_bytes,
        deploy_timeout_s=5,
    )
    agent = AgentProcess(args, env, workdir)
    old_name = json.loads((fixture_bundle / "manifest.json").read_text())["model_name"]
    run = Running(
        broker, files, observer, agent, args, env, workdir, workdir / "state", old_name, archives, max_bytes, gate
    )
    try:
        observer.wait_count("detections", 1, timeout=60)
        yield run
    finally:
        if run.agent.running:
            run.agent.kill()
        gate.set()
        observer.close()
        files.stop()
        broker.stop()


def command(run: Running, archive: Archive) -> bytes:
    return json.dumps({"url": run.files.url(archive.path), "sha256": archive.sha256}).encode()


def send(run: Running, payload: bytes) -> float:
    sent = time.time()
    publish.single(f"{TOPICS}/deploy", payload, qos=1, hostname=run.broker.host, port=run.broker.port)
    return sent


def states_since(run: Running, moment: float, sha: str | None = None) -> list[dict[str, Any]]:
    return [
        m.json()
        for m in run.observer.on("deploy/state")
        if m.at >= moment and (sha is None or m.json().get("sha256") == sha)
    ]


def deploy(run: Running, archive: Archive, timeout: float = 30) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a deploy command; return its final state and every state it went through."""
    sent = send(run, command(run, archive))
    run.observer.wait_for(
        f"the outcome of deploying {archive.path}",
        lambda: any(s["state"] in FINAL for s in states_since(run, sent, archive.sha256)),
        timeout,
    )
    states = states_since(run, sent, archive.sha256)
    return next(s for s in states if s["state"] in FINAL), states


def models_after(run: Running, moment: float, count: int = 3, timeout: float = 15) -> set[str]:
    """The model names in the first `count` detections messages published after `moment`."""

    def later() -> list[Message]:
        return [m for m in run.observer.on("detections") if m.at > moment]

    run.observer.wait_for(f"{count} detections", lambda: len(later()) >= count, timeout)
    return {m.json()["model"]["name"] for m in later()[:count]}


def last_state_message(run: Running) -> Message:
    return run.observer.on("deploy/state")[-1]


def bundles_on_disk(run: Running) -> list[str]:
    folder = run.state / "bundles"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- commands that start nothing ------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"url": ', "payload is not valid JSON"),
    ("binary junk", os.urandom(2048), "payload is not"),
    ("huge", b'{"url": "' + b"a" * 100_000 + b'"}', "bytes; at most 16384 allowed"),
    ("wrong types", b'{"url": 5, "sha256": true}', "url: 5 is not allowed"),
    ("missing key", b'{"url": "http://127.0.0.1/x.tar.gz"}', "missing key 'sha256'"),
    ("file URL", b'{"url": "file:///etc/passwd", "sha256": "' + b"a" * 64 + b'"}', "scheme 'file' is not allowed"),
]


def test_malformed_commands_fail_naming_the_problem(running: Running) -> None:
    for what, payload, fragment in MALFORMED:
        count = len(running.observer.on("deploy/state"))
        send(running, payload)
        reply = running.observer.wait_count("deploy/state", count + 1, 10)[-1]
        body = reply.json()
        assert body["state"] == "failed" and fragment in body["reason"], (what, body)
        assert len(body["reason"]) < 1000, what
        assert not reply.retain, "a command that started nothing does not replace the retained state"
    last = last_state_message(running).at
    assert models_after(running, last) == {running.old_name}
    assert running.agent.running and "Traceback" not in running.agent.stderr


# -- deployments that fail --------------------------------------------------------------------------------

FAILING = [
    ("wrong-sha", "sha256 mismatch: the archive's is"),
    ("corrupt", "the archive is not a readable .tar.gz"),
    ("dotdot", "member '../escaped.txt' contains '..'"),
    ("symlink", "member 'shapes/passwd' is a symbolic link (to '/etc/passwd')"),
    ("too-large", "allowed ([deploy] max_bytes)"),
    ("pax-bomb", f"the archive's pax extended header '././@PaxHeader' is {32 << 20} bytes"),
    ("garbage", "the model's output has shape (1, 96,"),
    ("missing", "the server answered HTTP 404"),
]


@pytest.mark.parametrize(("name", "fragment"), FAILING, ids=[f[0] for f in FAILING])
def test_a_bad_deployment_fails_and_the_old_bundle_keeps_running(running: Running, name: str, fragment: str) -> None:
    archive = running.archives[name]
    final, states = deploy(running, archive)
    assert final["state"] == "failed", states
    assert fragment in final["reason"], final
    assert states[0]["state"] == "downloading"
    assert final["url"] == running.files.url(archive.path)
    assert models_after(running, last_state_message(running).at) == {running.old_name}
    assert running.agent.running
    kept = retained(running.broker.host, running.broker.port, DEVICE, ("deploy/state",))["state"]
    assert kept.json()["state"] == "failed" and kept.json()["sha256"] == archive.sha256
    assert bundles_on_disk(running) == [], "nothing is left of a failed deployment"
    assert not (running.state / RECORD_NAME).exists()
    assert not (running.state.parent / "escaped.txt").exists()


def test_a_full_disk_fails_the_deployment_as_disk_full(running: Running) -> None:
    # RLIMIT_FSIZE on the agent (see tests/fault/processes.py): no file of its may grow past `limit`,
    # as on a nearly full disk; the download fits, the model it unpacks does not, and the write that
    # crosses the limit is its last (1 MB at a time): it stores half and returns as if all was well.
    limit = ZEROS_MODEL_BYTES - (256 << 10)
    archive = running.archives["zeros"]
    assert len(running.files.routes[archive.path].body) < limit // 8
    grown = [
        largest_file(running.state),
        running.agent.stderr_path.stat().st_size,
        running.agent.stdout_path.stat().st_size,
    ]
    assert max(grown) < limit // 2, f"the agent's own files are too close to the limit: {grown}"
    limit_file_size(running.agent.process.pid, limit)
    try:
        final, states = deploy(running, archive)
    finally:
        limit_file_size(running.agent.process.pid, None)
    assert final["state"] == "failed", states
    bundles = running.state / "bundles"
    assert final["reason"].startswith(f"disk full: no room to unpack the bundle under {bundles} ("), final
    assert bundles_on_disk(running) == [], "no truncated model is left behind"
    assert models_after(running, last_state_message(running).at) == {running.old_name}
    assert running.agent.running


def test_a_second_deploy_while_one_runs_is_refused_as_busy(running: Running) -> None:
    slow, good = running.archives["slow"], running.archives["good"]
    fetched = running.files.requests.get("/good.tar.gz", 0)
    sent = send(running, command(running, slow))
    running.observer.wait_for("downloading", lambda: states_since(running, sent, slow.sha256), 10)
    send(running, command(running, good))
    running.observer.wait_for("the refusal", lambda: states_since(running, sent, good.sha256), 10)
    refusal = [m for m in running.observer.on("deploy/state") if m.at >= sent and m.json()["sha256"] == good.sha256]
    assert refusal[0].json()["state"] == "failed" and refusal[0].json()["reason"].startswith("busy: deploying")
    assert not refusal[0].retain
    running.gate.set()  # the slow download ends, and fails on its own merits
    running.observer.wait_for(
        "the slow deployment's outcome",
        lambda: any(s["state"] in FINAL for s in states_since(running, sent, slow.sha256)),
        15,
    )
    assert states_since(running, sent, slow.sha256)[-1]["state"] == "failed"
    assert running.files.requests.get("/good.tar.gz", 0) == fetched, "the refused command downloaded nothing"


# -- a good deployment ------------------------------------------------------------------------------------


def test_a_good_bundle_is_deployed_and_the_agent_keeps_detecting(running: Running, fixture_bundle: Path) -> None:
    manifest_before = (fixture_bundle / "manifest.json").read_bytes()
    good = running.archives["good"]
    final, states = deploy(running, good)
    assert [s["state"] for s in states] == ["downloading", "verifying", "active"], states
    assert final["model"]["name"] == NEW_NAME and final["model"]["precision"] == "fp32"
    active_at = last_state_message(running).at
    assert models_after(running, active_at, count=8) == {NEW_NAME}
    later = [m.json() for m in running.observer.on("detections") if m.at > active_at]
    assert any(body["detections"] for body in later), "the new bundle detects the shapes"
    frames = [body["frame"] for body in later]
    assert frames == sorted(frames), "no frame went backwards across the switch"
    kept = retained(running.broker.host, running.broker.port, DEVICE, ("deploy/state",))["state"]
    assert kept.json()["state"] == "active" and kept.json()["sha256"] == good.sha256
    recorded = read_active(running.state)
    assert recorded is not None and recorded.sha256 == good.sha256
    assert bundles_on_disk(running) == [f"deploy-{good.sha256[:16]}"]
    assert (fixture_bundle / "manifest.json").read_bytes() == manifest_before, "the old bundle is kept as it was"
    # The same command again changes nothing and downloads nothing.
    requests = running.files.requests["/good.tar.gz"]
    again, _ = deploy(running, good)
    assert again["state"] == "active" and again["note"] == "already active"
    assert running.files.requests["/good.tar.gz"] == requests


def restart(run: Running, name: str) -> AgentProcess:
    if run.agent.running:
        code, _ = run.agent.stop(timeout=10)
        assert code == 0, run.agent.describe()
    run.agent = AgentProcess(run.args, run.env, run.workdir, name=name)
    return run.agent


def test_the_deployed_bundle_survives_a_restart(running: Running) -> None:
    agent = restart(running, "agent-restarted")
    started = time.time()
    agent.wait_log("model: the deployed bundle", timeout=60)
    assert models_after(running, started, timeout=60) == {NEW_NAME}
    kept = retained(running.broker.host, running.broker.port, DEVICE, ("deploy/state",))["state"]
    assert kept.json()["state"] == "active" and kept.json()["note"] == "started with the deployed bundle"


def test_a_damaged_deployed_bundle_falls_back_to_the_config_model(running: Running) -> None:
    if running.agent.running:  # stopped before what it runs is damaged
        assert running.agent.stop(timeout=10)[0] == 0, running.agent.describe()
    deployed = running.state / "bundles" / f"deploy-{running.archives['good'].sha256[:16]}"
    with open(deployed / "model.fp32.onnx", "r+b") as stream:
        stream.seek(1000)
        stream.write(b"\xff" * 16)
    agent = restart(running, "agent-fallback")
    started = time.time()
    agent.wait_log("no longer verifies", timeout=60)
    assert models_after(running, started, timeout=60) == {running.old_name}
    assert "falling back to [model] path" in agent.stderr
    kept = retained(running.broker.host, running.broker.port, DEVICE, ("deploy/state",))["state"]
    assert kept.json()["state"] == "rolled_back" and "does not match its sha256" in kept.json()["reason"]

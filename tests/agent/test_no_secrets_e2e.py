"""`yolo-edge-agent run` over a real Mosquitto never shows a URL's password, query or fragment.

A signed deploy link that http.client refuses (a space in it) and a camera URL with a password and
a token that cannot be opened: the retained deploy/state, the stats, the status and everything the
agent logged or printed (its stderr) are searched for the secrets. The model is a tiny bundle built
here and no frame is ever processed, so each run costs about a second of CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paho.mqtt import publish

from tests.agent.agent_process import AgentProcess, Observer, agent_env, broker_args, retained, run_agent
from tests.agent.deploy_helpers import reshape_model, sha256, write_bundle
from tests.broker import Broker, free_port

HW = (64, 64)
SECRETS = ("SECRET", "pw@", ":pw")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle", reshape_model(tmp_path / "m.onnx", HW, (1, 8, 3 * 64 * 64 // 8)), HW)


def assert_clean(where: str, text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} shows {leaked}: {text[-2000:]}"


def test_a_refused_deploy_url_leaves_its_token_out_of_deploy_state_and_the_log(
    tmp_path: Path, broker: Broker, observe, bundle: Path
) -> None:
    device = "secrets-deploy"
    observer: Observer = observe(broker, device)
    args = ["run", "--source", "/dev/video57", "--model", str(bundle), *broker_args(broker.host, broker.port, device)]
    env = agent_env(tmp_path / "state", stats_interval=1, deploy_allow_http=True, homeassistant_discovery=False)
    # http.client refuses the space, and its InvalidURL quotes the path and query.
    url = f"http://127.0.0.1:{free_port()}/bundles/new model.tar.gz?token=SECRET&expires=60"
    with AgentProcess(args, env, tmp_path) as agent:
        observer.wait_count("stats", 1, timeout=30)  # subscribed to deploy by then: it comes after the status
        payload = json.dumps({"url": url, "sha256": sha256(b"whatever")})
        publish.single(f"yolo-edge/{device}/deploy", payload, qos=1, hostname=broker.host, port=broker.port)
        observer.wait_for(
            "deploy failed", lambda: any(s["state"] == "failed" for s in observer.json("deploy/state")), 15
        )
        kept = retained(broker.host, broker.port, device, ("deploy/state",))["state"].json()
        code, _ = agent.stop()
        assert code == 0, agent.describe()
        stderr = agent.stderr
    assert kept["state"] == "failed" and "InvalidURL" in kept["reason"], kept
    assert kept["url"] == url.split("?")[0], kept
    assert_clean("the retained deploy/state", json.dumps(kept))
    published = [m for m in observer.messages if m.name != "deploy"]  # the command itself holds the token, of course
    assert [m for m in published if m.topic.endswith("/deploy/state")], "deploy/state was observed"
    for message in published:
        assert_clean(f"the message on {message.topic}", message.payload.decode(errors="replace"))
    assert "deploy of" in stderr and "failed" in stderr, stderr
    assert_clean("the agent's log", stderr)


def test_a_camera_url_that_cannot_be_opened_shows_neither_password_nor_token(
    tmp_path: Path, broker: Broker, observe, bundle: Path
) -> None:
    device = "secrets-source"
    observer: Observer = observe(broker, device)
    port = free_port()  # nothing listens there: every open is refused
    uri = f"rtsp://user:pw@127.0.0.1:{port}/stream?token=SECRET"
    args = ["run", "--source", uri, "--model", str(bundle), *broker_args(broker.host, broker.port, device)]
    env = agent_env(tmp_path / "state", stats_interval=1, source_reconnect_max_s=0.5)
    with AgentProcess(args, env, tmp_path) as agent:
        observer.wait_for(
            "stats with the source's last error",
            lambda: any(s["source"].get("last_error") for s in observer.json("stats")),
            30,
        )
        code, _ = agent.stop()
        assert code == 0, agent.describe()
        stderr = agent.stderr
    error = next(s["source"]["last_error"] for s in observer.json("stats") if s["source"].get("last_error"))
    assert error == f"cannot connect to stream rtsp://127.0.0.1:{port}/stream", error
    for message in observer.messages:
        assert_clean(f"the message on {message.topic}", message.payload.decode(errors="replace"))
    assert "source unavailable: stream rtsp://127.0.0.1" in stderr, stderr
    assert_clean("the agent's log", stderr)


def test_a_url_the_agent_cannot_read_is_one_error_line_without_its_secrets(tmp_path: Path, bundle: Path) -> None:
    uri = "rtmp://user:pw@cam.lan/live?token=SECRET"
    result = run_agent(["run", "--source", uri, "--model", str(bundle)], agent_env(tmp_path / "state"), tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("yolo-edge-agent: error:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("yolo-edge-agent: error: source 'rtmp://cam.lan/live' not found: expected"), lines
    assert_clean("the error", result.stdout + result.stderr)

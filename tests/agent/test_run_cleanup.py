"""`run` cleans up in order however it ends: paho's network thread never outlives the outbox under it.

In-process (command_run itself, on a tiny bundle and a real Mosquitto), so a failure can be made to
happen between the publisher's start and the frame loop.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import agent.runtime.run
from agent.config import load_config
from agent.runtime.run import command_run
from agent.transport.outbox import Outbox
from tests.agent.agent_process import Observer
from tests.agent.deploy_helpers import reshape_model, write_bundle
from tests.broker import Broker

DEVICE = "run-cleanup"
HW = (64, 64)


def agent_paho_threads() -> list[str]:
    # paho names its network thread after the client, and the agent's client id is its device id.
    return [thread.name for thread in threading.enumerate() if thread.name == f"paho-mqtt-client-{DEVICE}"]


def test_a_failure_before_the_loop_closes_the_publisher_before_the_outbox(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = write_bundle(tmp_path / "bundle", reshape_model(tmp_path / "m.onnx", HW, (1, 8, 3 * 64 * 64 // 8)), HW)
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.zeros((48, 64, 3), np.uint8))
    overrides: dict[tuple[str, str], object] = {
        ("source", "uri"): str(frames),
        ("model", "path"): model,
        ("model", "threads"): 1,
        ("mqtt", "host"): broker.host,
        ("mqtt", "port"): broker.port,
        ("mqtt", "device_id"): DEVICE,
        ("agent", "state_dir"): tmp_path / "state",
        ("deploy", "enabled"): True,
    }
    config = load_config(None, env={}, overrides=overrides)
    at_outbox_close: list[list[str]] = []
    real_close = Outbox.close

    def close(self: Outbox) -> None:
        at_outbox_close.append(agent_paho_threads())
        real_close(self)

    def failing_loop(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the loop could not be built")

    monkeypatch.setattr(Outbox, "close", close)
    monkeypatch.setattr(agent.runtime.run, "AgentLoop", failing_loop)
    observer = Observer(broker.host, broker.port, DEVICE, names=("status",))
    try:
        with pytest.raises(RuntimeError, match="the loop could not be built"):
            command_run(config, max_frames=0, dry_run=False)
        assert at_outbox_close == [[]], "paho's thread must be gone when the outbox closes"
        assert agent_paho_threads() == []
        # A clean stop: `stopped`, not the `offline` will a vanished client leaves.
        observer.wait_for("status stopped", lambda: [m.payload for m in observer.on("status")][-1:] == [b"stopped"], 5)
    finally:
        observer.close()

"""Two cameras on one Pi: two real agents with the configs `install.sh --instance` writes, one broker.

install.sh installs the cameras `front` and `back` into a throwaway root whose /etc/hostname says
pi5; each agent then runs as yolo-edge-agent@NAME would: with its own config, $STATE_DIRECTORY set to
its own state directory (StateDirectory=yolo-edge/%i) and the CPU affinity of the drop-in install.sh
wrote for it. Only what names the Pi's tree is replaced on the command line: the camera (a looping
video), the model and the broker's address. Both must run at once, each publishing under its own
device id, keeping its outbox in its own directory and sizing its inference to its share of the CPUs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from agent.transport.topics import ONLINE, STOPPED
from tests.agent.agent_process import LOOP_FPS, AgentProcess, Observer, agent_env
from tests.broker import Broker
from tests.systemd.scripts import cpu_share, install, pi_root
from tests.systemd.test_unit import directives

CAMERAS = ("front", "back")
DEVICES = {camera: f"pi5-{camera}" for camera in CAMERAS}  # the host name, then the camera
UP_S = 90.0  # both models loaded and publishing detections; generous for a loaded machine


def state_directory(root: Path, camera: str) -> Path:
    """$STATE_DIRECTORY of yolo-edge-agent@CAMERA: /var/lib/ and the template's StateDirectory=, under root."""
    (value,) = directives((root / "etc/systemd/system/yolo-edge-agent@.service").read_text())["Service.StateDirectory"]
    return root / "var/lib" / value.replace("%i", camera)


def camera_agent(root: Path, camera: str, workdir: Path, broker: Broker, model: Path, video: Path) -> AgentProcess:
    """The agent as yolo-edge-agent@CAMERA runs it, on a video and this broker."""
    state = state_directory(root, camera)
    env = agent_env(state, source_fps=LOOP_FPS, stats_interval=1)
    # What systemd gives the instance, instead of the test defaults: its state directory, and threads
    # left to the config's 0 so that the CPU share decides them.
    del env["YOLO_EDGE_AGENT_STATE_DIR"], env["YOLO_EDGE_MODEL_THREADS"]
    env["STATE_DIRECTORY"] = str(state)
    cpus = cpu_share(root, camera) & os.sched_getaffinity(0) or os.sched_getaffinity(0)
    args = ["run", "--config", str(root / f"etc/yolo-edge/agent-{camera}.toml"), "--source", str(video), "--loop"]
    args += ["--model", str(model), "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)]
    pin: Callable[[], None] = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731 (CPUAffinity=, before exec)
    return AgentProcess(args, env, workdir, camera, preexec_fn=pin)


def test_two_agents_run_side_by_side_each_under_its_own_id(
    tmp_path: Path, broker: Broker, observe, fixture_onnx: Path, sample_video: tuple[Path, list]
) -> None:
    root = pi_root(tmp_path)
    for camera in CAMERAS:
        install(root, "--instance", camera)
    video, _ = sample_video
    # Everything under both trees, whoever publishes it: a message under any other id is a failure.
    watcher: Observer = observe(broker, DEVICES["front"], also=("yolo-edge/#", "homeassistant/#"))

    def on(device: str, name: str) -> list[bytes]:
        return [m.payload for m in watcher.on_topic(f"yolo-edge/{device}/{name}")]

    def publishing(device: str) -> bool:
        return ONLINE in on(device, "status") and bool(on(device, "detections")) and bool(on(device, "stats"))

    with ExitStack() as stack:
        agents = {
            camera: stack.enter_context(camera_agent(root, camera, tmp_path, broker, fixture_onnx, video))
            for camera in CAMERAS
        }
        try:
            watcher.wait_for(
                "status online, detections and stats from both cameras",
                lambda: all(publishing(d) for d in DEVICES.values()) or not all(a.running for a in agents.values()),
                UP_S,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n" + "\n".join(a.describe() for a in agents.values())) from None
        assert all(a.running for a in agents.values()), "\n".join(a.describe() for a in agents.values())
        for agent in agents.values():  # side by side: both published while both ran
            code, _ = agent.stop(timeout=20)
            assert code == 0, agent.describe()

    for camera, device in DEVICES.items():
        watcher.wait_for(f"{device} stopped", lambda device=device: on(device, "status")[-1:] == [STOPPED], 10)
        assert (root / "var/lib/yolo-edge" / camera / "outbox.sqlite3").is_file(), f"{camera} kept no outbox"
        threads = re.search(r"model loaded: .*, (\d+) threads\)", agents[camera].stderr)
        share = cpu_share(root, camera) & os.sched_getaffinity(0) or os.sched_getaffinity(0)
        assert threads and int(threads.group(1)) == len(share), agents[camera].stderr[-2000:]
    seen = {m.topic.split("/")[1] for m in watcher.messages if m.topic.startswith("yolo-edge/")}
    assert seen == set(DEVICES.values()), f"messages under {sorted(seen)}"
    discovery = {m.topic for m in watcher.messages if m.topic.startswith("homeassistant/") and m.payload}
    assert discovery == {f"homeassistant/device/{device}/config" for device in DEVICES.values()}

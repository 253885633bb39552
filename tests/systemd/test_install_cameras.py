"""install.sh --instance NAME in a throwaway root: one camera of several, its files, its share of the CPUs.

Each camera gets the template unit, its own config (a device id of its own, its bundle in its own
state directory), its own password file and a CPUAffinity= drop-in; a second camera splits the CPUs
with the first, and a rerun changes nothing. test_two_cameras.py runs two agents from such configs.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

from tests.systemd.scripts import (
    ROOT,
    UNINSTALL,
    camera_config,
    cpu_share,
    install,
    make_bundle,
    mode,
    pi_root,
    run,
    snapshot,
)

TEMPLATE = ROOT / "systemd" / "yolo-edge-agent@.service"
SERVICE = "yolo-edge-agent.service"


def test_instance_installs_its_config_state_password_and_unit(tmp_path: Path) -> None:
    root = pi_root(tmp_path, hostname="pi5.lan")
    bundle = make_bundle(tmp_path / "bundles-in", "shapes", "one")
    result = install(root, "--instance", "front", "--bundle", str(bundle), "--mqtt-password-stdin", stdin="front pw\n")

    units = root / "etc/systemd/system"
    assert (units / "yolo-edge-agent@.service").read_text() == TEMPLATE.read_text()
    assert mode(units / "yolo-edge-agent@.service") == 0o644
    if shutil.which("systemctl"):
        link = units / "multi-user.target.wants/yolo-edge-agent@front.service"
        assert os.readlink(link) == "/etc/systemd/system/yolo-edge-agent@.service"
        assert not (units / "multi-user.target.wants" / SERVICE).exists(), "the single-camera unit was enabled"

    # The agent reads it as systemd runs it: $STATE_DIRECTORY from StateDirectory=yolo-edge/%i.
    config = camera_config(root, "front", env={"STATE_DIRECTORY": "/var/lib/yolo-edge/front"})
    assert config.mqtt.device_id == "pi5-lan-front"  # the host name reduced as the agent does, then the camera
    assert config.agent.state_dir == Path("/var/lib/yolo-edge/front")
    config_path = root / "etc/yolo-edge/agent-front.toml"
    text = config_path.read_text()
    assert tomllib.loads(text)["model"]["path"] == "/var/lib/yolo-edge/front/bundles/current"
    assert '# password_file = "/etc/yolo-edge/mqtt-password-front"' in text and mode(config_path) == 0o644
    assert "yolo-edge-agent@front.service.d/50-cpus.conf" in text  # where threads = 0 takes its CPUs from
    assert not (root / "etc/yolo-edge/agent.toml").exists()

    state = root / "var/lib/yolo-edge/front"
    assert (
        mode(state) == 0o750
        and (state / "bundles/current/manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
    )
    password = root / "etc/yolo-edge/mqtt-password-front"
    assert password.read_text() == "front pw\n" and mode(password) == 0o640
    assert "front pw" not in result.stdout + result.stderr

    # One camera so far: every CPU is its.
    assert cpu_share(root, "front") == set(range(os.cpu_count() or 1))
    for hint in ("journalctl -u yolo-edge-agent@front -f", "check --config /etc/yolo-edge/agent-front.toml"):
        assert hint in result.stdout


def test_a_second_camera_splits_the_cpus_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    install(root, "--instance", "front")
    config = root / "etc/yolo-edge/agent-front.toml"
    config.write_text(config.read_text().replace('uri = "0"', 'uri = "/dev/video2"'))
    second = install(root, "--instance", "back")

    cpus = set(range(os.cpu_count() or 1))
    front, back = cpu_share(root, "front"), cpu_share(root, "back")
    if len(cpus) >= 2:
        assert front and back and not front & back and front | back == cpus, (front, back)
        assert abs(len(front) - len(back)) <= 1
        # front had every CPU: it is told that its new share needs a restart.
        assert "sudo systemctl restart yolo-edge-agent@front" in second.stdout
    else:
        assert front == back == cpus
    devices = {camera_config(root, name).mqtt.device_id for name in ("front", "back")}
    assert devices == {"pi5-front", "pi5-back"}

    before = snapshot(root)
    again = install(root, "--instance", "back")
    assert snapshot(root) == before, "a rerun changed a kept file"
    assert 'uri = "/dev/video2"' in config.read_text()
    assert "restart yolo-edge-agent@front" not in again.stdout


def test_uninstall_removes_the_cameras_units_and_keeps_their_config_and_state(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    install(root, "--instance", "front")
    install(root, "--instance", "back")
    units = root / "etc/systemd/system"
    own_drop_in = units / "yolo-edge-agent@front.service.d/override.conf"
    own_drop_in.write_text("[Service]\nEnvironment=MINE=1\n")
    outbox = root / "var/lib/yolo-edge/back/outbox.sqlite3"
    outbox.write_bytes(b"undelivered events")

    assert run(UNINSTALL, "--root", str(root)).returncode == 0
    left = sorted(p.relative_to(units).as_posix() for p in units.rglob("*") if not p.is_dir())
    assert left == ["yolo-edge-agent@front.service.d/override.conf"], left  # the user's drop-in alone
    assert (root / "etc/yolo-edge/agent-front.toml").exists() and outbox.exists()

    assert run(UNINSTALL, "--root", str(root), "--purge").returncode == 0
    assert not own_drop_in.parent.exists() and not (root / "etc/yolo-edge").exists()
    assert not (root / "var/lib/yolo-edge").exists()

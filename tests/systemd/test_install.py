"""install.sh and uninstall.sh in a throwaway root (--root): the files, their modes, and reruns.

--root installs everything under a directory instead of /, skips the user, ownership and
systemctl start (it still writes the enable link with `systemctl --root`), and needs neither root
nor a running systemd. The fast tests make the venv without pip (--skip-pip); one slow test does
the real `pip install` of the agent into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.systemd.scripts import INSTALL, ROOT, UNINSTALL, install, make_bundle, mode, run, snapshot

UNIT = ROOT / "systemd" / "yolo-edge-agent.service"
INSTANCE = ROOT / "systemd" / "instance.sh"
EXAMPLE = ROOT / "systemd" / "agent.example.toml"
SERVICE = "yolo-edge-agent.service"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundles-in", "shapes", "one")


def installed_bundle_dir(root: Path) -> Path:
    return root / "var/lib/yolo-edge/bundles"


def test_install_into_a_throwaway_root(tmp_path: Path, bundle: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    # A sudoer's umask of 077 must not make the venv unreadable for the service user.
    result = install(root, "--bundle", str(bundle), "--mqtt-password-stdin", stdin="s3cret pass\n", umask=0o077)

    unit = root / "etc/systemd/system" / SERVICE
    assert unit.read_text() == UNIT.read_text() and mode(unit) == 0o644
    config = root / "etc/yolo-edge/agent.toml"
    assert config.read_text() == EXAMPLE.read_text() and mode(config) == 0o644
    assert (root / "opt/yolo-edge/agent.example.toml").read_text() == EXAMPLE.read_text()
    assert "include-system-site-packages = true" in (root / "opt/yolo-edge/venv/pyvenv.cfg").read_text()
    assert (root / "opt/yolo-edge/venv/bin/python").exists()
    assert mode(root / "opt/yolo-edge/venv/pyvenv.cfg") == 0o644 and mode(root / "opt/yolo-edge/venv") == 0o755

    password = root / "etc/yolo-edge/mqtt-password"
    assert password.read_text() == "s3cret pass\n" and mode(password) == 0o640
    assert "s3cret" not in result.stdout + result.stderr

    state = root / "var/lib/yolo-edge"
    bundles = installed_bundle_dir(root)
    assert mode(state) == 0o750 and mode(bundles) == 0o750
    current = bundles / "current"
    assert current.is_symlink() and not os.readlink(current).startswith("/"), "current must be a relative link"
    copied = current.resolve()
    assert copied.parent == bundles.resolve() and copied.name.startswith("shapes-")
    for name in ("manifest.json", "model.fp32.onnx", "report.md"):
        assert (copied / name).read_bytes() == (bundle / name).read_bytes()
        assert mode(copied / name) == 0o640
    assert mode(copied) == 0o750
    assert not list(bundles.glob(".*")), "a staging directory or link was left behind"

    if shutil.which("systemctl"):
        link = root / "etc/systemd/system/multi-user.target.wants" / SERVICE
        assert os.readlink(link) == f"/etc/systemd/system/{SERVICE}"

    for hint in (
        "journalctl -u yolo-edge-agent -f",
        "mosquitto_sub -h localhost -t 'yolo-edge/#' -v",
        "yolo-edge-agent check --config /etc/yolo-edge/agent.toml",
    ):
        assert hint in result.stdout


def test_second_run_upgrades_in_place_and_keeps_config_password_and_bundles(tmp_path: Path, bundle: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--bundle", str(bundle), "--mqtt-password-stdin", stdin="first\n")
    config = root / "etc/yolo-edge/agent.toml"
    config.write_text(config.read_text().replace('host = "localhost"', 'host = "broker.lan"'))
    before = snapshot(root)

    again = install(root, "--bundle", str(bundle))
    assert snapshot(root) == before, "a rerun with the same inputs changed a kept file"
    assert "kept" in again.stdout and "mosquitto_sub -h broker.lan" in again.stdout

    # A newer bundle lands beside the old one and `current` moves to it; nothing else changes.
    newer = make_bundle(tmp_path / "bundles-in-2", "shapes", "two")
    install(root, "--bundle", str(newer))
    after = snapshot(root)
    bundles = installed_bundle_dir(root)
    names = sorted(p.name for p in bundles.iterdir() if not p.is_symlink())
    assert len(names) == 2
    assert os.readlink(bundles / "current") != before["var/lib/yolo-edge/bundles/current"][1]
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert all(k.startswith("var/lib/yolo-edge/bundles/") for k in changed), changed
    assert not any(k in changed for k in before if k.startswith("var/lib/yolo-edge/bundles/shapes-"))


def test_bundle_given_through_a_link_is_copied_not_linked(tmp_path: Path, bundle: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    link = tmp_path / "current"
    link.symlink_to(bundle)
    install(root, "--bundle", str(link))
    copied = (installed_bundle_dir(root) / "current").resolve()
    assert copied.name.startswith("shapes-") and not copied.is_symlink()
    assert (copied / "manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()


def test_rerun_upgrades_a_changed_unit_but_not_the_edited_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root)
    unit = root / "etc/systemd/system" / SERVICE
    unit.write_text("# an old version\n")
    config = root / "etc/yolo-edge/agent.toml"
    config.write_text("[mqtt]\nhost = 'mine'\n")
    install(root)
    assert unit.read_text() == UNIT.read_text()
    assert config.read_text() == "[mqtt]\nhost = 'mine'\n"


def test_uninstall_keeps_config_and_state_unless_purge(tmp_path: Path, bundle: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--bundle", str(bundle), "--mqtt-password-stdin", stdin="pw\n")
    outbox = root / "var/lib/yolo-edge/outbox.sqlite3"
    outbox.write_bytes(b"undelivered events")

    result = run(UNINSTALL, "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/systemd/system" / SERVICE).exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants" / SERVICE).exists()
    assert not (root / "opt/yolo-edge").exists()
    assert (root / "etc/yolo-edge/agent.toml").exists() and (root / "etc/yolo-edge/mqtt-password").exists()
    assert outbox.exists() and (installed_bundle_dir(root) / "current").resolve().is_dir()

    install(root)  # a reinstall carries on with the kept config and state
    assert outbox.read_bytes() == b"undelivered events"

    result = run(UNINSTALL, "--root", str(root), "--purge")
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/yolo-edge").exists() and not (root / "var/lib/yolo-edge").exists()
    assert not (root / "opt/yolo-edge").exists()


# --- one camera of several: --instance NAME ---------------------------------------------------


def test_refuses_in_one_line_when_not_root() -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to drop root")
    for script in (INSTALL, UNINSTALL):
        result = run(script, as_nobody=True)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "must run as root: sudo" in result.stderr, result.stderr


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs here: this would really install")
@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_refuses_in_one_line_without_systemd() -> None:
    for script in (INSTALL, UNINSTALL):
        result = run(script)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "systemd is not running" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bundle", "/nonexistent-bundle"], "is not a bundle directory"),
        (["--source", "/tmp"], "is not a yolo-edge checkout"),
        (["--python", "/nonexistent/python3"], "not found"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
        (["--instance", "front/left"], "--instance 'front/left' is not a camera name"),
        (["--instance", ""], "--instance '' is not a camera name"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run(INSTALL, "--root", str(tmp_path), "--skip-pip", *args)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not any(tmp_path.iterdir()), "something was installed before the refusal"


def test_empty_password_is_refused(tmp_path: Path) -> None:
    result = run(
        INSTALL, "--root", str(tmp_path), "--skip-pip", "--python", sys.executable, "--mqtt-password-stdin", stdin="\n"
    )
    assert result.returncode == 1 and "the password is empty" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt install shellcheck)")
def test_scripts_are_shellcheck_clean() -> None:
    # -x follows install.sh into instance.sh, which it sources.
    command = ["shellcheck", "-x", str(INSTALL), str(UNINSTALL), str(INSTANCE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT.parent)
    assert result.returncode == 0, result.stdout


@pytest.mark.slow
def test_real_pip_install_puts_the_agent_alone_in_the_venv(tmp_path: Path) -> None:
    """The real `pip install` from the package index: agent dependencies yes, converter ones no."""
    root = tmp_path / "root"
    root.mkdir()
    result = run(INSTALL, "--root", str(root), "--python", sys.executable, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    venv = root / "opt/yolo-edge/venv"
    agent = venv / "bin" / "yolo-edge-agent"
    assert subprocess.run([str(agent), "--help"], capture_output=True, timeout=60).returncode == 0
    check = "import agent.cli, onnxruntime, cv2, paho.mqtt.client, numpy"
    subprocess.run([str(venv / "bin/python"), "-c", check], check=True, timeout=120)

    # What the venv itself holds (system site-packages, visible through it, are not its doing).
    site = next(venv.glob("lib/python3.*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"yolo_edge", "onnxruntime", "paho_mqtt", "opencv_python_headless"} <= installed, installed
    assert not installed & {"torch", "ultralytics", "onnx", "onnxslim", "matplotlib", "torchvision"}, installed
    has_system_numpy = subprocess.run([sys.executable, "-s", "-c", "import numpy"], capture_output=True).returncode == 0
    if has_system_numpy:
        # Kept from the system (apt's, on a Pi), so Picamera2's compiled helpers keep working.
        assert "numpy" not in installed and "keeping the system's numpy" in result.stdout
    assert not (root / "opt/yolo-edge").joinpath("build").exists()
    assert not list(ROOT.glob("build")), "pip built inside the checkout"

    # A second run upgrades in place and leaves it working.
    again = run(INSTALL, "--root", str(root), "--python", sys.executable, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert subprocess.run([str(agent), "--help"], capture_output=True, timeout=60).returncode == 0

"""The unit file: systemd's own checks (verify, security) and the settings the agent relies on.

systemd is not PID 1 in the test container, so nothing here starts the unit; what can be checked
offline is: the file parses, its sandbox scores as claimed, and the real agent makes no system call
the unit's SystemCallFilter= would refuse.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.broker import Broker

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "yolo-edge-agent.service"
INSTALL = ROOT / "systemd" / "install.sh"
EXAMPLE_CONFIG = ROOT / "systemd" / "agent.example.toml"
VENV = "/opt/yolo-edge/venv"
MAX_EXPOSURE = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt install systemd)"
)


def directives(text: str) -> dict[str, list[str]]:
    """'Section.Key' -> every value given, in order (systemd keys may repeat)."""
    found: dict[str, list[str]] = defaultdict(list)
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found[f"{section}.{key.strip()}"].append(value.strip())
    return found


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return directives(UNIT.read_text())


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key, [])
    assert len(values) == 1, f"{key} is set {len(values)} times in {UNIT.name}"
    return values[0]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, f"{value!r} is not a plain number of seconds or minutes"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def runnable_copy(tmp_path: Path, unit: Path = UNIT) -> Path:
    """The unit with ExecStart pointing at a stub under tmp_path.

    `systemd-analyze verify` insists that ExecStart's binary exists and is executable, and --root
    needs a whole OS tree; the unit is otherwise checked exactly as installed.
    """
    stub = tmp_path / "venv" / "bin" / "yolo-edge-agent"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(VENV, str(tmp_path / "venv")))
    return copy


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60
    )


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = verify(runnable_copy(tmp_path))
    # verify exits 0 on unknown keys too and only warns, so any output is a failure.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


@needs_systemd_analyze
def test_verify_would_see_a_mistake(tmp_path: Path) -> None:
    """The check above means something: a misspelt key makes verify speak."""
    copy = runnable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    assert "ProtectHomes" in verify(copy).stderr


@needs_systemd_analyze
def test_security_exposure_is_at_most_2_and_as_documented() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} is above {MAX_EXPOSURE}:\n{result.stdout}"
    documented = re.search(r"rates this unit (\d+\.\d+)", UNIT.read_text())
    assert documented and float(documented.group(1)) == exposure, "update the figure in the unit's header"


def test_notify_watchdog_and_restart_policy(unit: dict[str, list[str]]) -> None:
    assert one(unit, "Service.Type") == "notify"
    assert one(unit, "Service.NotifyAccess") == "main"
    assert one(unit, "Service.Restart") == "on-failure"
    assert seconds(one(unit, "Service.WatchdogSec")) >= 10  # the agent pings at most every WatchdogSec/4
    assert seconds(one(unit, "Service.TimeoutStartSec")) >= 60  # model load + auto precision on a Pi 4
    # A clean stop flushes the outbox for up to 3 s after the frame in hand.
    assert 5 <= seconds(one(unit, "Service.TimeoutStopSec")) <= 30
    assert seconds(one(unit, "Unit.StartLimitIntervalSec")) > 0
    assert int(one(unit, "Unit.StartLimitBurst")) >= 1
    assert one(unit, "Service.ExecStart") == f"{VENV}/bin/yolo-edge-agent run --config /etc/yolo-edge/agent.toml"


def test_camera_access_without_private_devices(unit: dict[str, list[str]]) -> None:
    assert unit.get("Service.PrivateDevices", ["no"])[-1] in ("no", "false", "0")
    assert one(unit, "Service.DevicePolicy") == "closed"
    allowed = {value.split()[0] for value in unit["Service.DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap"} <= allowed
    assert one(unit, "Service.SupplementaryGroups") == "video"


def test_user_and_directories_match_install_script_and_example_config(unit: dict[str, list[str]]) -> None:
    user = re.search(r"^readonly USER_NAME=(\S+)$", INSTALL.read_text(), re.MULTILINE)
    assert user and one(unit, "Service.User") == user.group(1) == one(unit, "Service.Group")
    assert one(unit, "Service.StateDirectory") == "yolo-edge"
    assert one(unit, "Service.ConfigurationDirectory") == "yolo-edge"
    assert 'path = "/var/lib/yolo-edge/bundles/current"' in EXAMPLE_CONFIG.read_text()
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
    ):
        assert one(unit, f"Service.{key}") == "yes", key
    assert one(unit, "Service.ProtectSystem") == "strict"
    assert one(unit, "Service.MemoryMax")
    assert unit["Service.SystemCallFilter"][0] == "@system-service"


# --- the syscall filter against the real agent -----------------------------------------------


@functools.cache
def syscall_group(name: str) -> frozenset[str]:
    """Every system call in a systemd group such as @system-service, nested groups expanded."""
    command = ["systemd-analyze", "syscall-filter", "--no-pager", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= syscall_group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def allowed_syscalls(filters: list[str]) -> set[str]:
    """What SystemCallFilter= lines allow: the first is an allow list, '~' lines take away from it."""
    allowed: set[str] = set()
    for value in filters:
        deny = value.startswith("~")
        names = set()
        for item in value.lstrip("~").split():
            names |= syscall_group(item) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return allowed


def traced_syscalls(summary: Path) -> set[str]:
    """Names from `strace -c` output (the rows, not the header or the total)."""
    calls = set()
    for line in summary.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls.add(parts[-1])
    return calls


@needs_systemd_analyze
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt install strace)")
def test_the_agent_makes_no_system_call_the_unit_refuses(
    unit: dict[str, list[str]], fixture_onnx: Path, sample_video: tuple[Path, list], broker: Broker, tmp_path: Path
) -> None:
    """The agent on a video file, publishing to a real broker through its outbox, under strace.

    This traces x86_64 here and aarch64 on a Pi makes the same kinds of calls (it has no legacy
    open/stat, which only shrinks the set). Camera drivers are not exercised.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_EDGE_")}
    for value in unit.get("Service.Environment", []):
        key, _, val = value.partition("=")
        env[key] = val
    env.update(YOLO_EDGE_AGENT_STATE_DIR=str(tmp_path / "state"), YOLO_EDGE_STATS_INTERVAL="0.5")
    summary = tmp_path / "strace.txt"
    video, _ = sample_video
    mqtt = f"--mqtt-host {broker.host} --mqtt-port {broker.port}".split()
    agent = [sys.executable, "-m", "agent.cli", "run", "--model", str(fixture_onnx), "--source", str(video), *mqtt]
    command = ["strace", "-f", "-qq", "-c", "-o", str(summary), *agent, "--max-frames", "40"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 and "ptrace" in result.stderr:
        pytest.skip(f"strace cannot trace here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr[-2000:]
    used = traced_syscalls(summary)
    assert {"openat", "sendto", "connect"} <= used, "the trace looks empty"
    allowed = allowed_syscalls(unit["Service.SystemCallFilter"])
    assert "openat" in allowed and not {"setuid", "mount", "reboot"} & allowed, "the filter is not read right"
    refused = used - allowed
    if os.geteuid() == 0:
        # SQLite fchown()s its journal files only when it runs as root; the service never does.
        refused.discard("fchown")
    assert not refused, f"SystemCallFilter= would refuse (EPERM) {sorted(refused)}"

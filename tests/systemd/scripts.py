"""install.sh and uninstall.sh run as a test runs them: in a throwaway root (--root), without pip.

--root installs everything under a directory instead of /, skips the user, ownership and
systemctl start (it still writes the enable link with `systemctl --root`), and needs neither root
nor a running systemd. Shared by test_install.py, test_install_cameras.py and test_two_cameras.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from agent.config import AgentConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "systemd" / "install.sh"
UNINSTALL = ROOT / "systemd" / "uninstall.sh"


def run(
    script: Path,
    *args: str,
    stdin: str | None = None,
    as_nobody: bool = False,
    timeout: float = 120,
    umask: int = 0o022,
) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(script), *args]
    if as_nobody and os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {k: v for k, v in os.environ.items() if k != "YOLO_EDGE_PIP_ARGS"}
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, umask=umask)


def install(root: Path, *args: str, stdin: str | None = None, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    args = ("--root", str(root), "--skip-pip", "--python", sys.executable, *args)
    result = run(INSTALL, *args, stdin=stdin, umask=umask)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def make_bundle(parent: Path, name: str, marker: str) -> Path:
    """A directory shaped like a bundle; install.sh copies it and never loads it."""
    bundle = parent / name
    bundle.mkdir(parents=True)
    manifest = {"format": "yolo-edge-bundle", "version": 1, "marker": marker}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "model.fp32.onnx").write_bytes(b"not really a model " + marker.encode())
    (bundle / "report.md").write_text("# report\n")
    return bundle


def snapshot(root: Path, skip: tuple[str, ...] = ("opt/yolo-edge/venv",)) -> dict[str, tuple]:
    """relative path -> (kind, content or link target, mode, mtime_ns) of everything under root."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(skip):
            continue
        info = path.lstat()
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path), None, None)
        elif path.is_dir():
            found[rel] = ("dir", None, stat.S_IMODE(info.st_mode), None)
        else:
            found[rel] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    return found


def pi_root(tmp_path: Path, hostname: str = "pi5") -> Path:
    """A throwaway root whose /etc/hostname names the Pi it is for (install.sh reads it under --root)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text(f"{hostname}\n")
    return root


def camera_config(root: Path, camera: str, env: dict[str, str] | None = None) -> AgentConfig:
    """agent-CAMERA.toml as the agent reads it; its model path, which names the Pi's tree, is checked apart."""
    path = root / f"etc/yolo-edge/agent-{camera}.toml"
    return load_config(path, env=env or {}, overrides={("model", "path"): root}, require_model=False)


def cpu_share(root: Path, camera: str) -> set[int]:
    """The CPUs of camera's CPUAffinity= drop-in ("0-1", "2" or "0,2-3")."""
    drop_in = root / f"etc/systemd/system/yolo-edge-agent@{camera}.service.d/50-cpus.conf"
    (value,) = [line.split("=", 1)[1] for line in drop_in.read_text().splitlines() if line.startswith("CPUAffinity=")]
    cpus: set[int] = set()
    for part in value.replace(",", " ").split():
        first, _, last = part.partition("-")
        cpus |= set(range(int(first), int(last or first) + 1))
    return cpus

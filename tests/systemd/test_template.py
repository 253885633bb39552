"""The per-camera unit, yolo-edge-agent@.service, with the CPU share install.sh gives each camera.

The template is the single unit with a few lines made per camera; the watchdog, the restart policy
and the sandbox must stay the same, so a setting changed in one unit and not the other fails here.
test_unit.py checks those settings themselves (on the single unit) and its sandbox's rating.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.systemd.test_unit import ROOT, UNIT, VENV, directives, needs_systemd_analyze, runnable_copy, verify

TEMPLATE = ROOT / "systemd" / "yolo-edge-agent@.service"
INSTANCE = ROOT / "systemd" / "instance.sh"

# What differs from the single unit, and how: each camera's config, environment file and state directory.
PER_CAMERA = {
    "Service.ExecStart": [f"{VENV}/bin/yolo-edge-agent run --config /etc/yolo-edge/agent-%i.toml"],
    "Service.EnvironmentFile": ["-/etc/yolo-edge/agent-%i.env"],
    "Service.StateDirectory": ["yolo-edge/%i"],
}


def test_the_template_is_the_single_unit_but_for_the_per_camera_lines() -> None:
    single, template = directives(UNIT.read_text()), directives(TEMPLATE.read_text())
    differ = {key for key in single.keys() | template.keys() if single.get(key) != template.get(key)}
    assert differ == {*PER_CAMERA, "Unit.Description"}, (
        f"{TEMPLATE.name} and {UNIT.name} differ in {sorted(differ - {*PER_CAMERA, 'Unit.Description'})}, "
        "or agree where they should not: keep them in step"
    )
    for key, value in PER_CAMERA.items():
        assert template[key] == value, key
    assert "%i" in template["Unit.Description"][0]
    # What the per-camera lines replace: the single camera's own.
    assert single["Service.StateDirectory"] == ["yolo-edge"]
    assert single["Service.ExecStart"] == [f"{VENV}/bin/yolo-edge-agent run --config /etc/yolo-edge/agent.toml"]


def camera_with_cpu_share(tmp_path: Path, camera: str = "front") -> Path:
    """A runnable template copy and, beside it, the drop-in install.sh's split_cpus writes for `camera`."""
    copy = runnable_copy(tmp_path, TEMPLATE)
    script = f'die() {{ echo "$*" >&2; exit 1; }}; source "$1"; split_cpus "$2" {camera}'
    result = subprocess.run(
        ["bash", "-c", script, "split", str(INSTANCE), str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout.startswith(f"{camera} 0"), result.stdout + result.stderr
    assert (tmp_path / f"yolo-edge-agent@{camera}.service.d" / "50-cpus.conf").is_file()
    return copy.with_name(f"yolo-edge-agent@{camera}.service")


@needs_systemd_analyze
def test_a_camera_instance_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = verify(camera_with_cpu_share(tmp_path))
    # verify exits 0 on unknown keys too and only warns, so any output is a failure.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


@needs_systemd_analyze
def test_verify_reads_the_template_and_the_drop_in_for_an_instance(tmp_path: Path) -> None:
    """The check above means something: a misspelt key in either makes verify speak about the instance."""
    instance = camera_with_cpu_share(tmp_path)
    template = tmp_path / TEMPLATE.name
    template.write_text(template.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    drop_in = tmp_path / f"{instance.name}.d" / "50-cpus.conf"
    drop_in.write_text(drop_in.read_text().replace("CPUAffinity=", "CPUAfinity="))
    said = verify(instance).stderr
    assert "ProtectHomes" in said and "CPUAfinity" in said, said

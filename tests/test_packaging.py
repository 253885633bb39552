"""`make wheel`, as a user runs it to carry the project to a Pi without internet: what the wheel holds."""

from __future__ import annotations

import re
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    dist = tmp_path_factory.mktemp("dist")
    had_build = (ROOT / "build").exists()
    subprocess.run(["make", "-C", str(ROOT), "wheel", f"DIST={dist}"], check=True, capture_output=True, timeout=300)
    # pip builds in the checkout: what it leaves there would fail install.sh's test, which runs after on a rerun.
    assert had_build or not (ROOT / "build").exists(), "make wheel left build/ in the checkout"
    built = sorted(dist.glob("yolo_edge-*.whl"))
    assert len(built) == 1, f"make wheel should leave one wheel in {dist}, found {built}"
    return zipfile.ZipFile(built[0])


def metadata(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [entry for entry in wheel.namelist() if entry.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_the_wheel_carries_the_three_commands_and_the_dashboard(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for module in ("agent/cli.py", "converter/cli.py", "fleet/cli.py", "agent/transport/outbox.py"):
        assert module in names
    dashboard = {name for name in names if name.startswith("fleet/dashboard/")}
    assert {
        "fleet/dashboard/index.html",
        "fleet/dashboard/js/app.js",
        "fleet/dashboard/vendor/mqtt.esm.js",
    } <= dashboard
    assert {"fleet/dashboard/vendor/mqtt.LICENSE.md", "fleet/dashboard/vendor/uPlot.LICENSE"} <= dashboard
    assert not {name for name in names if name.startswith(("tests/", "benchmarks/"))}
    scripts = metadata(wheel, "entry_points.txt")
    for command in ("yolo-edge-agent = agent.cli:main", "yolo-edge-convert", "yolo-edge-fleet = fleet.cli:main"):
        assert command in scripts


def test_the_wheels_base_install_is_the_pyproject_runtime_and_never_torch(wheel: zipfile.ZipFile) -> None:
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata(wheel, "METADATA"), flags=re.MULTILINE)
    base = {re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0].lower() for line in requires if "extra ==" not in line}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert base == {re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0].lower() for line in declared}
    assert base == {"onnxruntime", "numpy", "opencv-python-headless", "paho-mqtt"}

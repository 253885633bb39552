from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.pi import compare_detections
from benchmarks.pi.compare_detections import Comparison, compare, read_detections
from benchmarks.pi.reference import EXACT_AGENT, MIN_PSNR_DB, PLAIN_AGENT, spread, x86_agent

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "pi" / "pi_check.sh"
BOX = [0.1, 0.2, 0.3, 0.4]

Run = dict[int, list[tuple[int, float, list[float]]]]  # frame -> (class id, confidence, normalized box)


def write_run(path: Path, frames: Run) -> Path:
    """A dry-run output: one detections message per frame, plus the status line every run starts with."""
    lines = [json.dumps({"topic": "yolo-edge/pi/status", "qos": 1, "retain": True, "payload": "online"})]
    for frame, detections in frames.items():
        payload = {
            "frame": frame,
            "source": {"width": 640, "height": 480},
            "detections": [
                {"label": str(c), "class_id": c, "confidence": conf, "box": box} for c, conf, box in detections
            ],
        }
        lines.append(json.dumps({"topic": "yolo-edge/pi/detections", "qos": 0, "retain": False, "payload": payload}))
    path.write_text("\n".join(lines) + "\n")
    return path


def compare_runs(
    tmp_path: Path, reference: Run, candidate: Run, box_tol_px: float = 0.1, conf_tol: float = 0.001
) -> Comparison:
    return compare(
        read_detections(write_run(tmp_path / "ref.jsonl", reference)),
        read_detections(write_run(tmp_path / "cand.jsonl", candidate)),
        box_tol_px,
        conf_tol,
        threshold=0.25,
    )


def test_identical_runs_match(tmp_path: Path) -> None:
    run = {0: [(1, 0.9, BOX), (2, 0.8, [0.5, 0.5, 0.7, 0.9])], 3: [(0, 0.6, BOX)]}
    result = compare_runs(tmp_path, run, run)
    assert result.problems == []
    assert (result.frames, result.detections, result.matched) == (2, 3, 3)


def test_detection_order_within_a_frame_does_not_matter(tmp_path: Path) -> None:
    first, second = (1, 0.9, BOX), (2, 0.8, [0.5, 0.5, 0.7, 0.9])
    assert compare_runs(tmp_path, {0: [first, second]}, {0: [second, first]}).problems == []


def test_a_moved_box_differs_beyond_the_tolerance_only(tmp_path: Path) -> None:
    moved = [0.1 + 2 / 640, 0.2, 0.3, 0.4]  # 2 px on a 640 px wide frame
    assert compare_runs(tmp_path, {0: [(1, 0.9, BOX)]}, {0: [(1, 0.9, moved)]}, box_tol_px=3).problems == []
    problems = compare_runs(tmp_path, {0: [(1, 0.9, BOX)]}, {0: [(1, 0.9, moved)]}, box_tol_px=1).problems
    assert len(problems) == 1 and "2.00 px" in problems[0]


def test_another_class_or_a_missing_detection_differs(tmp_path: Path) -> None:
    assert compare_runs(tmp_path, {0: [(1, 0.9, BOX)]}, {0: [(2, 0.9, BOX)]}).problems
    assert compare_runs(tmp_path, {0: [(1, 0.9, BOX)]}, {}).problems


def test_a_detection_on_the_threshold_may_fall_on_either_side(tmp_path: Path) -> None:
    result = compare_runs(tmp_path, {0: [(1, 0.9, BOX), (2, 0.2505, [0.5, 0.5, 0.7, 0.9])]}, {0: [(1, 0.9, BOX)]})
    assert result.problems == []
    assert result.borderline == 1


def run_main(monkeypatch: pytest.MonkeyPatch, *argv: str | Path) -> int:
    monkeypatch.setattr("sys.argv", ["compare_detections", *map(str, argv)])
    return compare_detections.main()


def test_an_empty_reference_fails_and_info_reports_without_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = write_run(tmp_path / "full.jsonl", {0: [(1, 0.9, BOX)]})
    moved = write_run(tmp_path / "moved.jsonl", {0: [(1, 0.7, BOX)]})
    empty = write_run(tmp_path / "empty.jsonl", {})
    assert run_main(monkeypatch, "--label", "x", empty, full) == 1
    assert capsys.readouterr().out.startswith("x: FAILED: ")  # what the check's summary counts
    assert run_main(monkeypatch, "--label", "x", full, moved) == 1
    assert run_main(monkeypatch, "--label", "x", "--info", full, moved) == 0
    assert "x: beyond the tolerances" in capsys.readouterr().out.splitlines()[-2]


@pytest.mark.parametrize(("x86", "vnni"), [(True, True), (True, False), (False, False)])
def test_the_int8_reference_uses_the_exact_kernels_whatever_the_host_by_default(x86: bool, vnni: bool) -> None:
    reference = x86_agent("int8", "always", x86=x86, vnni=vnni)
    assert reference.module == EXACT_AGENT
    assert "exact" in reference.reason and "always" in reference.reason


def test_fp32_runs_the_plain_agent_and_auto_and_never_depend_on_the_host() -> None:
    for setting in ("always", "auto", "never"):
        assert x86_agent("fp32", setting, x86=True, vnni=False).module == PLAIN_AGENT
    assert x86_agent("int8", "auto", x86=True, vnni=False).module == EXACT_AGENT
    assert x86_agent("int8", "auto", x86=True, vnni=True).module == PLAIN_AGENT
    assert x86_agent("int8", "never", x86=True, vnni=False).module == PLAIN_AGENT
    with pytest.raises(ValueError, match="PI_CHECK_EXACT_X86_INT8"):
        x86_agent("int8", "yes", x86=True, vnni=True)


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_two_decodings_a_level_or_two_apart_are_the_same_images() -> None:
    x86 = [frame(0), frame(1)]
    arm = [image.copy() for image in x86]
    arm[0][::2] = np.clip(arm[0][::2].astype(np.int16) + 2, 0, 255).astype(np.uint8)  # half the rows, 2 levels
    result = spread(arm, x86)
    assert result.problems == []
    assert result.frames == 2 and result.max_abs == 2
    assert 0.2 < result.differing < 0.3  # half of one of the two frames (less where clipped at 255)
    assert result.min_psnr_db > MIN_PSNR_DB
    assert spread(x86, x86).min_psnr_db == float("inf")


def test_another_image_a_missing_frame_or_another_size_is_not_a_decoder_difference() -> None:
    x86 = [frame(0), frame(1)]
    shifted = [np.roll(x86[0], 3, axis=1), x86[1]]
    assert "not the same image" in spread(shifted, x86).problems[0]
    assert "1 frames decoded on arm64, 2 on x86" in spread(x86[:1], x86).problems
    assert "frame 1:" in spread([x86[0], x86[1][:-1]], x86).problems[0]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt install shellcheck)")
def test_script_is_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("given", ["default", "relative"])
def test_make_pi_check_hands_the_script_an_interpreter_it_can_run_from_elsewhere(tmp_path: Path, given: str) -> None:
    """The script changes directory before it runs the interpreter, so `make pi-check` must pass an absolute path."""
    relative = os.path.relpath(sys.executable, ROOT)  # PY=.venv/bin/python, as a user types it
    args = ["make", "-n", "-C", str(ROOT), "pi-check", *([f"PY={relative}"] if given == "relative" else [])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [recipe] = [line for line in result.stdout.splitlines() if "pi_check.sh" in line]
    name, _, python = shlex.split(recipe)[0].partition("=")
    assert name == "PI_CHECK_PYTHON" and Path(python).is_absolute(), recipe
    expected = ROOT / ".venv" / "bin" / "python" if given == "default" else ROOT / relative
    assert Path(python) == expected.absolute()
    if given == "relative" or expected.exists():  # a worktree may share another checkout's venv
        ran = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, cwd="/")
        assert ran.stdout.strip() == sys.prefix, ran.stderr


def test_the_script_makes_a_relative_interpreter_absolute_before_it_changes_directory(tmp_path: Path) -> None:
    """Run as `PI_CHECK_PYTHON=bin/python pi_check.sh`: the interpreter it goes on with is absolute.

    The stand-in interpreter fails the script's first use of it (the converter's imports), which stops
    the check there; stand-in debootstrap and qemu keep it from installing them.
    """
    tools, interpreter = tmp_path / "tools", tmp_path / "bin" / "python"
    for path, body in [
        (tools / "debootstrap", "exit 0"),
        (tools / "qemu-aarch64-static", "exit 0"),
        (interpreter, "exit 1"),
    ]:
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "PI_CHECK_PYTHON": "bin/python",
        "PI_CHECK_CACHE": str(tmp_path / "cache"),
    }
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert f"pi-check: {interpreter} cannot import the converter's dependencies" in result.stderr, result.stderr
    missing = {**env, "PI_CHECK_PYTHON": "nowhere/python"}
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=missing)
    assert result.returncode == 2 and result.stderr.startswith("pi-check: PI_CHECK_PYTHON: nowhere/python is not"), (
        result.stderr
    )


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("YOLO_EDGE_PI_CHECK") != "1"
    or shutil.which("qemu-aarch64-static") is None
    or shutil.which("debootstrap") is None
    or os.geteuid() != 0,
    # Opt-in: 3-4 minutes would push the suite past its 15-minute budget; `make pi-check` runs it.
    reason="set YOLO_EDGE_PI_CHECK=1; needs root, qemu-user-static and debootstrap",
)
def test_agent_on_emulated_pi4_and_pi5_matches_x86() -> None:
    """The whole check: 4-5 minutes the first time (arm64 root and wheels cached in ~/.cache/yolo-edge-pi)."""
    # This interpreter for the x86 side, whichever checkout's venv it belongs to.
    env = {**os.environ, "PI_CHECK_PYTHON": os.environ.get("PI_CHECK_PYTHON", sys.executable)}
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=1800, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "pi-check: OK" in result.stdout

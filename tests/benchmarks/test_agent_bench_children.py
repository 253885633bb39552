"""agent_bench's children: each gets an agent state directory of its own (no timing here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.agent_bench import ChildStateDirs, RunResult, child_env, startup_rows


def test_every_child_gets_a_new_empty_state_directory(tmp_path: Path) -> None:
    dirs = ChildStateDirs(tmp_path / "state")
    made = [dirs.fresh("agent-auto"), dirs.fresh("agent-auto"), dirs.fresh("ultralytics")]
    assert len(set(made)) == 3
    assert all(path.is_dir() and not any(path.iterdir()) and path.parent == tmp_path / "state" for path in made)


def test_a_state_directory_is_never_handed_out_twice(tmp_path: Path) -> None:
    (tmp_path / "001-agent-auto").mkdir()
    (tmp_path / "001-agent-auto" / "precision-choice.json").write_text("{}")
    with pytest.raises(FileExistsError):
        ChildStateDirs(tmp_path).fresh("agent-auto")


def test_child_env_points_the_agent_at_its_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_EDGE_AGENT_STATE_DIR", "/home/someone/.local/state/yolo-edge")
    env = child_env(2, tmp_path / "001-agent-fp32")
    assert env["YOLO_EDGE_AGENT_STATE_DIR"] == str(tmp_path / "001-agent-fp32")
    assert env["OMP_NUM_THREADS"] == "2"


def test_agent_auto_start_up_is_two_rows_first_and_cached() -> None:
    auto = [RunResult(fps=30.0, startup_s=1.4, cached_startup_s=0.5), RunResult(fps=30.0, startup_s=1.3)]
    rows = startup_rows({"agent-fp32": [RunResult(fps=20.0, startup_s=0.5)] * 2, "agent-auto": auto})
    assert rows == {
        "agent-fp32": [0.5, 0.5],
        "agent-auto, first start": [1.4, 1.3],
        "agent-auto, cached start": [0.5, 0.0],
    }

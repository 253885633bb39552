from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.agent_process import Observer
from tests.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_WEIGHTS = ROOT / "tests" / "assets" / "shapes_yolo11n.pt"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto per test: tests stop and restart it at will."""
    running = Broker(tmp_path).start()
    yield running
    running.stop()


@pytest.fixture
def observe() -> Iterator[Callable[..., Observer]]:
    """Make observers that are closed at teardown, even when the test failed."""
    made: list[Observer] = []

    def make(broker: Broker, device_id: str, **kwargs: Any) -> Observer:
        made.append(Observer(broker.host, broker.port, device_id, **kwargs))
        return made[-1]

    yield make
    for observer in made:
        observer.close()


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's synthetic dataset, regenerated from its seed; returns data.yaml."""
    from benchmarks.fixture.make_shapes import write_dataset

    return write_dataset(tmp_path_factory.mktemp("shapes"), splits={"train": (0, 120), "val": (100_000, 60)})


@pytest.fixture(scope="session")
def fixture_weights() -> Path:
    if not FIXTURE_WEIGHTS.exists():
        pytest.fail(f"{FIXTURE_WEIGHTS} is missing; run python -m benchmarks.fixture.make_shapes --train")
    return FIXTURE_WEIGHTS


@pytest.fixture(scope="session")
def fixture_onnx(tmp_path_factory: pytest.TempPathFactory, fixture_weights: Path) -> Path:
    """The fixture model exported to a bare FP32 ONNX (320) with Ultralytics' exporter."""
    from converter.export import export_model

    workdir = tmp_path_factory.mktemp("fixture-onnx")
    return export_model(fixture_weights, workdir, imgsz=None, head="auto").onnx_path


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """A 640x480 MJPG video of moving shapes and the true (boxes_xyxy, class_ids) of each frame."""
    from benchmarks.fixture.video import write_shapes_video

    path = tmp_path_factory.mktemp("video") / "shapes.avi"
    return path, write_shapes_video(path, frames=90)


@pytest.fixture(scope="session")
def fixture_bundle(tmp_path_factory: pytest.TempPathFactory, fixture_weights: Path, shapes_dataset: Path) -> Path:
    """The fixture converted by the real command (FP32 + validated INT8), shared by every test that reads it."""
    from converter.cli import main

    out = tmp_path_factory.mktemp("bundle") / "shapes"
    args = [fixture_weights, "--out", out, "--calib", shapes_dataset, "--calib-size", "64", "--val-size", "60"]
    assert main([str(a) for a in args]) == 0
    return out

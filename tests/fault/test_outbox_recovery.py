"""A corrupt outbox file or a full disk when the agent starts: it runs on, says so, and loses no file.

What a power cut leaves on an SD card (random bytes, or a valid SQLite header over torn pages) is
set aside with its bytes and a fresh outbox started; a state directory that cannot take the file
at start (RLIMIT_FSIZE set before the agent runs, as in test_disk_full.py) holds events in memory
until space returns. Either used to end in `cannot set up: ...` and exit 2, which under systemd's
restart limit leaves the device dark for good.
"""

from __future__ import annotations

import random
import resource
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.transport.outbox import NewMessage, Outbox
from tests.agent.agent_process import AgentProcess, Observer, distinct_events, looping_agent, outbox_events
from tests.broker import Broker
from tests.fault.processes import limit_file_size

OUTBOX = "outbox.sqlite3"
PAGE = 4096  # SQLite's default page size, which the outbox keeps
TORN_ROWS = 200  # events in the torn file: the fresh outbox must not hand out their numbers again
START_TIMEOUT_S = 60.0  # model load and the first events on a loaded machine
# Under this cap SQLite cannot make its 32 KiB -shm file, so the outbox cannot be created, while the
# agent's log, the one other file it writes, has room for every line the test reads.
START_CAP_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the module; each test has its own device id, so retained messages do not mix."""
    running = Broker(tmp_path_factory.mktemp("outbox-recovery-broker")).start()
    yield running
    running.stop()


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(24).randbytes(64 * 1024))


def torn_pages(path: Path) -> None:
    """A real outbox of TORN_ROWS events whose pages after the first (the header and schema) are garbage."""
    with Outbox(path) as outbox:  # numbered as the spool numbers them, stored as the courier stores them
        pad = b"x" * 300
        outbox.store(
            [
                NewMessage("yolo-edge/x/events", b'{"seq": %d, "pad": "%s"}' % (seq, pad), counter="events", seq=seq)
                for seq in range(1, TORN_ROWS + 1)
            ]
        )
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * PAGE and data.startswith(b"SQLite format 3\x00")
    rng = random.Random(24)
    for start in range(PAGE, len(data), PAGE):
        data[start : start + PAGE] = rng.randbytes(PAGE)
    path.write_bytes(bytes(data))


def fsize_cap(max_bytes: int) -> Callable[[], None]:
    """preexec_fn: the agent starts with writes past `max_bytes` in any file failing (EFBIG), like a full disk."""

    def cap() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))

    return cap


def wait_running(agent: AgentProcess, observer: Observer, what: str, predicate: Callable[[], bool]) -> None:
    """Wait for `predicate`, failing at once (with its log) if the agent exits first."""
    observer.wait_for(what, lambda: not agent.running or predicate(), START_TIMEOUT_S)
    assert agent.running, agent.describe()


def last_mqtt_stats(observer: Observer) -> dict:
    stats = observer.json("stats")
    return stats[-1]["mqtt"] if stats else {}


@pytest.mark.fault
@pytest.mark.parametrize("damage", [random_bytes, torn_pages], ids=["random-bytes", "torn-pages"])
def test_a_corrupt_outbox_is_set_aside_with_its_bytes_and_a_fresh_one_started(
    tmp_path: Path,
    damage: Callable[[Path], None],
    shared_broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    damage(state / OUTBOX)
    damaged = (state / OUTBOX).read_bytes()
    device = f"fault-outbox-{damage.__name__.replace('_', '-')}"
    observer = observe(shared_broker, device)
    video = sample_video[0]
    with looping_agent(tmp_path, shared_broker, device, fixture_onnx, video, state_dir=state) as agent:
        wait_running(agent, observer, "two events", lambda: len(observer.on("events")) >= 2)
        aside = [p for p in state.glob(f"{OUTBOX}.corrupt-*") if not p.name.endswith(("-wal", "-shm", "-journal"))]
        assert len(aside) == 1, sorted(p.name for p in state.iterdir())
        assert aside[0].read_bytes() == damaged, "the corrupt file's bytes are kept, unchanged"
        wait_running(
            agent,
            observer,
            "stats saying the outbox was recovered",
            lambda: last_mqtt_stats(observer).get("outbox_recovered") == 1,
        )
        assert last_mqtt_stats(observer)["outbox_set_aside"] == aside[0].name
        assert last_mqtt_stats(observer)["outbox_writable"] is True
        code, _ = agent.stop(timeout=10.0)
        assert code == 0, agent.describe()
        log = agent.stderr
    said = [line for line in log.splitlines() if aside[0].name in line]
    assert len(said) == 1 and str(state / OUTBOX) in said[0], log
    assert "Traceback" not in log
    events = distinct_events(observer.on("events"))  # no number given to two events
    assert events[0]["seq"] > TORN_ROWS, "numbers the corrupt file gave out are not given out again"
    with sqlite3.connect(state / OUTBOX) as db:  # the fresh outbox is sound and was used
        assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    assert outbox_events(state) == [], "every event was delivered"


@pytest.mark.fault
def test_a_disk_full_at_start_holds_events_in_memory_until_space_returns(
    tmp_path: Path,
    shared_broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> None:
    state = tmp_path / "state"
    device = "fault-outbox-disk-full"
    observer = observe(shared_broker, device)
    video, cap = sample_video[0], fsize_cap(START_CAP_BYTES)
    with looping_agent(tmp_path, shared_broker, device, fixture_onnx, video, state_dir=state, preexec_fn=cap) as agent:
        wait_running(
            agent,
            observer,
            "stats saying the outbox cannot be written while events are held",
            lambda: any(not s["mqtt"]["outbox_writable"] and s["events"]["held"] >= 1 for s in observer.json("stats")),
        )
        assert observer.on("detections"), "detection goes on while the outbox cannot be created"
        assert observer.on("events") == [], "no event goes out before it is stored"
        assert agent.stderr_path.stat().st_size < START_CAP_BYTES // 2, "the log had room for every line"

        limit_file_size(agent.process.pid, None)
        wait_running(agent, observer, "events once space returned", lambda: len(observer.on("events")) >= 2)
        wait_running(
            agent,
            observer,
            "stats saying the outbox takes writes again",
            lambda: last_mqtt_stats(observer).get("outbox_writable") is True,
        )
        code, _ = agent.stop(timeout=10.0)
        assert code == 0, agent.describe()
        log = agent.stderr
    assert "Traceback" not in log
    said = [line for line in log.splitlines() if "cannot open" in line]
    # The writer's one line for the spell, and the frame loop's for the events it holds; not one per retry.
    assert sum("events held" not in line for line in said) == 1, said
    assert log.count("writable again") >= 1
    events = distinct_events(observer.on("events"))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "held events numbered in order, none lost"
    assert (state / OUTBOX).exists() and outbox_events(state) == [], "the file is used once it can be made"

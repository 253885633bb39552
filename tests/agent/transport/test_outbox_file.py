"""The outbox's file against damage and a disk that refuses it: a corrupt file is set aside, bytes kept, and
a fresh one carries on above its numbers; a file that cannot be made yet is opened once it can be."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from agent.transport.outbox import NewMessage, Outbox, OutboxError
from tests.agent.transport.spool_writer import SpoolWriter
from tests.agent.transport.test_outbox import run_script

PAGE = 4096  # SQLite's default page size, which the outbox keeps


def garble_pages_after_the_first(path: Path, seed: int = 24) -> bytes:
    """Overwrite every page but the first (header and schema) in place, as a torn write leaves them; the bytes."""
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for start in range(PAGE, len(data), PAGE):
        data[start : start + PAGE] = rng.randbytes(PAGE)
    with open(path, "r+b") as file:  # in place: an open connection keeps reading the same file
        file.write(data)
    return bytes(data)


def numbered(seq: int, pad: bytes) -> NewMessage:
    """An event numbered `seq`, as the spool hands it to the courier to store."""
    return NewMessage("events", b"%d:" % seq + pad, counter="events", seq=seq)


def aside_files(folder: Path) -> list[Path]:
    """The set-aside main files (their -wal and -shm files go aside with them)."""
    return sorted(p for p in folder.glob("outbox.db.corrupt-*") if not p.name.endswith(("-wal", "-shm")))


def test_a_corrupt_file_is_set_aside_unchanged_and_the_fresh_one_numbers_above_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        outbox.store([numbered(seq, b"x" * 300) for seq in range(1, 31)])
    damaged = garble_pages_after_the_first(path)

    with Outbox(path) as outbox:
        assert outbox.available and outbox.count() == 0
        (aside,) = aside_files(tmp_path)
        assert aside.read_bytes() == damaged
        assert (outbox.recovered, outbox.set_aside) == (1, aside.name)
        with SpoolWriter(outbox) as writer:
            first = writer.sequenced("events", lambda seq: b"%d" % seq)
        assert first > 30, "a number the corrupt file gave out is not given out again"
    with Outbox(path) as outbox, SpoolWriter(outbox) as writer:  # the floor is kept in the fresh file
        assert writer.sequenced("events", lambda seq: b"%d" % seq) == first + 1
        assert outbox.counter("objects") > 30
        assert (outbox.recovered, outbox.set_aside) == (1, aside.name), "counted from the directory at start"


def test_a_damaged_page_met_while_running_sets_the_file_aside_and_ids_carry_on(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:  # payloads past a page: they live in overflow pages the open does not read
        outbox.store([numbered(seq, b"x" * 2 * PAGE) for seq in range(1, 21)])
        last_id = outbox.pending(limit=100)[-1].id
    with Outbox(path) as outbox:
        assert outbox.count() == 20
        garble_pages_after_the_first(path)
        with pytest.raises(OutboxError, match="malformed"):
            outbox.pending()
        (aside,) = aside_files(tmp_path)
        assert (outbox.available, outbox.recovered, outbox.set_aside, outbox.count()) == (True, 1, aside.name, 0)
        assert outbox.pending() == []
        (after,) = outbox.store([NewMessage("t", b"after")])
        assert after > last_id, "the courier's 'after id N' watermark stays valid"
        assert outbox.counter("events") > 20


def test_a_file_that_cannot_be_made_at_start_is_opened_once_it_can(tmp_path: Path) -> None:
    """RLIMIT_FSIZE below SQLite's 32 KiB -shm file: the outbox cannot be made, as on a full disk."""
    path = tmp_path / "state" / "outbox.db"
    result = run_script(
        """
        import json, resource, signal, time
        from pathlib import Path
        from agent.transport.outbox import NewMessage, Outbox, OutboxError
        from agent.transport.spool import Spool
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
        outbox = Outbox(Path(sys.argv[1]))  # does not raise
        report = {"available": outbox.available, "pending": len(outbox.pending()), "errors": []}
        for call in (lambda: outbox.store([NewMessage("t", b"x")]), lambda: outbox.counter("events"), outbox.reopen):
            try:
                call()
            except OutboxError as error:
                report["errors"].append(str(error))
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is back
        deadline = time.monotonic() + 10
        while not outbox.available and time.monotonic() < deadline:
            outbox.reopen()  # what the courier does each round; it tries the disk at most once a second
            time.sleep(0.05)
        spool = Spool(outbox, queue_limit=10, held_limit=10, wake=lambda: None)
        report["seq"] = spool.put_sequenced("events", lambda seq: b"z", 1, False, "events")  # numbered from the file
        outbox.close()
        print(json.dumps(report))
        """,
        str(path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["available"], report["pending"]) == (False, 0)
    assert len(report["errors"]) == 2, "a write and a counter fail; reopen within the second tries nothing"
    assert all(str(path) in error and "\n" not in error for error in report["errors"]), report["errors"]
    assert report["seq"] == 1, "a file made for the first time numbers from 1"

"""The outbox's SQLite file: opening it when it can be, telling a corrupt file from a disk that refuses, and
setting a corrupt one aside for a fresh one.

A power cut on an SD card can leave the file torn (a valid header over garbage pages) or plain
garbage. Failing on it at every start would leave the device dark for good once systemd's restart
limit is reached, so a corrupt file is renamed aside, bytes untouched, with its -wal, -shm and
-journal files (`outbox.sqlite3.corrupt-<UTC time>` with the same suffixes, so SQLite opens the
set-aside trio as it was), and a fresh file takes its place. A full disk or a read-only directory
is not corruption: the file is left alone, and opened once the disk lets it (OutboxFile.open is
tried again by the writes that follow, at most once a second).

A fresh file carries on above the old one's numbers: its counters start past the wall clock in
milliseconds (a counter rising by one per message would need a thousand messages a second since
1970 to be there) or past the highest the old file still shows, and its row ids past the last one
handed out, so the courier's "everything after id N" stays valid.

The check at open runs on a read-only connection: a read-write one would fold a leftover WAL into
the damaged file when it closes, changing the bytes that are being kept. (A damaged page met while
running is met on the open read-write connection: closing it folds the WAL in first, so the
set-aside file holds everything that was committed.)
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from agent.transport.publisher import StoreError

__all__ = ["OutboxError", "OutboxFile", "is_corruption"]

log = logging.getLogger("yolo_edge.mqtt")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    -- AUTOINCREMENT: ids are never reused, even after the table empties, so id order is
    -- publish order and a reader's "everything after id N" watermark stays valid.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
-- The age bound's DELETE finds old rows through this index instead of scanning the table.
CREATE INDEX IF NOT EXISTS messages_created_at ON messages (created_at);
-- Sequence counters (events' seq): updated in the same transaction as the insert they number.
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- The outbox's own figures, kept apart so no counter name can collide with them.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_SIDE_FILES = ("-wal", "-shm", "-journal")
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_WHY_CHARS = 200  # quick_check can list thousands of problems; the log line needs the first
_REOPEN_S = 1.0  # after a failed open, writes fail at once for this long instead of trying the disk again


class OutboxError(StoreError):
    """The outbox file cannot be read or written (disk full, read-only, corrupt); the message names the file."""


class OutboxFile:
    """The connection to the outbox's file, made when it can be. Not thread-safe: the Outbox's lock guards it.

    on_open(db, meta) runs on every new connection (the outbox reads its figures there); what it
    raises fails the open. recovered: corrupt files set aside in the directory (found at start, or
    since); set_aside: the newest one's name. seq_floor: no counter may give out a number at or below
    it. last_id: the highest row id handed out (the outbox raises it).
    """

    def __init__(
        self, path: Path, clock: Callable[[], float], on_open: Callable[[sqlite3.Connection, dict[str, int]], None]
    ) -> None:
        self.path = path
        self._clock = clock
        self._on_open = on_open
        self.db: sqlite3.Connection | None = None
        self.closed = False
        self.unavailable = ""  # why the last attempt to open the file failed
        self._retry_at = 0.0  # time.monotonic() before which no new attempt is made
        self._checked = False  # the file at `path` passed the read-only check, or was made after one was set aside
        self.seq_floor = 0
        self.last_id = 0
        try:
            files = set_aside_files(path)
        except OSError:
            files = []
        self.recovered = len(files)
        self.set_aside: str | None = files[-1].name if files else None

    @property
    def due(self) -> bool:
        """Not open, and an attempt to open it may be made now."""
        return self.db is None and not self.closed and time.monotonic() >= self._retry_at

    def open(self) -> sqlite3.Connection:
        """The connection, opening the file first if need be; OutboxError if it is not open and cannot be now."""
        if self.db is not None:
            return self.db
        if self.closed:
            raise OutboxError(f"outbox {self.path}: closed")
        if not self.due:
            raise OutboxError(self.unavailable)
        try:
            self.db = self._connect()
        except OutboxError as error:
            self.unavailable, self._retry_at = str(error), time.monotonic() + _REOPEN_S
            raise
        self.unavailable = ""
        return self.db

    def recover(self, why: str) -> None:
        """A statement met a damaged page: set the file aside and open a fresh one if it can be."""
        assert self.db is not None
        db, self.db = self.db, None
        last = last_seq(db)
        # Closing folds what the WAL holds into the damaged file, so the set-aside file has it all.
        with suppress(sqlite3.Error):
            db.close()
        try:
            self._set_aside(why, last)
            self.open()
        except OutboxError as error:
            self.unavailable, self._retry_at = str(error), time.monotonic() + _REOPEN_S

    def close(self) -> None:
        self.closed = True
        if self.db is not None:
            self.db.close()
            self.db = None

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutboxError(f"outbox {self.path}: cannot create its directory: {error}") from error
        try:
            if not self._checked:
                found = check(self.path)
                if found.corrupt is not None:
                    self._set_aside(found.corrupt, found.last_seq)
                self._checked = True
            db = connect(self.path)
        except (sqlite3.Error, OSError) as error:
            raise OutboxError(f"outbox {self.path}: cannot open: {error}") from error
        try:
            self._on_open(db, self._carry_over(db))
        except sqlite3.Error as error:
            db.close()
            # The check passed yet a page is bad: the next attempt checks again (and sets the file aside).
            self._checked = not is_corruption(error)
            raise OutboxError(f"outbox {self.path}: cannot open: {error}") from error
        return db

    def _carry_over(self, db: sqlite3.Connection) -> dict[str, int]:
        """The file's meta; a file started after one was set aside first learns where the old one ended."""
        meta = {str(key): int(value) for key, value in db.execute("SELECT key, value FROM meta")}
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        last_id = int(row[0]) if row else 0
        floor, last = max(self.seq_floor, meta.get("seq_floor", 0)), max(self.last_id, last_id)
        if floor > meta.get("seq_floor", 0) or last > last_id:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq_floor', ?)", (floor,))
                # sqlite_sequence is where AUTOINCREMENT keeps the last id; SQLite lets it be moved.
                if not db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'messages'", (last,)).rowcount:
                    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (last,))
                db.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            meta["seq_floor"] = floor
        self.seq_floor, self.last_id = floor, last
        return meta

    def _set_aside(self, why: str, last: int) -> None:
        """The file closed: rename it (and its side files) aside; what is opened at `path` next is a fresh file."""
        try:
            aside = set_aside(self.path, self._clock())
        except OSError as error:
            raise OutboxError(f"outbox {self.path} is corrupt ({why}) and cannot be moved aside: {error}") from error
        self._checked = True
        self.seq_floor = max(self.seq_floor, last, int(self._clock() * 1000))
        self.recovered += 1
        self.set_aside = aside.name
        log.warning("outbox %s is corrupt (%s): moved it aside to %s and started a fresh one", self.path, why, aside)


@dataclass(frozen=True)
class Check:
    """What the read-only look at an existing file found. corrupt: why, or None if it is sound;
    last_seq: the highest sequence number it shows (0 if none can be read)."""

    corrupt: str | None
    last_seq: int = 0


def is_corruption(error: sqlite3.Error) -> bool:
    """Whether `error` says the file is damaged (not a database, malformed), rather than that the disk refused."""
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in _CORRUPT


def check(path: Path) -> Check:
    """Look at `path` read-only: PRAGMA quick_check (reads every page once). Raises sqlite3.Error when it
    cannot look (an I/O error, no room for the -shm file): that says nothing about the file itself."""
    if not path.exists() or path.stat().st_size == 0:  # SQLite makes an empty file a database
        return Check(None)
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        try:
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as error:
            if not is_corruption(error):
                raise
            return Check(str(error), last_seq(db))
        if problems != ["ok"]:
            return Check(f"integrity check: {'; '.join(problems)[:_WHY_CHARS]}", last_seq(db))
        return Check(None)
    finally:
        db.close()


def last_seq(db: sqlite3.Connection) -> int:
    """The highest sequence counter `db` still shows, or 0 when that much cannot be read."""
    try:
        row = db.execute("SELECT MAX(value) FROM counters").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row and isinstance(row[0], int) else 0


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) the outbox file for reading and writing, with its tables; raises sqlite3.Error."""
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each transaction is exactly
    # what we wrote (the sqlite3 module's implicit transactions would hide where they end).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        # WAL: a commit appends to one file instead of rewriting pages twice, and readers never block
        # the writer. synchronous=FULL: every commit is fsynced before store() returns, so an event
        # survives kill -9 *and* power loss (NORMAL would keep it only across a process crash in WAL
        # mode). That costs one fsync per message, which is fine at the rate events and acks arrive.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def set_aside(path: Path, now: float) -> Path:
    """Rename `path` and its side files to `<name>.corrupt-<UTC time>` (plus their suffixes); return the new path.

    Raises OSError when the directory does not allow it. The main file moves last: until it has
    moved, the next start finds it (and sets it aside) again.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    base, number = f"{path.name}.corrupt-{stamp}", 1
    while any(path.with_name(base + suffix).exists() for suffix in ("", *_SIDE_FILES)):
        base, number = f"{path.name}.corrupt-{stamp}-{number}", number + 1
    for suffix in (*_SIDE_FILES, ""):
        try:
            os.rename(path.with_name(path.name + suffix), path.with_name(base + suffix))
        except FileNotFoundError:
            continue
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # the renames survive a power cut too
    finally:
        os.close(descriptor)
    return path.with_name(base)


def set_aside_files(path: Path) -> list[Path]:
    """The corrupt outbox files set aside next to `path` (main files only), oldest first."""
    found = [p for p in path.parent.glob(f"{path.name}.corrupt-*") if p.is_file() and not p.name.endswith(_SIDE_FILES)]
    return sorted(found, key=lambda p: p.name)

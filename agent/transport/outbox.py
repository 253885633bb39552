"""The durable outbox: QoS 1 messages wait in one SQLite file until the broker acknowledged them.

Every QoS 1 message is written here before it is handed to the MQTT client and
removed only on its PUBACK, so broker outages, agent crashes (kill -9) and power
loss lose nothing that `add` or `store` returned for. The file is bounded by count and age;
what the bounds drop is counted (by bound), and the counts survive restarts.

The work per insert is bounded: the row count is kept in memory (one COUNT(*) when the file
opens), the count bound deletes the oldest rows by primary key and the age bound probes an
index, so an outbox at its 10,000-row bound costs what an empty one does. `store` writes a
whole batch (new rows, counters, acknowledged rows to delete) in one transaction: one fsync.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["NewMessage", "Outbox", "OutboxError", "OutboxMessage"]

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


class OutboxError(Exception):
    """The outbox file cannot be read or written (disk full, read-only, corrupt); the message names the file."""


@dataclass(frozen=True)
class OutboxMessage:
    """One stored message. created_at: Unix seconds (wall clock, since it must mean the same after a reboot)."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float


@dataclass(frozen=True)
class NewMessage:
    """A message for `store`. counter, seq: the counter it is numbered by, stored with it (None: not numbered)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    counter: str | None = None
    seq: int | None = None


class Outbox:
    """A bounded FIFO of messages in SQLite, safe to share between threads.

    path: the database file (parent directories are created).
    max_messages: at most this many rows; adding more drops the oldest.
    max_age_s: rows older than this many seconds are dropped when a message is added.
    clock: Unix seconds; tests pass a fake one.
    """

    def __init__(
        self,
        path: Path,
        max_messages: int = 10000,
        max_age_s: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0 seconds, got {max_age_s}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        # What the open transaction changed; applied to the figures below only once it commits.
        self._pending_drops = (0, 0)  # (by the count bound, by the age bound)
        self._pending_rows = 0
        self._figures = threading.Lock()  # the figures below change together with a store's on_commit
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutboxError(f"outbox {self.path}: cannot create its directory: {error}") from error
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each transaction is exactly
            # what we wrote (the sqlite3 module's implicit transactions would hide where they end).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as error:
            raise OutboxError(f"outbox {self.path}: cannot open: {error}") from error
        try:
            # WAL: a commit appends to one file instead of rewriting pages twice, and readers never block
            # the writer. synchronous=FULL: every commit is fsynced before add() returns, so an event
            # survives kill -9 *and* power loss (NORMAL would keep it only across a process crash in WAL
            # mode). That costs one fsync per message, which is fine at the rate events and acks arrive.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            # The only COUNT(*): from here on the count is kept as rows come and go.
            self._count = int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        except sqlite3.Error as error:
            self._db.close()
            raise OutboxError(f"outbox {self.path}: cannot set up: {error}") from error
        self._dropped = int(meta.get("dropped", 0))  # all drops (files older than the split have only this)
        self._dropped_age = int(meta.get("dropped_age", 0))

    @property
    def dropped(self) -> int:
        """Messages dropped by the bounds since the file was created (persisted across restarts)."""
        return self._dropped

    @property
    def dropped_age(self) -> int:
        """Of `dropped`: messages older than max_age_s."""
        return self._dropped_age

    @property
    def dropped_full(self) -> int:
        """Of `dropped`: the oldest messages, dropped because the outbox held max_messages."""
        return self._dropped - self._dropped_age

    def add(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Store one message durably (fsynced on return); return its id, which rises with every add."""
        with self._transaction("add a message") as db:
            return self._insert(db, topic, payload, qos, retain)

    def add_sequenced(
        self,
        topic: str,
        build: Callable[[int], bytes],
        qos: int = 1,
        retain: bool = False,
        counter: str = "events",
    ) -> int:
        """Take the next value of `counter` (1, 2, 3, ... across restarts), store `build(value)`, return the value.

        Both happen in one transaction: a crash either keeps the number with its message or
        neither, so numbers never repeat and a stored message's number is never reused.
        `build` runs under the outbox lock; keep it to encoding a payload.
        """
        with self._transaction("add a sequenced message") as db:
            row = db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
            seq = (int(row[0]) if row else 0) + 1
            self._raise_counter(db, counter, seq)
            self._insert(db, topic, build(seq), qos, retain)
        return seq

    def store(
        self, messages: Sequence[NewMessage], remove: Iterable[int] = (), on_commit: Callable[[], None] | None = None
    ) -> list[int]:
        """Store `messages` and forget the acknowledged rows `remove`, all in one transaction; return the new ids.

        A numbered message raises its counter to its seq in the same transaction, so a stored
        message's number is never given out again. All or nothing: on OutboxError none is stored.
        on_commit runs once it committed, together with the count's update (see `counted`).
        """
        with self._transaction("store messages", on_commit) as db:
            self._delete(db, remove)
            ids = []
            for message in messages:
                if message.counter is not None and message.seq is not None:
                    self._raise_counter(db, message.counter, message.seq)
                ids.append(self._insert(db, message.topic, message.payload, message.qos, message.retain, bound=False))
            if messages:
                self._enforce_bounds(db)
        return ids

    def counter(self, name: str) -> int:
        """The last value of sequence counter `name` that was stored (0 if none)."""
        with self._reading("read a counter"):
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def counters(self) -> dict[str, int]:
        """Every sequence counter's last stored value."""
        with self._reading("read the counters"):
            return {str(name): int(value) for name, value in self._db.execute("SELECT name, value FROM counters")}

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        """Up to `limit` stored messages with id > after_id, oldest first."""
        with self._reading("read pending messages"):
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created_at FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [OutboxMessage(int(i), t, bytes(p), int(q), bool(r), float(c)) for i, t, p, q, r, c in rows]

    def remove(self, message_id: int) -> None:
        """Forget a message the broker acknowledged; unknown ids (already dropped) are ignored."""
        self.remove_many([message_id])

    def remove_many(self, message_ids: Iterable[int]) -> None:
        """Forget several acknowledged messages in one transaction (one fsync instead of one per message)."""
        with self._transaction("remove messages") as db:
            self._delete(db, message_ids)

    def count(self) -> int:
        """Messages waiting for an acknowledgement (kept in memory: no query)."""
        return self._count

    def counted(self, read: Callable[[], int]) -> tuple[int, int]:
        """(count(), read()) as of one moment between commits: what a store's on_commit changes is in both or neither.

        Never waits for the disk: the lock it takes is held only while figures change, not during a commit.
        """
        with self._figures:
            return self._count, read()

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _insert(
        self, db: sqlite3.Connection, topic: str, payload: bytes, qos: int, retain: bool, bound: bool = True
    ) -> int:
        """Insert one row (and enforce the bounds unless the caller will), inside the caller's transaction."""
        cursor = db.execute(
            "INSERT INTO messages (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
            (topic, bytes(payload), qos, int(retain), self._clock()),
        )
        self._pending_rows += 1
        if bound:
            self._enforce_bounds(db)
        return int(cursor.lastrowid or 0)

    def _enforce_bounds(self, db: sqlite3.Connection) -> None:
        """Drop rows past the age and count bounds: index and primary-key work only, never a scan."""
        # A Pi without an RTC can boot with a stale clock that NTP later moves forward; rows stamped
        # before the jump then look old. Acceptable: the age bound is a week by default.
        old = db.execute("DELETE FROM messages WHERE created_at < ?", (self._clock() - self.max_age_s,)).rowcount
        excess = self._count + self._pending_rows - old - self.max_messages
        full = 0
        if excess > 0:
            full = db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)", (excess,)
            ).rowcount
        if not (old or full):
            return
        self._pending_rows -= old + full
        for key, value in (("dropped", old + full), ("dropped_age", old)):
            if value:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                    (key, value),
                )
        by_bound, by_age = self._pending_drops
        self._pending_drops = (by_bound + full, by_age + old)

    def _delete(self, db: sqlite3.Connection, message_ids: Iterable[int]) -> None:
        cursor = db.executemany("DELETE FROM messages WHERE id = ?", ((i,) for i in message_ids))
        self._pending_rows -= max(0, cursor.rowcount)  # ids already gone (dropped, acked twice) change nothing

    @staticmethod
    def _raise_counter(db: sqlite3.Connection, counter: str, seq: int) -> None:
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
            (counter, seq),
        )

    @contextmanager
    def _transaction(self, what: str, on_commit: Callable[[], None] | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; sqlite errors become OutboxError and roll back."""
        with self._lock:
            self._pending_drops, self._pending_rows = (0, 0), 0
            try:
                # IMMEDIATE takes the write lock up front, so a full disk or read-only file fails here
                # or at COMMIT, never halfway through with some statements applied.
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as error:
                self._rollback()
                raise OutboxError(f"outbox {self.path}: cannot {what}: {error}") from error
            except BaseException:
                self._rollback()
                raise
            # Only a committed change counts, so the figures in memory match the file.
            by_bound, by_age = self._pending_drops
            with self._figures:
                self._dropped += by_bound + by_age
                self._dropped_age += by_age
                self._count += self._pending_rows
                if on_commit is not None:
                    on_commit()

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as error:
                raise OutboxError(f"outbox {self.path}: cannot {what}: {error}") from error

    def _rollback(self) -> None:
        # After "disk full" SQLite may keep the transaction open (a failed COMMIT can be retried) or
        # may have rolled it back already; either way the connection must leave it so the outbox
        # works again once space returns.
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

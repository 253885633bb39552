"""The durable outbox: QoS 1 messages wait in one SQLite file until the broker acknowledged them.

Every QoS 1 message is written here before it is handed to the MQTT client and
removed only on its PUBACK, so broker outages, agent crashes (kill -9) and power
loss lose nothing that `store` returned for. The file is bounded by count and age;
what the bounds drop is counted (by bound), and the counts survive restarts.

The work per insert is bounded: the row count is kept in memory (one COUNT(*) when the file
opens), the count bound deletes the oldest rows by primary key and the age bound probes an
index, so an outbox at its 10,000-row bound costs what an empty one does. `store` writes a
whole batch (new rows, counters, acknowledged rows to delete) in one transaction: one fsync.

The file is opened when the outbox is made or, if that fails (a full disk, a read-only
directory), by the writes that follow: the agent runs on without it meanwhile (agent/transport/spool.py
holds what it cannot store). A corrupt file, found when it is opened or when a statement meets a
damaged page, is set aside and a fresh one started (agent/transport/outbox_file.py).
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

from agent.transport.outbox_file import OutboxError, OutboxFile, is_corruption

__all__ = ["NewMessage", "Outbox", "OutboxError", "OutboxMessage"]


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
    max_messages: at most this many rows; storing more drops the oldest.
    max_age_s: rows older than this many seconds are dropped when messages are stored.
    clock: Unix seconds; tests pass a fake one.

    Making one never fails on the file: while it cannot be opened, writes raise OutboxError
    (naming the file and why), counters cannot be read and nothing is pending.
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
        self._count = self._dropped = self._dropped_age = 0
        self._file = OutboxFile(self.path, clock, self._opened)
        with self._lock, suppress(OutboxError):
            self._file.open()

    @property
    def available(self) -> bool:
        """Whether the file is open (a full disk may still refuse writes)."""
        return self._file.db is not None

    @property
    def recovered(self) -> int:
        """Corrupt outbox files set aside in the directory (found at start, or set aside since)."""
        return self._file.recovered

    @property
    def set_aside(self) -> str | None:
        """The name of the newest corrupt outbox file set aside (its UTC time is in it), or None."""
        return self._file.set_aside

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

    def figures(self) -> dict[str, object]:
        """Its own figures as `stats` shows them under `mqtt` (docs/topics.md)."""
        return {
            "outbox_dropped_full": self.dropped_full,
            "outbox_dropped_old": self.dropped_age,
            "outbox_recovered": self.recovered,
            "outbox_set_aside": self.set_aside,
        }

    def reopen(self) -> None:
        """Open the file if it is not open and no attempt failed within the last second; OutboxError if this one did."""
        with self._lock:
            if self._file.due:
                self._file.open()

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
                ids.append(self._insert(db, message))
            if messages:
                self._enforce_bounds(db)
        return ids

    def counter(self, name: str) -> int:
        """The last value of sequence counter `name` that was stored (0 if none); OutboxError while not open."""
        with self._reading("read a counter") as db:
            row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return max(int(row[0]) if row else 0, self._file.seq_floor)

    def counters(self) -> dict[str, int]:
        """Every sequence counter's last stored value; OutboxError while the file is not open."""
        with self._reading("read the counters") as db:
            rows = db.execute("SELECT name, value FROM counters").fetchall()
        return {str(name): max(int(value), self._file.seq_floor) for name, value in rows}

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        """Up to `limit` stored messages with id > after_id, oldest first (none while the file is not open)."""
        if not self.available:
            return []
        with self._reading("read pending messages") as db:
            rows = db.execute(
                "SELECT id, topic, payload, qos, retain, created_at FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [OutboxMessage(int(i), t, bytes(p), int(q), bool(r), float(c)) for i, t, p, q, r, c in rows]

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
            self._file.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _opened(self, db: sqlite3.Connection, meta: dict[str, int]) -> None:
        """A new connection (at start, or once the disk let it be made, or to a fresh file): read its figures."""
        # The only COUNT(*): from here on the count is kept as rows come and go.
        count = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        with self._figures:
            self._count = count
            self._dropped = meta.get("dropped", 0)  # all drops (files older than the split have only this)
            self._dropped_age = meta.get("dropped_age", 0)

    def _insert(self, db: sqlite3.Connection, message: NewMessage) -> int:
        """Insert one row inside the caller's transaction (which enforces the bounds once, after the batch)."""
        cursor = db.execute(
            "INSERT INTO messages (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
            (message.topic, bytes(message.payload), message.qos, int(message.retain), self._clock()),
        )
        self._pending_rows += 1
        row = int(cursor.lastrowid or 0)
        self._file.last_id = max(self._file.last_id, row)  # rolled back or not: ids after it stay above it
        return row

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
        """One write transaction under the lock (opening the file if need be); sqlite errors become OutboxError."""
        with self._lock:
            self._pending_drops, self._pending_rows = (0, 0), 0
            db = self._file.open()
            try:
                # IMMEDIATE takes the write lock up front, so a full disk or read-only file fails here
                # or at COMMIT, never halfway through with some statements applied.
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.DatabaseError as error:
                self._rollback(db)
                self._failed(what, error)
            except BaseException:
                self._rollback(db)
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
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """Under the lock; never opens the file (the frame loop reads counters: it must not wait for a disk)."""
        if not self.available:  # without the lock: a writer may be opening the file, which can take a while
            raise OutboxError(self._file.unavailable or f"outbox {self.path}: not open")
        with self._lock:
            db = self._file.db
            if db is None:
                raise OutboxError(self._file.unavailable or f"outbox {self.path}: not open")
            try:
                yield db
            except sqlite3.DatabaseError as error:
                self._failed(what, error)

    def _failed(self, what: str, error: sqlite3.DatabaseError) -> None:
        """Under the lock: raise the OutboxError for `error`; a damaged page sets the file aside for a fresh one."""
        if is_corruption(error) and self._file.db is not None:
            with self._figures:  # its rows went aside with it
                self._count = self._dropped = self._dropped_age = 0
            self._file.recover(str(error))
        raise OutboxError(f"outbox {self.path}: cannot {what}: {error}") from error

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        # After "disk full" SQLite may keep the transaction open (a failed COMMIT can be retried) or
        # may have rolled it back already; either way the connection must leave it so the outbox
        # works again once space returns.
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")

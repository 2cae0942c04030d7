"""What the local Pub/Sub keeps, in SQLite: topics, subscriptions, messages, backlogs, delivery records.

A subscription's backlog holds one row per message it has not yet acknowledged (or per copy, when a
subscription delivers duplicates, or a message is redelivered): how many attempts began, when the
next may begin (a retry's backoff, or the end of a pull lease), whether one is in flight, the pull
lease's ack id and the last error. A row goes when its message is acknowledged, dead-lettered or
dropped; messages and delivery records stay, for `Broker.message`, `redeliver` and `deliveries`.

With a file the store survives the process: WAL mode with synchronous=NORMAL. In WAL mode every
transaction that COMMIT returned from is in the write-ahead log, in the operating system's page
cache, so it survives the process being killed at any instant (kill -9 included), and the file is
never corrupted; only a power cut or kernel crash can lose the last transactions before a
checkpoint. That is the failure this stand-in has to survive (a local cloud stopped hard, then
started again); synchronous=FULL would pay an fsync on every publish and every delivery attempt
to also survive power loss, which a local stand-in does not need. Without a file the same schema
lives in memory (":memory:", nothing synced), so both modes run one code path.

One connection serves every thread (check_same_thread=False) and the store takes no lock: the
broker makes every call under its own lock, which also keeps a read and the write that depends on
it together. Two brokers on one file are the caller's to prevent (the local cloud holds a flock on
its state directory).
"""
from __future__ import annotations

import json
import secrets
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from local_cloud.pubsub.delivery import DeliveryRecord
from local_cloud.pubsub.messages import Message

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    first_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    attributes TEXT NOT NULL,
    publish_time_us INTEGER NOT NULL,
    ordering_key TEXT
);
CREATE TABLE IF NOT EXISTS backlog (
    subscription TEXT NOT NULL,
    seq INTEGER NOT NULL,
    copy INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    ack_id TEXT,
    last_error TEXT,
    PRIMARY KEY (subscription, seq, copy)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    subscription TEXT NOT NULL,
    message_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status_code INTEGER,
    latency_s REAL NOT NULL,
    time_us INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT
);
"""

RowKey = tuple[str, int, int]  # (subscription, message seq, copy)


class StoreError(RuntimeError):
    """The store file cannot be used (another schema, or not a SQLite database); the text says why."""


@dataclass(frozen=True)
class StoredSubscription:
    name: str
    topic: str
    kind: str
    config: dict
    first_seq: int


@dataclass(frozen=True)
class BacklogRow:
    """One unacknowledged message (copy) of a subscription; `due` is wall-clock seconds."""

    subscription: str
    seq: int
    copy: int
    attempts: int
    due: float
    in_flight: bool
    ack_id: str | None
    last_error: str | None

    @property
    def key(self) -> RowKey:
        return (self.subscription, self.seq, self.copy)


@dataclass(frozen=True)
class Lease:
    """A pulled message: the row leased, the ack id that ends the lease, and the attempt it is."""

    ack_id: str
    seq: int
    delivery_attempt: int


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, timezone.utc).replace(microsecond=micros % 1_000_000)


def parse_ack_id(ack_id: object) -> tuple[int, int] | None:
    """(message seq, copy) from an ack id this store handed out, or None if it is not one."""
    if not isinstance(ack_id, str):
        return None
    parts = ack_id.split("-")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


class BrokerStore:
    """The broker's state in one SQLite database (a file, or memory when `path` is None)."""

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path),
                                   isolation_level=None, check_same_thread=False)
        self._depth = 0
        try:
            if self.path is None:
                self._db.execute("PRAGMA synchronous=OFF")
            else:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"{self.path} holds a Pub/Sub store of schema {version}, this broker reads "
                                 f"schema {SCHEMA_VERSION}: remove the file to start empty")
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise StoreError(f"cannot use {self.path} as the Pub/Sub store: {err}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction (nested calls join the outer one); rolled back on error."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    # -- topics and subscriptions --------------------------------------------------------------

    def topics(self) -> list[str]:
        return [name for (name,) in self._db.execute("SELECT name FROM topics ORDER BY name")]

    def add_topic(self, name: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO topics (name) VALUES (?)", (name,))

    def subscriptions(self) -> list[StoredSubscription]:
        rows = self._db.execute("SELECT name, topic, kind, config, first_seq FROM subscriptions ORDER BY name")
        return [StoredSubscription(name, topic, kind, json.loads(config), first_seq)
                for name, topic, kind, config, first_seq in rows]

    def put_subscription(self, sub: StoredSubscription) -> None:
        self._db.execute(
            "INSERT INTO subscriptions (name, topic, kind, config, first_seq) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET topic=excluded.topic, kind=excluded.kind, config=excluded.config",
            (sub.name, sub.topic, sub.kind, json.dumps(sub.config, sort_keys=True), sub.first_seq),
        )

    def delete_subscription(self, name: str) -> None:
        self._db.execute("DELETE FROM backlog WHERE subscription=?", (name,))
        self._db.execute("DELETE FROM subscriptions WHERE name=?", (name,))

    # -- messages ------------------------------------------------------------------------------

    def last_seq(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()[0]

    def add_message(self, seq: int, message: Message, copies: Iterable[tuple[str, int]]) -> None:
        """Store `message` (its id is `seq`) and put it in the backlog of each (subscription, copy)."""
        self._db.execute(
            "INSERT INTO messages (seq, topic, data, attributes, publish_time_us, ordering_key) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (seq, message.topic, message.data, json.dumps(dict(message.attributes)),
             _micros(message.publish_time), message.ordering_key),
        )
        self._db.executemany("INSERT INTO backlog (subscription, seq, copy) VALUES (?, ?, ?)",
                             [(name, seq, copy) for name, copy in copies])

    def message(self, seq: int) -> Message | None:
        row = self._db.execute(
            "SELECT topic, data, attributes, publish_time_us, ordering_key FROM messages WHERE seq=?", (seq,)
        ).fetchone()
        if row is None:
            return None
        topic, data, attributes, publish_time_us, ordering_key = row
        return Message(str(seq), topic, bytes(data), json.loads(attributes), _datetime(publish_time_us),
                       ordering_key)

    # -- backlog -------------------------------------------------------------------------------

    _ROW = "SELECT subscription, seq, copy, attempts, due, in_flight, ack_id, last_error FROM backlog "

    def row(self, key: RowKey) -> BacklogRow | None:
        found = self._db.execute(self._ROW + "WHERE subscription=? AND seq=? AND copy=?", key).fetchone()
        return None if found is None else BacklogRow(*found[:5], bool(found[5]), *found[6:])

    def rows(self, subscription: str) -> list[BacklogRow]:
        found = self._db.execute(self._ROW + "WHERE subscription=? ORDER BY seq, copy", (subscription,))
        return [BacklogRow(*row[:5], bool(row[5]), *row[6:]) for row in found]

    def add_copy(self, subscription: str, seq: int) -> int:
        """Put `seq` in the subscription's backlog once more (a redelivery); returns the copy's number."""
        (copy,) = self._db.execute("SELECT COALESCE(MAX(copy), -1) + 1 FROM backlog WHERE subscription=? AND seq=?",
                                   (subscription, seq)).fetchone()
        self._db.execute("INSERT INTO backlog (subscription, seq, copy) VALUES (?, ?, ?)", (subscription, seq, copy))
        return copy

    def begin_attempt(self, key: RowKey, attempt: int) -> None:
        self._db.execute("UPDATE backlog SET attempts=?, in_flight=1 WHERE subscription=? AND seq=? AND copy=?",
                         (attempt, *key))

    def retry_later(self, key: RowKey, due: float, error: str | None) -> None:
        self._db.execute(
            "UPDATE backlog SET in_flight=0, due=?, last_error=? WHERE subscription=? AND seq=? AND copy=?",
            (due, error, *key))

    def remove(self, key: RowKey) -> None:
        self._db.execute("DELETE FROM backlog WHERE subscription=? AND seq=? AND copy=?", key)

    def release_in_flight(self, error: str) -> int:
        """Attempts a previous process began and never finished: due now, with `error` as their last error.

        Call only when no other broker uses the store. Returns how many there were.
        """
        cursor = self._db.execute("UPDATE backlog SET in_flight=0, due=0, last_error=? WHERE in_flight=1", (error,))
        return cursor.rowcount

    # -- pull leases ---------------------------------------------------------------------------

    def lease(self, subscription: str, max_messages: int, now: float, until: float) -> list[Lease]:
        """Lease up to `max_messages` rows that are not leased (or whose lease ended by `now`) until `until`."""
        free = self._db.execute(
            "SELECT seq, copy, attempts FROM backlog WHERE subscription=? AND (ack_id IS NULL OR due<=?) "
            "ORDER BY seq, copy LIMIT ?", (subscription, now, max_messages)).fetchall()
        leases, updates = [], []
        for seq, copy, attempts in free:
            ack_id = f"{seq}-{copy}-{secrets.token_hex(6)}"
            leases.append(Lease(ack_id, seq, attempts + 1))
            updates.append((attempts + 1, until, ack_id, subscription, seq, copy))
        self._db.executemany("UPDATE backlog SET attempts=?, due=?, ack_id=? WHERE subscription=? AND seq=? AND copy=?",
                             updates)
        return leases

    def acknowledge(self, subscription: str, ack_ids: Iterable[str]) -> int:
        """Remove the rows whose current lease is one of `ack_ids`; others (re-leased, gone) are ignored."""
        params = [(subscription, *parse_ack_id(a), a) for a in ack_ids]
        cursor = self._db.executemany(
            "DELETE FROM backlog WHERE subscription=? AND seq=? AND copy=? AND ack_id=?", params)
        return cursor.rowcount

    def extend(self, subscription: str, ack_ids: Iterable[str], due: float | None) -> int:
        """Move the end of each current lease in `ack_ids` to `due`; None ends the lease now."""
        keys = [(subscription, *parse_ack_id(a), a) for a in ack_ids]
        if due is None:
            return self._db.executemany(
                "UPDATE backlog SET ack_id=NULL, due=0 WHERE subscription=? AND seq=? AND copy=? AND ack_id=?",
                keys).rowcount
        return self._db.executemany(
            "UPDATE backlog SET due=? WHERE subscription=? AND seq=? AND copy=? AND ack_id=?",
            [(due, *key) for key in keys]).rowcount

    # -- delivery records ----------------------------------------------------------------------

    def add_record(self, record: DeliveryRecord) -> None:
        self._db.execute(
            "INSERT INTO deliveries (subscription, message_id, attempt, status_code, latency_s, time_us, outcome, "
            "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record.subscription, record.message_id, record.attempt, record.status_code, record.latency_s,
             _micros(record.time), record.outcome, record.error),
        )

    def records(self) -> list[DeliveryRecord]:
        rows = self._db.execute("SELECT subscription, message_id, attempt, status_code, latency_s, time_us, outcome, "
                                "error FROM deliveries ORDER BY id")
        return [DeliveryRecord(sub, message_id, attempt, status, latency, _datetime(time_us), outcome, error)
                for sub, message_id, attempt, status, latency, time_us, outcome, error in rows]


def peek(path: str | Path, subscription: str) -> list[tuple[Message, int, str | None]]:
    """What a subscription holds (message, attempts, last error), read without touching the store.

    For a read-only look at the local cloud's dead letters (mlrelay console): a pull leases the
    messages, which is a change; this opens the file with writes refused (query_only) and reads
    one consistent snapshot, beside a broker that may be running (WAL lets readers in).
    """
    if not Path(path).exists():
        return []
    db = sqlite3.connect(str(path))
    try:
        db.execute("PRAGMA query_only=ON")
        found = db.execute(
            "SELECT m.seq, m.topic, m.data, m.attributes, m.publish_time_us, m.ordering_key, b.attempts, b.last_error "
            "FROM backlog b JOIN messages m ON m.seq = b.seq WHERE b.subscription=? ORDER BY m.seq, b.copy",
            (subscription,)).fetchall()
    except sqlite3.DatabaseError:
        return []  # not a store (yet): nothing to show
    finally:
        db.close()
    return [(Message(str(seq), topic, bytes(data), json.loads(attributes), _datetime(publish_us), ordering_key),
             attempts, last_error) for seq, topic, data, attributes, publish_us, ordering_key, attempts, last_error in found]

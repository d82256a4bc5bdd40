"""SQLite persistence: instances, event-sourced history, inbox, timers, pending activities, receipts.

One connection guarded by a lock; each orchestration episode is one transaction, so a
SIGKILL at any moment leaves either the state before the episode or the state after it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances(
  instance_id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  input TEXT,
  output TEXT,
  custom_status TEXT,
  created_time TEXT NOT NULL,
  last_updated_time TEXT NOT NULL,
  parent_instance_id TEXT,
  parent_task_id INTEGER,
  parent_execution_id TEXT,
  execution_id TEXT NOT NULL,
  model TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_created ON instances(created_time, instance_id);
CREATE TABLE IF NOT EXISTS history(
  instance_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  event TEXT NOT NULL,
  PRIMARY KEY(instance_id, seq)
);
CREATE TABLE IF NOT EXISTS inbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  instance_id TEXT NOT NULL,
  msg TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox(instance_id, id);
CREATE TABLE IF NOT EXISTS timers(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  instance_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  timer_id INTEGER NOT NULL,
  fire_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_fire ON timers(fire_at);
CREATE TABLE IF NOT EXISTS activities(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  instance_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  task_id INTEGER NOT NULL,
  name TEXT NOT NULL,
  input TEXT
);
CREATE INDEX IF NOT EXISTS activities_instance ON activities(instance_id);
CREATE TABLE IF NOT EXISTS receipts(
  function TEXT NOT NULL,
  blob TEXT NOT NULL,
  etag TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  time TEXT NOT NULL,
  PRIMARY KEY(function, blob, etag)
);
"""

TERMINAL = ("Completed", "Failed", "Terminated")


@dataclass
class InstanceRow:
    """One orchestration instance as stored."""

    instance_id: str
    name: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created_time: str
    last_updated_time: str
    parent_instance_id: str | None
    parent_task_id: int | None
    parent_execution_id: str | None
    execution_id: str
    model: str


class Store:
    """Thread-safe access to the state database (WAL, one writer at a time)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE .. COMMIT), rolled back on any error, COMMIT's included."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed statement or COMMIT (disk full, I/O error) may leave the transaction open,
                # or SQLite may have rolled it back already: either way nothing of it stays.
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self.lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # ---- instances
    def get_instance(self, instance_id: str) -> InstanceRow | None:
        rows = self.query("SELECT * FROM instances WHERE instance_id=?", (instance_id,))
        return InstanceRow(*rows[0]) if rows else None

    def history(self, instance_id: str) -> list[str]:
        rows = self.query("SELECT event FROM history WHERE instance_id=? ORDER BY seq", (instance_id,))
        return [r[0] for r in rows]

    def inbox_instances(self) -> list[str]:
        return [r[0] for r in self.query("SELECT DISTINCT instance_id FROM inbox")]

    def inbox(self, instance_id: str) -> list[tuple[int, dict]]:
        rows = self.query("SELECT id, msg FROM inbox WHERE instance_id=? ORDER BY id", (instance_id,))
        return [(r[0], json.loads(r[1])) for r in rows]

    def pending_activities(self) -> list[tuple]:
        return self.query(
            "SELECT id, instance_id, execution_id, task_id, name, input FROM activities ORDER BY id"
        )

    def next_timer(self) -> str | None:
        rows = self.query("SELECT MIN(fire_at) FROM timers")
        return rows[0][0] if rows and rows[0][0] else None


def put_message(db: sqlite3.Connection, instance_id: str, msg: dict) -> None:
    """Queue a message for an instance (inside a transaction)."""
    db.execute("INSERT INTO inbox(instance_id, msg) VALUES (?, ?)", (instance_id, json.dumps(msg)))

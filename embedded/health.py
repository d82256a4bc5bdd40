"""Storage faults: which errors mean "the disk under the host is full, locked or failing", and
the host's record of the fault that is holding it up right now.

Such an error is never the orchestration's fault and never final: the dispatcher rolls the
episode back and tries again with back-off, an activity that hit it is run again later (not
reported as failed), and while it lasts the status of every running instance carries it
(`customStatus.hostFault`), so a job that cannot move says why instead of looking stuck.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
SQLITE_MESSAGES = (
    "database or disk is full",
    "database is locked",
    "disk i/o error",
    "database table is locked",
)

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0


def storage_error(exc: BaseException | None) -> str | None:
    """A short description if `exc` (or what it was raised from) is a storage fault, else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in SQLITE_MESSAGES):
            return f"state database: {exc}"
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return f"{exc.strerror or type(exc).__name__}" + (f": {exc.filename}" if exc.filename else "")
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def next_backoff(current: float) -> float:
    return min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, current * 2))


@dataclass(frozen=True)
class Fault:
    reason: str
    since: str  # ISO time of the first failure of this episode of trouble
    since_mono: float
    count: int


class Health:
    """The storage fault the host is living with now, if any (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self.total_faults = 0  # for tests and diagnostics: storage errors met since start
        self.reasons: set[str] = set()  # the distinct reasons met since start

    def report(self, reason: str) -> None:
        with self._lock:
            self.total_faults += 1
            self.reasons.add(reason)
            f = self._fault
            if f is None:
                now = datetime.now(UTC).isoformat(timespec="seconds")
                self._fault = Fault(reason, now, time.monotonic(), 1)
            else:
                self._fault = Fault(reason, f.since, f.since_mono, f.count + 1)

    def clear(self) -> None:
        with self._lock:
            self._fault = None

    @property
    def fault(self) -> Fault | None:
        with self._lock:
            return self._fault

    def overlay(self) -> dict | None:
        """What a running instance's status carries while the fault lasts."""
        f = self.fault
        if f is None:
            return None
        return {"reason": f"host storage: {f.reason}", "since": f.since, "errors": f.count}

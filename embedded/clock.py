"""Clocks: the real one, and a virtual one so timer-heavy tests finish in milliseconds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time in aware UTC. The host reads time only through this."""

    virtual = False

    def now(self) -> datetime:
        return datetime.now(UTC)

    def idle(self, next_due: datetime | None) -> bool:
        """Called when the host has nothing runnable; a virtual clock may jump. True if it moved."""
        return False


class RealClock(Clock):
    """The system clock."""


class VirtualClock(Clock):
    """A clock that moves only when told to, or (auto_advance) jumps to the next due timer when idle.

    Durable timers, retry intervals and the orchestration's `current_utc_datetime` all follow it.
    """

    virtual = True

    def __init__(self, start: datetime | None = None, auto_advance: bool = True) -> None:
        self._now = (start or datetime(2024, 1, 1, tzinfo=UTC)).astimezone(UTC)
        self.auto_advance = auto_advance
        self._lock = threading.Lock()
        self._listeners: list = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by a timedelta or a number of seconds; wakes hosts watching this clock."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=float(delta))
        with self._lock:
            self._now += delta
            now = self._now
        self._notify()
        return now

    def set(self, when: datetime) -> None:
        with self._lock:
            if when > self._now:
                self._now = when.astimezone(UTC)
        self._notify()

    def idle(self, next_due: datetime | None) -> bool:
        if not self.auto_advance or next_due is None:
            return False
        with self._lock:
            if next_due <= self._now:
                return False
            self._now = next_due
        return True

    def add_listener(self, fn) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self) -> None:
        for fn in list(self._listeners):
            fn()

"""The service's clock: every link is signed and checked against `utcnow()`.

Tests (and only tests) replace it with `use(fn)` to read a status "8 days later" without waiting; the
embedded host's VirtualClock.now fits. Orchestrators never read it (they use the replay-safe context
time).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_clock: Callable[[], datetime] | None = None


def utcnow() -> datetime:
    """Aware UTC now, from the injected clock when one is set."""
    now = _clock() if _clock is not None else datetime.now(UTC)
    return now.astimezone(UTC)


def use(clock: Callable[[], datetime] | None) -> None:
    """Read time from `clock` in this process (None: back to the system clock)."""
    global _clock
    _clock = clock

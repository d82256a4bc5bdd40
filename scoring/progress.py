"""A tiny live-progress file beside the shard output: ``OUTPUT + ".progress.json"``.

Why: the service shows live progress while a shard runs (a 2,000-image shard on a GPU takes
minutes). The orchestration's `progress` activity reads this file; it is small (under 200 bytes)
so reading it for every running shard is cheap. Written where the result goes (local path,
``file://`` or blob) with scoring's own storage helpers, atomically for local files. Best effort:
a failed write is logged and never fails the shard.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .storage import Location

log = logging.getLogger("scoring")
PROGRESS_SUFFIX = ".progress.json"


class ProgressFile:
    """Writes {"done", "total", "failed", "updated"} when the counts change, at most every `every` s.

    `every` <= 0 disables the file altogether (no periodic writes, no final write).
    """

    def __init__(self, output: Location, total: int, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.loc = output.sibling(PROGRESS_SUFFIX)
        self.total = total
        self.every = every
        self.clock = clock
        self._last_t: float | None = None
        self._last: tuple[int, int] | None = None
        self.writes = 0

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def update(self, done: int, failed: int, *, force: bool = False) -> bool:
        """Write the counts if they changed and the interval passed (or `force`). True if written."""
        if not self.enabled:
            return False
        now = self.clock()
        if (done, failed) == self._last and not force:
            return False
        if not force and self._last_t is not None and now - self._last_t < self.every:
            return False
        body = {"done": int(done), "total": int(self.total), "failed": int(failed),
                "updated": datetime.now(UTC).isoformat(timespec="seconds")}
        try:
            self.loc.write_bytes(json.dumps(body, separators=(",", ":")).encode())
        except Exception as e:  # progress is a courtesy: never fail a shard for it
            log.warning("progress file %s not written: %s", self.loc.describe(), type(e).__name__)
            self._last_t = now  # don't retry a failing store on every image
            return False
        self._last_t, self._last = now, (done, failed)
        self.writes += 1
        return True

    def finish(self, failed: int) -> bool:
        """The last write: done == total (call after the result file is written)."""
        return self.update(self.total, failed, force=True)

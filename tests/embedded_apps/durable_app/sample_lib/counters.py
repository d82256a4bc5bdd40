"""File-backed counters: survive the activity running in another process after a restart."""

from __future__ import annotations

import fcntl
from pathlib import Path


def bump(directory: str, key: str) -> int:
    path = Path(directory) / f"count-{key}"
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read() or 0) + 1
        f.seek(0)
        f.truncate()
        f.write(str(n))
    return n

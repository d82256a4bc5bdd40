"""Reused input buffers for the feed: letterboxed images and batches.

Why: a letterboxed 1280x960 float32 image is 14.7 MB and a batch of 8 is 118 MB; allocating
them fresh for every image makes the kernel hand out (and zero) new pages each time, which
measured here cost more than decoding the JPEG (letterbox 15.9 -> 4.7 ms, batch assembly 12.8 ->
2.7 ms per image on the shared photos; docs/notes/issue-13.md). Buffers go back to the pool when
the batch they fed has been scored, and a few per shape are kept.
"""

from __future__ import annotations

import threading

import numpy as np


class BufferPool:
    """float32 arrays by shape; :meth:`take` reuses a returned one when there is one."""

    def __init__(self, keep_per_shape: int = 8) -> None:
        self.keep = keep_per_shape
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.reused = 0
        self.allocated = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            free = self._free.get(shape)
            if free:
                self.reused += 1
                return free.pop()
            self.allocated += 1
        return np.empty(shape, dtype=np.float32)

    def give(self, arr: np.ndarray) -> None:
        """Return ``arr`` (the whole array, not a view) once nothing reads it any more."""
        if arr.base is not None or not arr.flags["C_CONTIGUOUS"] or arr.dtype != np.float32:
            return  # a view or foreign array: not ours to recycle
        with self._lock:
            free = self._free.setdefault(tuple(arr.shape), [])
            if len(free) < self.keep:
                free.append(arr)

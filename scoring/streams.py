"""Inference streams: several ONNX Runtime sessions, each with its share of the CPU cores, each
scoring a different batch at the same time.

Why: one session spreading every operator over all cores leaves cores idle wherever an operator
does not split well (concats, upsampling, the small head operators, the hand-off between two
operators) and while the scoring loop decodes, batches and suppresses boxes between calls. Two
single-threaded sessions scoring two images at once keep both cores of this machine busy:
random YOLOv5s6 at 1280x960, 175 ms an image against 187 ms for one session with two threads
(bench/cpu_paths.py, docs/notes/issue-13.md). Each operator still runs the same kernels on the
same data, so the outputs are the same numbers; only their order of arrival changes.

On a GPU there is one stream: the device serialises the work anyway, and batches are the way to
fill it. The cost of a stream is one more copy of the model's weights in memory.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

MAX_AUTO_STREAMS = 4


@dataclass(frozen=True)
class StreamPlan:
    """How the inference threads are split: ``streams`` sessions of ``threads`` intra-op threads."""

    streams: int
    threads: int


def plan_streams(total_threads: int, requested: int | None = None, on_gpu: bool = False) -> StreamPlan:
    """Split ``total_threads`` into streams.

    Default on the CPU: one stream per four threads, at least two from two threads up and at most
    four (2 -> 2x1, 8 -> 2x4, 12 -> 3x4, 16 -> 4x4); only the two-core split is measured here, the
    larger ones follow the same reasoning with fewer copies of the weights. ``requested``
    (``--streams``) wins but never exceeds the threads; a GPU gets one.
    """
    total = max(1, total_threads)
    if on_gpu:
        return StreamPlan(1, total)
    if requested is not None:
        if requested < 1:
            raise ValueError("--streams must be >= 1")
        n = min(requested, total)
    else:
        n = 1 if total < 2 else min(MAX_AUTO_STREAMS, max(2, total // 4))
    return StreamPlan(n, max(1, total // n))


class StreamPool:
    """Runs ``fn(session)`` on whichever session is free, in one thread per session.

    ``submit`` never blocks; the scoring loop bounds how many calls it leaves in flight.
    """

    def __init__(self, sessions: list[Any]) -> None:
        if not sessions:
            raise ValueError("at least one session")
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for s in sessions:
            self._free.put(s)
        self.size = len(sessions)
        self._pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="infer")

    def submit(self, fn: Callable[[Any], T]) -> Future[T]:
        def call() -> T:
            session = self._free.get()  # one per worker thread, so never waits
            try:
                return fn(session)
            finally:
                self._free.put(session)

        return self._pool.submit(call)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> StreamPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

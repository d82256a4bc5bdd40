"""Bounded parallel reads: a few threads, a bounded window of requests in flight, input order kept."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor


def read_many(read: Callable[[str], bytes], names: Iterable[str], *, workers: int = 8,
              window: int | None = None) -> Iterator[tuple[str, bytes | BaseException]]:
    """Yield `(name, data)` or `(name, error)` in input order.

    At most `window` (default 2 x workers) reads are pending at once, so a huge name list is
    never turned into a huge list of futures or buffered images. An error for one name is
    yielded, not raised: one bad image must not fail the rest.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    window = max(window or 2 * workers, 1)
    pending: deque[tuple[str, Future[bytes]]] = deque()
    it = iter(names)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mdb-read") as pool:
        try:
            for name in it:
                pending.append((name, pool.submit(read, name)))
                if len(pending) >= window:
                    yield _result(*pending.popleft())
            while pending:
                yield _result(*pending.popleft())
        finally:
            for _, fut in pending:
                fut.cancel()


def _result(name: str, fut: Future[bytes]) -> tuple[str, bytes | BaseException]:
    try:
        return name, fut.result()
    except Exception as exc:
        return name, exc


class ParallelReader:
    """`read_many` bound to one store's `read_bytes` and a worker count from settings."""

    def __init__(self, read: Callable[[str], bytes], workers: int = 8) -> None:
        self._read = read
        self.workers = workers

    def __call__(self, names: Iterable[str]) -> Iterator[tuple[str, bytes | BaseException]]:
        return read_many(self._read, names, workers=self.workers)

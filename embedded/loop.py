"""One long-lived event loop for all async function code in this process.

The durable SDK keeps a module-level aiohttp session (and an asyncio.Lock) bound to the
first loop that used it, so every async function, and the HTTP server, runs here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def get_loop() -> asyncio.AbstractEventLoop:
    """The process-wide function loop, started on first use in a daemon thread."""
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="embedded-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
    """Run a coroutine on the function loop from another thread and wait for its result."""
    loop = get_loop()
    if threading.current_thread().name == "embedded-loop":
        raise RuntimeError("run_sync called from the function loop itself")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

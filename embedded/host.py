"""EmbeddedHost: load an app, open its state, serve HTTP, run orchestrations, watch blobs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from .appmodel import (
    FunctionInfo,
    build_routes,
    hub_name,
    index_functions,
    load_app,
    load_host_json,
    load_settings,
    route_prefix,
    undo_settings,
)
from .blobwatch import BlobWatcher
from .clock import Clock, RealClock
from .engine import Engine
from .loop import get_loop, run_sync
from .server import HttpFrontend
from .store import Store

log = logging.getLogger("embedded")

KEYS_FILE = "keys.json"
_running_hosts = 0
_running_lock = threading.Lock()


async def _close_sdk_session() -> None:
    """Close the durable SDK's shared aiohttp session (it reopens on next use, on the same loop)."""
    try:
        from azure.durable_functions.models.utils.http_utils import _close_session
    except ImportError:
        return
    await _close_session()


def _load_or_create_keys(state_dir: Path, require_keys: bool | None) -> dict[str, str] | None:
    """Keys are enforced when STATE_DIR/keys.json exists (or require_keys=True creates it, mode 0600)."""
    path = state_dir / KEYS_FILE
    if require_keys is False:
        return None
    if path.is_file():
        keys = json.loads(path.read_text())
        if not all(isinstance(keys.get(k), str) and keys[k] for k in ("function", "master", "durabletask")):
            raise ValueError(f"{path} must hold non-empty 'function', 'master' and 'durabletask' keys")
        return keys
    if not require_keys:
        return None
    keys = {k: secrets.token_urlsafe(32) for k in ("function", "master", "durabletask")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f)
    return keys


class EmbeddedHost:
    """An offline Azure Functions host for one Python v2 app with Durable Functions.

    >>> with EmbeddedHost("app_dir", "state_dir") as host:
    ...     requests.post(host.base_url + "/api/orchestrators/hello")
    """

    def __init__(
        self,
        app_dir: str | Path,
        state_dir: str | Path,
        port: int = 0,
        workers: int | None = None,
        clock: Clock | None = None,
        env: dict[str, str] | None = None,
        *,
        require_keys: bool | None = None,
        fidelity_guard: bool | None = None,
        blob_poll_interval: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.bind = host
        self.workers = workers or os.cpu_count() or 2
        self.clock = clock or RealClock()
        self.env = env or {}
        self.require_keys = require_keys
        self.fidelity_guard = (
            os.environ.get("EMBEDDED_FIDELITY_GUARD") == "1" if fidelity_guard is None else fidelity_guard
        )
        self.blob_poll_interval = blob_poll_interval
        self.keys: dict[str, str] | None = None
        self.engine: Engine | None = None
        self.functions: dict[str, FunctionInfo] = {}
        self._frontend: HttpFrontend | None = None
        self._runner: web.AppRunner | None = None
        self._watcher: BlobWatcher | None = None
        self._applied_env: dict[str, Any] = {}
        self._store: Store | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ public API
    @property
    def function_key(self) -> str | None:
        """The key function-level routes need (None when keys are not enforced)."""
        return self.keys["function"] if self.keys else None

    @property
    def master_key(self) -> str | None:
        return self.keys["master"] if self.keys else None

    def start(self) -> EmbeddedHost:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        global _running_hosts
        with _running_lock:
            _running_hosts += 1
        self._counted = True
        self._applied_env = load_settings(self.app_dir, self.env)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        host_json = load_host_json(self.app_dir)
        app = load_app(self.app_dir)
        self.functions = index_functions(app)
        self.keys = _load_or_create_keys(self.state_dir, self.require_keys)
        self._store = Store(self.state_dir / "durable.sqlite3")
        default_auth = str(getattr(getattr(app, "auth_level", None), "value", "function")).lower()
        routes = build_routes(self.functions, route_prefix(host_json), default_auth)
        frontend_ref: list[HttpFrontend] = []
        self.engine = Engine(
            self._store,
            self.functions,
            self.clock,
            self.workers,
            client_json=lambda: frontend_ref[0].client_json(),
            fidelity_guard=self.fidelity_guard,
        )
        self._frontend = HttpFrontend(
            self.engine, routes, self.keys, hub_name(host_json), binding_kwargs=self.engine.binding_kwargs
        )
        frontend_ref.append(self._frontend)
        run_sync(self._serve())
        self._frontend.base_url = self.base_url
        if hasattr(self.clock, "add_listener"):
            self.clock.add_listener(self.engine.wake)
        self.engine.start()
        self._watcher = BlobWatcher(self._store, self.functions, self._invoke_blob, self.blob_poll_interval)
        self._watcher.start()
        log.info(
            "embedded host for %s listening on %s (%d functions, %d workers)",
            self.app_dir,
            self.base_url,
            len(self.functions),
            self.workers,
        )

    async def _serve(self) -> None:
        assert self._frontend
        self._runner = web.AppRunner(self._frontend.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.port = port
        self.base_url = f"http://{self.bind}:{port}"

    def _invoke_blob(self, fi: FunctionInfo, values: dict) -> None:
        assert self.engine
        kwargs = self.engine.binding_kwargs(fi, {k: v for k, v in values.items() if k in fi.params}, fi.name)
        if fi.is_async:
            run_sync(fi.func(**kwargs))
        else:
            res = fi.func(**kwargs)
            if asyncio.iscoroutine(res):
                run_sync(res)

    def stop(self) -> None:
        if self._watcher:
            self._watcher.stop()
            self._watcher = None
        if self.engine:
            self.engine.stop()
            if hasattr(self.clock, "remove_listener"):
                self.clock.remove_listener(self.engine.wake)
        if self._runner:
            try:
                run_sync(self._runner.cleanup(), timeout=10)
            except Exception:
                log.exception("error stopping the HTTP server")
            self._runner = None
        if self._frontend:
            self._frontend.pool.shutdown(wait=False)
        if self._store:
            self._store.close()
            self._store = None
        undo_settings(self._applied_env)
        self._applied_env = {}
        global _running_hosts
        if getattr(self, "_counted", False):
            self._counted = False
            with _running_lock:
                _running_hosts -= 1
                last = _running_hosts == 0
            if last:
                try:
                    run_sync(_close_sdk_session(), timeout=5)
                except Exception:
                    log.debug("could not close the SDK session", exc_info=True)

    def __enter__(self) -> EmbeddedHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests and tools
    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the dispatcher found nothing to do (no inbox, no running activity)."""
        assert self.engine
        self.engine.idle_event.clear()
        self.engine.wake()
        return self.engine.idle_event.wait(timeout)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return get_loop()

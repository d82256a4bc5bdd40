"""The app's view of the outside world, built once per process from settings.

Triggers and activities ask here for the work store, the output store, the secret store and the
compute backend; the adapters decide which implementation the settings call for. A test (or the
benchmark) can put a different compute backend in place for the current process with `override`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from adapters.settings import Settings

_lock = threading.Lock()
_cache: dict[Any, Any] = {}
_overrides: dict[str, Any] = {}

# Layout of one request's files in the work store (manifests, results, job receipts, markers).
def manifest_name(rid: str, shard: int) -> str:
    return f"{rid}/shards/{shard:05d}.manifest.json"


def result_name(rid: str, shard: int) -> str:
    return f"{rid}/shards/{shard:05d}.result.json"


def progress_name(rid: str, shard: int) -> str:
    """The scorer's live-progress file beside the result (`OUTPUT + ".progress.json"`)."""
    return result_name(rid, shard) + ".progress.json"


def job_receipt_name(rid: str, shard: int, attempt: int) -> str:
    return f"{rid}/jobs/s{shard:05d}-a{attempt}.json"


def plan_name(rid: str) -> str:
    return f"{rid}/plan.json"


def cancel_marker_name(rid: str) -> str:
    return f"{rid}/canceled.json"


def index_name(caller_key: str, rid: str) -> str:
    return f"_index/{caller_key}/{rid}.json"


OUTPUT_FILES = ("detections", "failed_images", "images")


def output_name(rid: str, kind: str) -> str:
    return f"{rid}/{kind}.json"


def settings() -> Settings:
    return Settings.from_env()


@dataclass
class Services:
    settings: Settings
    work: Any
    output: Any
    secrets: Any
    compute: Any
    _service_key: bytes | None = field(default=None, repr=False)

    def service_key(self) -> bytes:
        """The signing key of this service (job specs, status links), created once in the secret store."""
        if self._service_key is None:
            from adapters.secrets import service_key

            self._service_key = service_key(self.secrets)
        return self._service_key


def override(*, compute: Any = None) -> None:
    """Use `compute` instead of the configured backend in this process (tests, benchmark)."""
    with _lock:
        if compute is None:
            _overrides.pop("compute", None)
        else:
            _overrides["compute"] = compute
        _cache.clear()


def get() -> Services:
    """The services for the current settings (cached; settings are re-read each call, cheaply)."""
    s = settings()
    with _lock:
        svc = _cache.get(s)
        if svc is None:
            svc = _build(s)
            _cache.clear()
            _cache[s] = svc
        return svc


def _build(s: Settings) -> Services:
    from dataclasses import replace

    from adapters.backends import Backends
    from adapters.storage import open_store

    backends = Backends(s)
    work = backends.work_store()
    # The output location is the operator's, like the work location: local/Azurite allowed.
    trusted = replace(s, allow_local_storage=True, allow_azurite=True)
    output = open_store(s.output_url, trusted, secrets=backends.secrets) if s.output_url else work
    compute = _overrides.get("compute") or backends.compute
    return Services(settings=s, work=work, output=output, secrets=backends.secrets, compute=compute)

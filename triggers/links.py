"""Result links minted when a status is read, never frozen into the orchestration output.

The orchestration's output keeps the three files' *names* in the output store (`output_files`).
Every status read (`GET /api/detections/{id}`, v4 `task/{id}`, the CLI through the former) turns
them into links valid from now for the configured lifetime (`MDBATCH_OUTPUT_LINK_DAYS`), within what
the storage allows:

- blob output: a read-only SAS (a user-delegation SAS lives at most 7 days, Azure's limit for the
  delegation key; an account-key SAS, Azurite/dev, takes the full lifetime);
- a local output folder (`mdbatch serve`): a link to this service's own download route
  `/api/detections/{id}/files/{file}`, signed with HMAC-SHA256 over (id, file, caller, expiry) with a
  key kept in the secret store. Every HTTP client can fetch it, no key needed, and it opens only
  that file of that caller's job until it expires.

Jobs finished by older code carry `output_file_urls` (frozen links) instead; those are passed on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from activities import services as sv
from adapters import clock
from adapters.storage import LocalStore
from batch.signing import derive_key

FILES_ROUTE = "detections/{id}/files/{name}"


def output_files(output: Any) -> dict[str, str] | None:
    """The files' store names from a completed orchestration's output (None for older jobs)."""
    files = output.get("output_files") if isinstance(output, dict) else None
    if isinstance(files, dict) and all(isinstance(v, str) for v in files.values()):
        return {str(k): v for k, v in files.items()}
    return None


def lifetime(store: Any, days: float) -> timedelta:
    """The configured lifetime, capped at what the store's credential allows."""
    want = timedelta(days=days)
    cap = getattr(store, "max_link_lifetime", None)
    return min(want, cap) if isinstance(cap, timedelta) else want


def base_url_of(request_url: str) -> str:
    """`http://host:port` of the URL the caller used (links must point where the caller can reach)."""
    parts = urlsplit(request_url)
    return f"{parts.scheme}://{parts.netloc}"


def _signing_key(svc: sv.Services) -> bytes:
    """The download links' key: derived from the service key (batch.signing), one secret for all
    of the service's signatures, created once without races."""
    return derive_key(svc.service_key(), "download-link/1")


def signature(key: bytes, rid: str, file: str, caller: str, expires: int) -> str:
    msg = "\n".join((rid, file, caller, str(expires))).encode()
    return base64.urlsafe_b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode().rstrip("=")


def route_link(svc: sv.Services, base_url: str, rid: str, name: str, caller: str, expires: datetime) -> str:
    """A signed link to the download route for the file `name` (`{rid}/{file}`) of the job."""
    file = name.rsplit("/", 1)[-1]
    se = int(expires.timestamp())
    sig = signature(_signing_key(svc), rid, file, caller, se)
    query = urlencode({"caller": caller, "se": se, "sig": sig})
    return f"{base_url}/api/detections/{quote(rid)}/files/{quote(file)}?{query}"


def fresh_links(durable: dict[str, Any], request_url: str) -> dict[str, str] | None:
    """Links for a completed job's files, signed now; None when the job has no files (yet)."""
    output = durable.get("output")
    files = output_files(output)
    if files is None:
        return None
    svc = sv.get()
    store = svc.output
    life = lifetime(store, svc.settings.output_link_days)
    rid = str(durable.get("instanceId") or "")
    caller = str(((durable.get("input") or {}).get("caller")) or "anonymous")
    if isinstance(store, LocalStore):
        expires = clock.utcnow() + life
        base = base_url_of(request_url)
        return {kind: route_link(svc, base, rid, name, caller, expires) for kind, name in files.items()}
    return {kind: store.download_link(name, life) for kind, name in files.items()}


@dataclass(frozen=True)
class LinkCheck:
    """What a download-route request carries: checked by `verify`."""

    rid: str
    file: str
    caller: str
    expires: str
    sig: str


def verify(svc: sv.Services, link: LinkCheck) -> tuple[int, str] | None:
    """None when the link is genuine and current, else (HTTP status, reason): 401 for a link this
    service did not sign, 403 for one that expired."""
    try:
        se = int(link.expires)
    except ValueError:
        return 401, "the link has no valid expiry (se); read the job's status for a signed link"
    want = signature(_signing_key(svc), link.rid, link.file, link.caller, se)
    if not link.sig or not hmac.compare_digest(want.encode(), link.sig.encode()):
        return 401, "the link's signature does not match; read the job's status for a signed link"
    if clock.utcnow() >= datetime.fromtimestamp(se, UTC):
        return 403, "the link has expired; read the job's status again for a fresh one"
    return None

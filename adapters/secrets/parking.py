"""Parking: the caller's SAS goes into the secret store; everything else carries only its name."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from ..errors import AdapterError
from .base import SecretStore

REQUEST_ID_RE = re.compile(r"^[a-z0-9-]{8,64}$")
KINDS = ("input", "list")


def secret_name(request_id: str, kind: str = "input") -> str:
    """`mdb-{request_id}-input` / `mdb-{request_id}-list` (docs/contracts.md)."""
    if not REQUEST_ID_RE.match(request_id or ""):
        raise AdapterError(f"invalid request id {request_id!r}: expected [a-z0-9-]{{8,64}}")
    if kind not in KINDS:
        raise AdapterError(f"unknown secret kind {kind!r} (one of {', '.join(KINDS)})")
    return f"mdb-{request_id}-{kind}"


def check_ref(request_id: str, ref: str, kind: str) -> str:
    """A secret reference is resolved only for the request it was parked for: `mdb-{id}-{kind}`."""
    if ref != secret_name(request_id, kind):
        raise AdapterError(f"the secret reference does not belong to request {request_id!r}")
    return ref


def split_sas(url: str) -> tuple[str, str | None]:
    """`https://a/c/p?sv=..&sig=..` -> (`https://a/c/p`, `sv=..&sig=..`)."""
    parts = urlsplit(url)
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return clean, (parts.query or None)


def park_sas(secrets: SecretStore, request_id: str, sas: str, kind: str = "input") -> str:
    """Store `sas` (query string, with or without '?') and return the reference name."""
    name = secret_name(request_id, kind)
    secrets.set(name, sas.lstrip("?"))
    return name


def park_url(secrets: SecretStore, request_id: str, url: str, kind: str = "input") -> tuple[str, str | None]:
    """Split a caller's URL: park its SAS (if any); return (URL without SAS, secret_ref or None)."""
    clean, sas = split_sas(url)
    if not sas:
        return clean, None
    return clean, park_sas(secrets, request_id, sas, kind)


def unpark(secrets: SecretStore, request_id: str) -> None:
    """Delete every secret parked for the request (idempotent): call when the job ends."""
    for kind in KINDS:
        secrets.delete(secret_name(request_id, kind))

"""Signatures that let the service trust only what its own doors made.

Two uses, each with its own key derived from one service key (kept in the secret store):

- **job specs**: a door signs the `detection_batch` input it builds; the first activity (`plan`)
  refuses a spec without a valid signature, so an orchestration started by anyone else (with a
  leaked task-hub key, say) never reads a caller's images or resolves a parked secret.
- **status links**: the status URL handed to a caller carries a token bound to one request id,
  its caller and an expiry; it opens that request's status and nothing else.

Pure functions of (key, data): no I/O, no clock unless passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

SPEC_FIELD = "spec_sig"  # the signature's field in the job spec
SPEC_VERSION = "v1"
TOKEN_VERSION = "s1"


class SignatureError(ValueError):
    """A spec or token that our doors did not make (or that was altered since)."""


def derive_key(service_key: bytes, purpose: str) -> bytes:
    """One key per purpose, so a signature made for one use never passes for another."""
    return hmac.new(service_key, b"mdbatch/" + purpose.encode(), hashlib.sha256).digest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- job specs ------------------------------------------------------------------------------------

def spec_signature(key: bytes, spec: dict[str, Any]) -> str:
    body = {k: v for k, v in spec.items() if k != SPEC_FIELD}
    mac = hmac.new(derive_key(key, "job-spec/1"), _canonical(body), hashlib.sha256).digest()
    return f"{SPEC_VERSION}.{_b64(mac)}"


def sign_spec(key: bytes, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its signature added (over every other field, in canonical JSON)."""
    return {**spec, SPEC_FIELD: spec_signature(key, spec)}


def verify_spec(key: bytes, spec: Any) -> None:
    """Raise SignatureError unless `spec` carries a valid signature of our doors."""
    if not isinstance(spec, dict):
        raise SignatureError("the job spec is not an object")
    given = spec.get(SPEC_FIELD)
    if not isinstance(given, str) or not given:
        raise SignatureError("the job spec is not signed by this service's doors")
    if not hmac.compare_digest(given, spec_signature(key, spec)):
        raise SignatureError("the job spec's signature does not match (forged or altered)")


# --- status tokens --------------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusGrant:
    """What a status token opens: one request, for one caller, until `expires` (Unix seconds)."""

    request_id: str
    caller: str
    expires: int


def _status_mac(key: bytes, grant: StatusGrant) -> bytes:
    msg = _canonical(["status", grant.request_id, grant.caller, grant.expires])
    return hmac.new(derive_key(key, "status-link/1"), msg, hashlib.sha256).digest()


def status_token(key: bytes, grant: StatusGrant) -> str:
    """`s1.EXPIRES.MAC`: safe in a URL; the caller is not in it (the instance's input names it)."""
    return f"{TOKEN_VERSION}.{grant.expires}.{_b64(_status_mac(key, grant))}"


def check_status_token(key: bytes, token: str, request_id: str, caller: str, now: float) -> None:
    """Raise SignatureError unless `token` was made for this request and caller and is unexpired."""
    try:
        version, expires_s, _mac = token.split(".", 2)
        expires = int(expires_s)
    except (AttributeError, ValueError):
        raise SignatureError("malformed status token") from None
    if version != TOKEN_VERSION:
        raise SignatureError("unknown status token version")
    want = status_token(key, StatusGrant(request_id, caller, expires))
    if not hmac.compare_digest(token, want):
        raise SignatureError("the status token is not valid for this request")
    if expires < now:
        raise SignatureError("the status token has expired")

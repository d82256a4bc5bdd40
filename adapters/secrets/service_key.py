"""The service's own signing key: created once in the secret store, never handed out.

The doors sign job specs and status links with keys derived from it (`batch.signing`). It lives
beside the parked SAS tokens (Key Vault in Azure, the 0600 secret file locally) under a name no
request secret can take (request secrets end in `-input` / `-list`).
"""

from __future__ import annotations

import base64
import secrets as _random

from ..errors import AdapterError
from .base import SecretStore

SERVICE_KEY_NAME = "mdb-service-signing-key"


def service_key(store: SecretStore) -> bytes:
    """The key's bytes, creating it (32 random bytes) on first use; all processes agree on one."""
    fresh = base64.urlsafe_b64encode(_random.token_bytes(32)).decode()
    create = getattr(store, "set_if_absent", None)
    if create is not None:
        value = create(SERVICE_KEY_NAME, fresh)
    else:  # a store without an atomic create: first read, else write and read back
        from ..errors import SecretNotFoundError

        try:
            value = store.get(SERVICE_KEY_NAME)
        except SecretNotFoundError:
            store.set(SERVICE_KEY_NAME, fresh)
            value = store.get(SERVICE_KEY_NAME)
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (ValueError, TypeError):
        raw = b""
    if len(raw) < 32:
        raise AdapterError(f"the secret {SERVICE_KEY_NAME!r} is not a service key (32+ bytes, base64)")
    return raw

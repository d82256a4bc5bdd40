"""Azure Key Vault secret store (azure-keyvault-secrets), with a short TTL cache for reads."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..errors import SecretNotFoundError
from .base import check_secret_name


class KeyVaultSecretStore:
    """Secrets in one vault. The identity needs Key Vault Secrets User (read) / Officer (write, delete)."""

    def __init__(self, vault_url: str, credential: Any = None, *, ttl_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, **client_kwargs: Any) -> None:
        from azure.keyvault.secrets import SecretClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self.vault_url = vault_url
        self.client = SecretClient(vault_url=vault_url, credential=credential, **client_kwargs)
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyVaultSecretStore({self.vault_url!r})"

    def get(self, name: str) -> str:
        check_secret_name(name)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        try:
            value = self.client.get_secret(name).value
        except ResourceNotFoundError:
            with self._lock:
                self._cache.pop(name, None)
            raise SecretNotFoundError(f"secret {name!r} not found in {self.vault_url}") from None
        if value is None:
            raise SecretNotFoundError(f"secret {name!r} in {self.vault_url} has no value")
        with self._lock:
            self._cache[name] = (now, value)
        return value

    def set(self, name: str, value: str) -> None:
        check_secret_name(name)
        self.client.set_secret(name, value, content_type="text/plain")
        with self._lock:
            self._cache[name] = (self._clock(), value)

    def set_if_absent(self, name: str, value: str) -> str:
        """Create the secret once: with racing creators the oldest version wins, read by everyone.

        Key Vault has no conditional create; each `set` adds a version. Every caller reads the
        first version ever made (not the latest), so all processes agree on one value whatever the
        order of their writes, now and later.
        """
        check_secret_name(name)
        try:
            return self._first_version(name)
        except SecretNotFoundError:
            pass
        self.client.set_secret(name, value, content_type="text/plain")
        return self._first_version(name)

    def _first_version(self, name: str) -> str:
        try:
            versions = [v for v in self.client.list_properties_of_secret_versions(name)
                        if v.enabled is not False]
        except ResourceNotFoundError:
            versions = []
        if not versions:
            raise SecretNotFoundError(f"secret {name!r} not found in {self.vault_url}")
        first = min(versions, key=lambda v: (v.created_on is None, v.created_on, v.version or ""))
        stored = self.client.get_secret(name, first.version).value
        if stored is None:
            raise SecretNotFoundError(f"secret {name!r} in {self.vault_url} has no value")
        return stored

    def delete(self, name: str) -> None:
        """Start the (soft) delete and return; a missing secret is not an error."""
        check_secret_name(name)
        with self._lock:
            self._cache.pop(name, None)
        with contextlib.suppress(ResourceNotFoundError):
            self.client.begin_delete_secret(name)

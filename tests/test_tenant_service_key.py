"""Issue 14, item 1: the service's signing key is created once in the secret store and every
process agrees on it, with the local 0600 file and with Key Vault (the real SecretClient against a
transport that answers like Key Vault, versions included)."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest
from adapters_fixtures import FakeCredential, Recorded, recording_transport, vault_challenge

from adapters.errors import AdapterError
from adapters.secrets import SERVICE_KEY_NAME, KeyVaultSecretStore, LocalSecretStore, service_key

VAULT = "https://mdb-test.vault.azure.net"


class VersionedVault:
    """Secrets with versions: PUT adds one, GET name is the latest, GET name/versions lists them.
    `before_put` runs first on every PUT (to let a racing instance write in between)."""

    def __init__(self) -> None:
        self.versions: dict[str, list[tuple[str, int, str]]] = {}  # name -> [(version, created, value)]
        self.before_put: Any = None
        self.clock = 1_700_000_000

    def add(self, name: str, value: str) -> None:
        self.clock += 1
        self.versions.setdefault(name, []).append((f"v{self.clock}", self.clock, value))

    def __call__(self, req: Recorded) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(req.url)
        if (answer := vault_challenge(req)) is not None:
            return answer
        segs = [s for s in parts.path.split("/") if s]
        if segs[0] != "secrets":
            return 400, {}, {"error": {"code": "BadRequest", "message": parts.path}}
        name = segs[1]
        if req.method == "PUT":
            if self.before_put is not None:
                hook, self.before_put = self.before_put, None
                hook()
            self.add(name, json.loads(req.body)["value"])
            return 200, {}, self._bundle(name, *self.versions[name][-1])
        found = self.versions.get(name)
        if not found:
            return 404, {}, {"error": {"code": "SecretNotFound", "message": f"{name} not found"}}
        if len(segs) == 3 and segs[2] == "versions":
            items = [{"id": f"{VAULT}/secrets/{name}/{v}",
                      "attributes": {"enabled": True, "created": c, "updated": c}} for v, c, _ in found]
            return 200, {}, {"value": items, "nextLink": None}
        if len(segs) == 3:
            match = [f for f in found if f[0] == segs[2]]
            if not match:
                return 404, {}, {"error": {"code": "SecretNotFound", "message": "no such version"}}
            return 200, {}, self._bundle(name, *match[0])
        return 200, {}, self._bundle(name, *found[-1])

    @staticmethod
    def _bundle(name: str, version: str, created: int, value: str) -> dict[str, Any]:
        return {"id": f"{VAULT}/secrets/{name}/{version}", "value": value,
                "attributes": {"enabled": True, "created": created, "updated": created}}


def _store(vault: VersionedVault) -> KeyVaultSecretStore:
    transport, _ = recording_transport(vault)
    return KeyVaultSecretStore(VAULT, FakeCredential(), ttl_s=30, transport=transport, retry_total=0)


def test_key_vault_creators_agree_on_the_first_version() -> None:
    vault = VersionedVault()
    a, b = _store(vault), _store(vault)
    # A finds no key and writes one; just before its write lands, B creates its own
    vault.before_put = lambda: b.set_if_absent(SERVICE_KEY_NAME, base64.urlsafe_b64encode(b"b" * 32).decode())
    key_a = service_key(a)
    key_b = service_key(b)
    assert key_a == key_b == b"b" * 32, "both use the first version ever written"
    assert len(vault.versions[SERVICE_KEY_NAME]) == 2
    # a later process agrees too, although reading the secret by name gives the latest version
    c = _store(vault)
    assert c.get(SERVICE_KEY_NAME) != vault.versions[SERVICE_KEY_NAME][0][2]
    assert service_key(c) == b"b" * 32
    assert len(vault.versions[SERVICE_KEY_NAME]) == 2, "no third version written"


def test_local_store_creates_the_key_once_under_its_lock(tmp_path: Any) -> None:
    path = tmp_path / "secrets.json"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(service_key(LocalSecretStore(path))))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    LocalSecretStore(path).set(SERVICE_KEY_NAME, "c2hvcnQ")  # 5 bytes: not a key
    with pytest.raises(AdapterError, match="not a service key"):
        service_key(LocalSecretStore(path))

"""Secrets: the real SecretClient against a transport that answers like Key Vault; the local 0600
file store in the format the scorer reads; parking; log redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from adapters_fixtures import FakeCredential, Recorded, recording_transport, vault_challenge
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from adapters.errors import AdapterError, SecretNotFoundError
from adapters.redaction import install_redaction, redact
from adapters.secrets import KeyVaultSecretStore, LocalSecretStore, park_url, secret_name, unpark

VAULT = "https://mdb-test.vault.azure.net"
KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"


class FakeVault:
    """Answers the Key Vault REST API (7.x) for secrets, with the bearer challenge first."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.deleted: dict[str, str] = {}

    def __call__(self, req: Recorded) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(req.url)
        if (answer := vault_challenge(req)) is not None:
            return answer
        assert "api-version=" in parts.query
        segs = [s for s in parts.path.split("/") if s]
        if segs[0] == "secrets" and req.method == "GET":
            name = segs[1]
            if name not in self.secrets:
                message = f"A secret with (name/id) {name} was not found in this key vault."
                return 404, {}, {"error": {"code": "SecretNotFound", "message": message}}
            return 200, {}, self._bundle(name, self.secrets[name])
        if segs[0] == "secrets" and req.method == "PUT":
            body = json.loads(req.body)
            self.secrets[segs[1]] = body["value"]
            return 200, {}, self._bundle(segs[1], body["value"])
        if segs[0] == "secrets" and req.method == "DELETE":
            name = segs[1]
            if name not in self.secrets:
                return 404, {}, {"error": {"code": "SecretNotFound", "message": "not found"}}
            self.deleted[name] = self.secrets.pop(name)
            return 200, {}, {**self._bundle(name, None), "recoveryId": f"{VAULT}/deletedsecrets/{name}",
                             "deletedDate": 1700000000, "scheduledPurgeDate": 1707776000}
        if segs[0] == "deletedsecrets" and req.method == "GET":
            name = segs[1]
            if name not in self.deleted:
                return 404, {}, {"error": {"code": "SecretNotFound", "message": "not found"}}
            return 200, {}, {**self._bundle(name, None), "recoveryId": f"{VAULT}/deletedsecrets/{name}"}
        return 400, {}, {"error": {"code": "BadRequest", "message": f"unexpected {req.method} {parts.path}"}}

    @staticmethod
    def _bundle(name: str, value: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": f"{VAULT}/secrets/{name}/0123456789abcdef",
                               "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000,
                                              "recoveryLevel": "Recoverable+Purgeable"}}
        if value is not None:
            out["value"] = value
        return out


def _kv(now: list[float]) -> tuple[KeyVaultSecretStore, FakeVault, Any, FakeCredential]:
    vault = FakeVault()
    transport, adapter = recording_transport(vault)
    cred = FakeCredential()
    store = KeyVaultSecretStore(VAULT, cred, ttl_s=30, clock=lambda: now[0], transport=transport,
                                retry_total=0)
    return store, vault, adapter, cred


def test_key_vault_set_get_cache_delete() -> None:
    now = [1000.0]
    store, vault, adapter, cred = _kv(now)
    store.set("mdb-abcdef12-input", "sv=2024&sig=SECRETSIG")
    assert vault.secrets == {"mdb-abcdef12-input": "sv=2024&sig=SECRETSIG"}

    # The first request is the unauthenticated challenge; every later one carries the bearer token.
    assert "authorization" not in {k.lower() for k in adapter.requests[0].headers}
    authed = [r for r in adapter.requests if "Authorization" in r.headers]
    assert authed and all(r.headers["Authorization"] == "Bearer fake-token" for r in authed)
    assert cred.scopes and cred.scopes[0] == ("https://vault.azure.net/.default",)
    put = authed[0]
    assert put.method == "PUT" and urlsplit(put.url).path == "/secrets/mdb-abcdef12-input"

    # get: served from the cache within the TTL, from the vault after it
    vault.secrets["mdb-abcdef12-input"] = "changed-in-vault"
    n = len(adapter.requests)
    assert store.get("mdb-abcdef12-input") == "sv=2024&sig=SECRETSIG"
    assert len(adapter.requests) == n
    now[0] += 31
    assert store.get("mdb-abcdef12-input") == "changed-in-vault"
    get = adapter.requests[-1]
    assert get.method == "GET" and urlsplit(get.url).path.rstrip("/") == "/secrets/mdb-abcdef12-input"

    store.delete("mdb-abcdef12-input")
    assert "mdb-abcdef12-input" not in vault.secrets and "mdb-abcdef12-input" in vault.deleted
    assert any(r.method == "DELETE" and urlsplit(r.url).path == "/secrets/mdb-abcdef12-input"
               for r in adapter.requests)
    with pytest.raises(SecretNotFoundError, match="mdb-abcdef12-input"):
        store.get("mdb-abcdef12-input")  # the cache was dropped on delete
    store.delete("mdb-abcdef12-input")  # idempotent


def test_key_vault_missing_secret_and_bad_names() -> None:
    store, _, adapter, _ = _kv([0.0])
    with pytest.raises(SecretNotFoundError) as err:
        store.get("mdb-nothere1-input")
    assert "mdb-nothere1-input" in str(err.value) and VAULT in str(err.value)
    n = len(adapter.requests)
    with pytest.raises(AdapterError):
        store.get("bad_name!")  # refused before any request
    assert len(adapter.requests) == n


def test_local_store_file_format_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secrets.json"
    store = LocalSecretStore(path)
    store.set("mdb-req00001-input", "sv=1&sig=abc")
    store.set("mdb-req00001-list", "sv=1&sig=def")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"mdb-req00001-input": "sv=1&sig=abc",
                                            "mdb-req00001-list": "sv=1&sig=def"}
    assert LocalSecretStore(path).get("mdb-req00001-list") == "sv=1&sig=def"
    store.delete("mdb-req00001-list")
    store.delete("mdb-req00001-list")
    assert json.loads(path.read_text()) == {"mdb-req00001-input": "sv=1&sig=abc"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(SecretNotFoundError):
        store.get("mdb-req00001-list")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_parking_round_trip(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "secrets.json")
    sas = generate_container_sas("acct", "images", account_key=KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    url, ref = park_url(store, "3f2a0000-aaaa", f"https://acct.blob.core.windows.net/images/p?{sas}")
    assert url == "https://acct.blob.core.windows.net/images/p" and ref == "mdb-3f2a0000-aaaa-input"
    assert store.get(ref) == sas
    assert park_url(store, "3f2a0000-aaaa", "https://acct.blob.core.windows.net/images") == (
        "https://acct.blob.core.windows.net/images", None)
    list_url = f"https://acct.blob.core.windows.net/lists/l.json?{sas}"
    _, lref = park_url(store, "3f2a0000-aaaa", list_url, "list")
    assert lref == secret_name("3f2a0000-aaaa", "list") == "mdb-3f2a0000-aaaa-list"
    unpark(store, "3f2a0000-aaaa")
    assert json.loads((tmp_path / "secrets.json").read_text()) == {}
    with pytest.raises(AdapterError):
        secret_name("Bad Id!")


def test_redaction_of_log_lines() -> None:
    sas = generate_container_sas("acct", "images", account_key=KEY, permission="rl",
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    sig = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    conn = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"
    stream = io.StringIO()
    logger = logging.getLogger("mdb-redaction-test")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    install_redaction(logger)
    try:
        logger.info("fetching https://acct.blob.core.windows.net/images/x.jpg?%s now", sas)
        logger.info("conn %s", conn)
        logger.info("headers {'Authorization': 'Bearer eyJ0eXAiOiJKV1Qi.eyJhdWQiOi.sig-part'}")
        try:
            raise ValueError(f"failed for ?{sas}")
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert sig not in out and KEY not in out and "eyJ0eXAiOiJKV1Qi" not in out
    assert out.count("sig=REDACTED") >= 2 and "AccountKey=REDACTED" in out and "Bearer REDACTED" in out
    assert "https://acct.blob.core.windows.net/images/x.jpg?" in out  # the rest stays readable
    assert redact("nothing secret here") == "nothing secret here"


def test_redaction_covers_handlers_added_later() -> None:
    """A host or library may add handlers after the entry point installed redaction."""
    install_redaction()
    sas = generate_container_sas("acct", "images", account_key=KEY, permission="r",
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    sig = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    stream = io.StringIO()
    logger = logging.getLogger("mdb-redaction-late-handler")
    handler = logging.StreamHandler(stream)  # added after install_redaction, no filter of ours on it
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("reading ?%s", sas)
        try:
            raise RuntimeError(f"denied for ?{sas}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert sig not in out and out.count("sig=REDACTED") >= 2

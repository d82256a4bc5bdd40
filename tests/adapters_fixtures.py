"""Fixtures for the adapters tests: the same store test cases over Azurite and a temp folder."""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from azure.storage.blob import BlobServiceClient
from conftest import AZURITE_BIN, AZURITE_KEY, _free_port, _wait_port
from requests.adapters import BaseAdapter

from adapters.settings import Settings
from adapters.storage import open_store
from adapters.storage.base import Store


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for tests: local folders and Azurite allowed, state under tmp_path."""
    base = Settings(state_dir=tmp_path / "state", allow_local_storage=True, allow_azurite=True)
    return replace(base, **overrides)  # type: ignore[arg-type]


def new_container(azurite: object) -> tuple[BlobServiceClient, str]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)  # type: ignore[attr-defined]
    name = "t" + uuid.uuid4().hex[:20]
    service.create_container(name)
    return service, name


@pytest.fixture(params=["azurite", "local"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """One empty store: an Azurite container (account key from the connection string) or a folder."""
    if request.param == "azurite":
        azurite = request.getfixturevalue("azurite")
        service, name = new_container(azurite)
        settings = make_settings(tmp_path, storage_connection_string=azurite.connection_string)
        yield open_store(f"{azurite.blob_endpoint}/{name}", settings)
        service.delete_container(name)
    else:
        settings = make_settings(tmp_path)
        yield open_store(str(tmp_path / "store"), settings)


@dataclass(frozen=True)
class BigContainer:
    blob_endpoint: str
    connection_string: str
    container: str
    names: int


def _seed_blob_db(location: Path, container: str, count: int) -> None:
    """Copy the one blob record Azurite wrote into `count` records with distinct names.

    Uploading 100,000 blobs through Azurite's HTTP API takes about 8 minutes on 2 cores
    (~200 PUT/s), so the metadata file of a stopped Azurite is extended instead; the listing
    under test is then served by the real Azurite through the real SDK.
    """
    db_path = location / "__azurite_db_blob__.json"
    db = json.loads(db_path.read_text())
    blobs = next(c for c in db["collections"] if c["name"] == "$BLOBS_COLLECTION$")
    template = next(b for b in blobs["data"] if b["containerName"] == container)
    data = []
    for i in range(count):
        doc = dict(template)
        doc["name"] = f"site{i % 10}/cam{i % 7}/IMG_{i:06d}." + ("JPG" if i % 4 == 0 else "jpg" if i % 4 != 3
                                                                 else "txt")
        doc["meta"] = dict(template["meta"])
        doc["$loki"] = i + 1
        data.append(doc)
    blobs["data"] = data
    blobs["maxId"] = count
    blobs["idIndex"] = None
    for prop, index in blobs["binaryIndices"].items():  # LokiJS binary index: positions sorted by value
        index["dirty"] = False
        index["values"] = sorted(range(count), key=lambda i, p=prop: (data[i].get(p) or "", i))
    db_path.write_text(json.dumps(db))


def _start_azurite(location: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(AZURITE_BIN), "--silent", "--location", str(location), "--skipApiVersionCheck", "--loose",
         "--blobPort", str(port), "--queuePort", str(_free_port()), "--tablePort", str(_free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def big_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigContainer]:
    """A private Azurite holding one container with 100,000 blobs (seeded, see _seed_blob_db)."""
    count = 100_000
    location = tmp_path_factory.mktemp("azurite-big")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint};")
    proc = _start_azurite(location, port)
    try:
        _wait_port(port)
        service = BlobServiceClient.from_connection_string(conn)
        service.create_container("big").upload_blob("template.jpg", b"")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    _seed_blob_db(location, "big", count)
    proc = _start_azurite(location, port)
    try:
        _wait_port(port, timeout=120)
        yield BigContainer(endpoint, conn, "big", count)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- a recording HTTP layer under the real azure-core RequestsTransport --------------------------

@dataclass
class Recorded:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class FakeCredential:
    """A TokenCredential that hands out a fixed token and records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken("fake-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: object = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        self.scopes.append(scopes)
        return AccessTokenInfo("fake-token", int(time.time()) + 3600)


Handler = Callable[[Recorded], tuple[int, dict[str, str], Any]]


class RecordingAdapter(BaseAdapter):
    """A `requests` adapter that answers from `handler` and records every request."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[Recorded] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = b"".join(body)  # type: ignore[arg-type]
        rec = Recorded(request.method or "", request.url or "", dict(request.headers), body)
        self.requests.append(rec)
        status, headers, content = self.handler(rec)
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        hdrs = {"content-type": "application/json", "content-length": str(len(data)), **headers}
        resp = requests.Response()
        resp.status_code = status
        resp.url = rec.url
        resp.request = request
        resp.headers = requests.structures.CaseInsensitiveDict(hdrs)
        resp.raw = urllib3.response.HTTPResponse(body=io.BytesIO(data), headers=hdrs, status=status,
                                                 preload_content=False)
        return resp

    def close(self) -> None:
        pass


def recording_transport(handler: Handler) -> tuple[Any, RecordingAdapter]:
    """The real azure-core RequestsTransport over a session whose https traffic goes to `handler`."""
    from azure.core.pipeline.transport import RequestsTransport

    adapter = RecordingAdapter(handler)
    session = requests.Session()
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=False), adapter


def vault_challenge(req: Recorded) -> tuple[int, dict[str, str], Any] | None:
    """Key Vault's answer to a request without a token (the SDK's challenge-based auth starts
    with it), or None when the request carries one."""
    if "authorization" in {k.lower() for k in req.headers}:
        return None
    challenge = ('Bearer authorization="https://login.microsoftonline.com/tenant-id", '
                 'resource="https://vault.azure.net"')
    return 401, {"WWW-Authenticate": challenge}, {"error": {"code": "Unauthorized"}}

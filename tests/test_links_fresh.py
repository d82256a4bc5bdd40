"""Result links are signed when a status is read (issue 11), so they still work 8 days later.

The service reads time through `adapters.clock`; these tests move it. Two outputs:
- a local folder (`mdbatch serve`): links to the service's own download route, checked by the route;
- Azure Blob Storage (Azurite, account-key SAS): links checked by the storage itself. The service
  clock runs 8 days behind while the job completes, then catches up with real time, so Azurite (which
  knows only the real time) judges the links.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from adapters import clock
from adapters.storage import BlobStore, parse_location
from embedded import EmbeddedHost
from tests.service_fixtures import (  # noqa: F401
    APP_DIR,
    Dataset,
    check_results,
    dataset,
    model_dir,
    service_env,
)
from tests.test_service_e2e import follow
from triggers import links

V4 = "api/v4/camera-trap/detection-batch"


class Shifted:
    """Real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture()
def shifted() -> Iterator[Shifted]:
    c = Shifted()
    clock.use(c)
    yield c
    clock.use(None)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[EmbeddedHost]:  # noqa: F811
    state = tmp_path_factory.mktemp("links-state")
    env = service_env(state, model_dir, MDBATCH_OUTPUT_LINK_DAYS="7")
    with EmbeddedHost(APP_DIR, state / "host", workers=4, env=env, require_keys=True) as h:
        yield h


def _run(host: EmbeddedHost, dataset: Dataset, **extra: Any) -> tuple[str, str]:  # noqa: F811
    """(request id, its status URL) once the job completed."""
    r = requests.post(f"{host.base_url}/api/detections", headers={"x-functions-key": host.function_key},
                      json={"input_container_sas": dataset.root.as_uri(), "caller": "alice", **extra},
                      timeout=30)
    assert r.status_code == 202, r.text
    status_url = r.json()["statusQueryGetUri"]
    doc = follow(status_url)
    assert doc["runtimeStatus"] == "Completed", doc
    assert set(doc["output"]["output_files"]) == {"detections", "failed_images", "images"}  # names kept
    return str(doc["instanceId"]), status_url


def _durable_links(status_url: str) -> dict[str, str]:
    """The status URL's Durable-shaped answer carries links signed at read time too."""
    r = requests.get(status_url, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["output"]["output_file_urls"]


def _status_links(host: EmbeddedHost, rid: str) -> dict[str, str]:
    r = requests.get(f"{host.base_url}/api/detections/{rid}", params={"caller": "alice"},
                     headers={"x-functions-key": host.function_key}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["result"]["output_file_urls"]


def _v4_links(host: EmbeddedHost, rid: str) -> dict[str, str]:
    r = requests.get(f"{host.base_url}/{V4}/task/{rid}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["Status"]["message"]["output_file_urls"]


def _with_query(link: str, **changes: str) -> str:
    parts = urlsplit(link)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return urlunsplit(parts._replace(query=urlencode(q)))


def test_local_links_work_8_days_after_completion(host: EmbeddedHost, dataset: Dataset,  # noqa: F811
                                                  shifted: Shifted, tmp_path: Path) -> None:
    rid, status_url = _run(host, dataset)
    at_completion = _status_links(host, rid)
    for kind, link in at_completion.items():
        assert link.startswith(f"{host.base_url}/api/detections/{rid}/files/{rid}_"), (kind, link)
    first = requests.get(at_completion["detections"], timeout=10)  # no key: the link is the credential
    assert first.status_code == 200, first.text
    check_results(first.json(), dataset)

    shifted.offset = timedelta(days=8)  # a week and a day later
    stale = requests.get(at_completion["detections"], timeout=10)
    assert stale.status_code == 403 and "expired" in stale.json()["error"], stale.text  # 7-day links
    # the CLI's client, handed the stale links, reads the status again and follows the fresh ones
    from mdbatch.client import ApiClient

    got = tmp_path / "via-cli.json"
    ApiClient(host.base_url, key=host.function_key, caller="alice").download_result(
        rid, got, urls=at_completion)
    assert got.read_bytes() == first.content
    for fresh in (_status_links(host, rid), _v4_links(host, rid), _durable_links(status_url)):
        assert fresh["detections"] != at_completion["detections"]
        r = requests.get(fresh["detections"], timeout=10)
        assert r.status_code == 200, r.text
        assert r.content == first.content
        assert requests.get(fresh["images"], timeout=10).json() == dataset.files
        se = int(parse_qs(urlsplit(fresh["detections"]).query)["se"][0])
        assert abs(se - (shifted() + timedelta(days=7)).timestamp()) < 120  # the configured lifetime

    # the link opens that file of that caller's job, nothing else
    link = fresh["detections"]
    other_file = link.replace("_detections_", "_failed_images_", 1)
    later = str(int(parse_qs(urlsplit(link).query)["se"][0]) + 3600)
    for forged in (_with_query(link, sig="A" * 43), _with_query(link, caller="bob"),
                   _with_query(link, se=later), other_file):
        r = requests.get(forged, timeout=10)
        assert r.status_code == 401 and r.json()["error"], (forged, r.text)
    r = requests.get(link.replace(rid, "f" * 32), timeout=10)
    assert r.status_code in (401, 404) and r.json()["error"], r.text


def test_blob_links_work_8_days_after_completion(host: EmbeddedHost, dataset: Dataset,  # noqa: F811
                                                 shifted: Shifted, azurite: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.storage.blob import BlobServiceClient

    container = f"results{int(time.time() * 1000) % 10**9}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    monkeypatch.setenv("MDBATCH_OUTPUT_URL", f"{azurite.blob_endpoint}/{container}")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    shifted.offset = timedelta(days=-8)  # the job completes "8 days ago"
    rid, _ = _run(host, dataset, first_n=4)
    at_completion = _status_links(host, rid)
    base = f"{azurite.blob_endpoint}/{container}/{rid}/{rid}_detections_"
    assert at_completion["detections"].startswith(base), at_completion
    old = requests.get(at_completion["detections"], timeout=10)
    assert old.status_code == 403, old.text  # Azurite: the 7-day SAS signed then has expired

    shifted.offset = timedelta(0)  # 8 days later: now
    fresh = _status_links(host, rid)
    r = requests.get(fresh["detections"], timeout=10)
    assert r.status_code == 200, r.text
    check_results(r.json(), dataset, dataset.files[:4])
    v4 = _v4_links(host, rid)
    assert requests.get(v4["images"], timeout=10).json() == dataset.files[:4]


def test_link_lifetime_is_capped_by_the_credential() -> None:
    """A user-delegation SAS (managed identity in Azure) lives 7 days at most; an account-key SAS
    takes the configured lifetime."""
    from adapters.settings import Settings

    loc = parse_location("https://acct.blob.core.windows.net/results", Settings())
    class NoToken:  # never asked: no link is signed here
        def get_token(self, *scopes: str, **kw: Any) -> Any:
            raise AssertionError("no token needed")

    by_identity = BlobStore(loc, token_credential=NoToken())  # type: ignore[arg-type]
    by_key = BlobStore(loc, account_key="a2V5")
    assert links.lifetime(by_identity, 90) == timedelta(days=7)
    assert links.lifetime(by_identity, 2) == timedelta(days=2)
    assert links.lifetime(by_key, 90) == timedelta(days=90)

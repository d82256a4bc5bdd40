"""End to end over HTTP on the embedded host: local folders, local compute, the real scorer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests

from embedded import EmbeddedHost
from tests.service_fixtures import (  # noqa: F401
    APP_DIR,
    Dataset,
    check_results,
    dataset,
    model_dir,
    service_env,
)


def follow(url: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(url, timeout=10)
        assert r.status_code in (200, 202), r.text
        doc = r.json()
        if doc["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            return doc
        time.sleep(0.3)
    raise AssertionError(f"not finished: {doc}")


def fetch(link: str) -> object:
    if link.startswith("file://"):
        return json.loads(Path(unquote(urlsplit(link).path)).read_text())
    r = requests.get(link, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def result(any_url: str, doc: dict, kind: str = "detections") -> object:
    """A completed job's result file, through fresh links from its curated status (issue 11: the
    orchestration output keeps file names, links are signed when read). `any_url`: a URL of the host."""
    parts = urlsplit(any_url)
    caller = (doc.get("input") or {}).get("caller") or "anonymous"
    r = requests.get(f"{parts.scheme}://{parts.netloc}/api/detections/{doc['instanceId']}",
                     params={"caller": caller}, timeout=10)
    assert r.status_code == 200, r.text
    return fetch(r.json()["result"]["output_file_urls"][kind])


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[EmbeddedHost]:  # noqa: F811
    state = tmp_path_factory.mktemp("svc-state")
    with EmbeddedHost(APP_DIR, state / "host", workers=4, env=service_env(state, model_dir)) as h:
        yield h


def test_http_end_to_end(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    body = {"input_container_sas": dataset.root.as_uri(), "caller": "alice", "request_name": "e2e-1"}
    r = requests.post(f"{host.base_url}/api/detections", json=body, timeout=30)
    assert r.status_code == 202, r.text
    mgmt = r.json()
    assert r.headers["Location"] and mgmt["id"] and mgmt["statusQueryGetUri"]
    doc = follow(mgmt["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Completed", doc
    out = doc["output"]
    assert out["images"] == len(dataset.files) and out["failed_images"] == 1 and out["failed_shards"] == 0
    assert doc["customStatus"]["stage"] == "completed"
    # the orchestration keeps the files' names; the status URL signs links when it is read
    assert set(out["output_files"]) == {"detections", "failed_images", "images"}
    check_results(fetch(out["output_file_urls"]["detections"]), dataset)
    check_results(result(host.base_url, doc), dataset)
    assert result(host.base_url, doc, "failed_images") == list(dataset.bad)
    assert result(host.base_url, doc, "images") == dataset.files
    # curated status, caller-scoped
    st = requests.get(f"{host.base_url}/api/detections/{mgmt['id']}", params={"caller": "alice"}, timeout=10)
    assert st.status_code == 200 and st.json()["state"] == "completed", st.text
    other = requests.get(f"{host.base_url}/api/detections/{mgmt['id']}", params={"caller": "bob"}, timeout=10)
    assert other.status_code == 404
    listed = requests.get(f"{host.base_url}/api/detections", params={"caller": "alice"}, timeout=10).json()
    assert mgmt["id"] in [j["request_id"] for j in listed["jobs"]]
    assert requests.get(f"{host.base_url}/api/detections", params={"caller": "bob"}, timeout=10).json() == {
        "jobs": []}


def test_v4_routes_as_an_old_client(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    v4 = f"{host.base_url}/api/v4/camera-trap/detection-batch"
    assert requests.get(f"{v4}/default_model_version", timeout=10).json() == "test-rects"
    assert "test-rects" in requests.get(f"{v4}/supported_model_versions", timeout=10).json()
    body = {"input_container_sas": dataset.root.as_uri(), "caller": "bob", "image_path_prefix": "site1/",
            "model_version": "test-rects"}
    r = requests.post(f"{v4}/request_detections", json=body, timeout=30)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    deadline = time.monotonic() + 180
    while True:
        t = requests.get(f"{v4}/task/{rid}", timeout=10)
        assert t.status_code == 200, t.text
        task = t.json()
        assert set(task) == {"Status", "Endpoint", "TaskId", "Timestamp"} and task["TaskId"] == rid
        if task["Status"]["request_status"] != "running":
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert task["Status"]["request_status"] == "completed", task
    msg = task["Status"]["message"]
    assert msg["num_failed_shards"] == 0 and set(msg["output_file_urls"]) == {"detections", "failed_images",
                                                                             "images"}
    want = [f for f in dataset.files if f.startswith("site1/")]
    check_results(fetch(msg["output_file_urls"]["detections"]), dataset, want)
    missing = requests.get(f"{v4}/task/ffffffffffffffffffffffffffffffff", timeout=10)
    assert missing.status_code == 404 and "error" in missing.json()
    c = requests.post(f"{v4}/cancel_request", json={"request_id": rid, "caller": "alice"}, timeout=10)
    assert c.status_code == 404  # not alice's


def test_blob_upload_door(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    root = Path(host.env["AzureWebJobsStorage"]) / "detection-requests"
    root.mkdir(parents=True, exist_ok=True)
    req = {"input_container_sas": dataset.root.as_uri(), "caller": "alice", "first_n": 5}
    (root / "job1.json").write_text(json.dumps(req))
    status_file = root / "job1.json.status.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = json.loads(status_file.read_text()).get("state") if status_file.exists() else None
        if state in ("completed", "failed", "rejected"):
            break
        time.sleep(0.3)
    st = json.loads(status_file.read_text())
    assert st["state"] == "completed", st
    assert st["request_id"].startswith("req-") and st["images"] == 5
    doc = requests.get(f"{host.base_url}/api/detections/{st['request_id']}", params={"caller": "alice"},
                       timeout=10).json()
    check_results(fetch(doc["result"]["output_file_urls"]["detections"]), dataset, dataset.files[:5])
    # a bad request blob is answered in its status file, and starts nothing
    (root / "bad.json").write_text(json.dumps({"first_n": -1}))
    bad_status = root / "bad.json.status.json"
    deadline = time.monotonic() + 30
    while not bad_status.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    bad = json.loads(bad_status.read_text())
    assert bad["state"] == "rejected" and "first_n" in bad["error"]


GOOD_SAS = "sv=2023-11-03&sr=c&sp=rl&se=2099-01-01T00:00:00Z&sig=abc123"
ACCT = "https://acct.blob.core.windows.net/images"
BAD_REQUESTS: list[tuple[object, int, str]] = [
    ({}, 400, "input_container_sas"),
    ({"input_container_sas": 5}, 400, "input_container_sas"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "first_n": 0}, 400, "first_n"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "first_n": -3}, 400, "first_n"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "first_n": "ten"}, 400, "first_n"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "first_n": 1.5}, 400, "first_n"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "sample_n": 0}, 400, "sample_n"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "sample_n": 10, "first_n": 5}, 400, "sample_n"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "sample_n": 10**9}, 400, "sample_n"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "model_version": "MDV9Z"}, 400, "model_version"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "model_version": 5}, 400, "model_version"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "request_name": "has space"}, 400, "request_name"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "request_name": "x" * 93}, 400, "request_name"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "detection_threshold": 2}, 400, "detection_threshold"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "detection_threshold": "hi"}, 400, "detection_threshold"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "use_url": "yes"}, 400, "use_url"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "colour": "red"}, 400, "unknown field"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "image_path_prefix": "../x"}, 400, "image_path_prefix"),
    ({"use_url": True}, 400, "images_requested_json_sas"),
    ({"input_container_sas": f"{ACCT}?sv=1&sr=c&sp=rl&se=2099-01-01T00:00:00Z"}, 400, "sig"),
    ({"input_container_sas": f"{ACCT}?sv=2023-11-03&sr=c&sp=r&se=2099-01-01T00:00:00Z&sig=x"}, 400, "list"),
    ({"input_container_sas": f"{ACCT}?sv=2023-1-1&sr=c&sp=rl&se=2001-01-01T00:00:00Z&sig=x"}, 400, "expired"),
    ({"input_container_sas": f"{ACCT}?sv=2023-11-03&sr=c&sp=l&se=2099-01-01T00:00:00Z&sig=x"}, 400, "read"),
    ({"input_container_sas": f"http://acct.blob.core.windows.net/images?{GOOD_SAS}"}, 400, "https"),
    ({"input_container_sas": f"https://evil.example.com/images?{GOOD_SAS}"}, 400, "allowlist"),
    ({"input_container_sas": f"https://169.254.169.254/images?{GOOD_SAS}"}, 400, "not"),
    ({"input_container_sas": f"http://127.0.0.1:10000/devstoreaccount1/images?{GOOD_SAS}"}, 400, "loopback"),
    ({"input_container_sas": f"http://localhost/x/images?{GOOD_SAS}"}, 400, "not allowed"),
    ({"input_container_sas": f"ftp://acct.blob.core.windows.net/images?{GOOD_SAS}"}, 400, "scheme"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}",
      "images_requested_json_sas": "https://evil.example.com/c/list.json?sig=x"}, 400, "images_requested"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "caller": "mallory"}, 401, "allowlist"),
    ({"input_container_sas": f"{ACCT}?{GOOD_SAS}", "caller": 7}, 400, "caller"),
    ([1, 2, 3], 400, "object"),
    ("just a string", 400, "object"),
]


def _index_entries(host: EmbeddedHost) -> int:
    d = Path(host.env["MDBATCH_STATE_DIR"]) / "work" / "_index"
    return sum(1 for _ in d.rglob("*.json")) if d.exists() else 0


def test_bad_requests_are_refused_before_anything_starts(host: EmbeddedHost) -> None:
    assert len(BAD_REQUESTS) >= 30
    before = _index_entries(host)
    url = f"{host.base_url}/api/detections"
    for body, status, word in BAD_REQUESTS:
        r = requests.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"},
                          timeout=10)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert word.lower() in r.json()["error"].lower(), (body, r.text)
    raw_cases = [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b"", {"Content-Type": "application/json"}, 400),
        (json.dumps({"caller": "alice"}).encode(), {"Content-Type": "text/plain"}, 415),
        (b"input_container_sas=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (b"{" + b" " * (2 * 1024 * 1024) + b"}", {"Content-Type": "application/json"}, 400),
    ]
    for data, headers, status in raw_cases:
        r = requests.post(url, data=data, headers=headers, timeout=30)
        assert r.status_code == status, (data[:40], r.text)
        assert r.json()["error"]
    v4 = requests.post(f"{host.base_url}/api/v4/camera-trap/detection-batch/request_detections",
                       data=b"[]", headers={"Content-Type": "application/json"}, timeout=10)
    assert v4.status_code == 400 and "error" in v4.json()
    assert _index_entries(host) == before  # nothing was started

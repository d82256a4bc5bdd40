"""The v4 defects of issue 11, one test each, on the embedded host with keys enforced.

1. v4 clients send no key: the v4 routes answer allowlisted callers without one, refuse (JSON
   {"error"} naming MDBATCH_CALLERS) when no allowlist is configured, and take a function key instead.
2. v4's `country` and `organization_name` are accepted and kept (job metadata, results `info`).
3. v4's lenient types: use_url "false", first_n "5", model_version 5 / "", request_name "".
4. v4's file names (also end to end in test_v4_client.py).
5. Links are signed when read: tests/test_links_fresh.py (8 days later, local and Azurite).
6. Hyphenated task ids, `Timestamp` = last update, cancelling a finished job is a 400.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from batch.outputs import output_names, submission_stamp
from embedded import EmbeddedHost
from scoring.demo_model import build_rect_model
from tests.service_fixtures import (  # noqa: F401
    APP_DIR,
    INPUT_SIZE,
    MODEL,
    Dataset,
    check_results,
    dataset,
    service_env,
)
from tests.test_service_e2e import fetch

V4 = "api/v4/camera-trap/detection-batch"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rect test model, also installed under the name "5" (a v4 client may send 5, a number)."""
    d = tmp_path_factory.mktemp("v4-models")
    build_rect_model(d / f"{MODEL}.onnx", input_size=INPUT_SIZE, name=MODEL)
    build_rect_model(d / "5.onnx", input_size=INPUT_SIZE, name="5")
    return d


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[EmbeddedHost]:
    state = tmp_path_factory.mktemp("v4-state")
    env = service_env(state, models, MDBATCH_FUNCTION_KEYS_FILE=str(state / "host" / "keys.json"),
                      MDBATCH_SCORING_DELAY_MS="250")  # a job lasts a few seconds: created != updated
    with EmbeddedHost(APP_DIR, state / "host", workers=4, env=env, require_keys=True) as h:
        yield h


def url(host: EmbeddedHost, route: str) -> str:
    return f"{host.base_url}/{V4}/{route}"


def wait_task(host: EmbeddedHost, rid: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(url(host, f"task/{rid}"), timeout=10)
        assert r.status_code == 200, r.text
        task = r.json()
        if task["Status"]["request_status"] not in ("running",):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.3)


def durable(host: EmbeddedHost, rid: str) -> dict[str, Any]:
    r = requests.get(f"{host.base_url}/runtime/webhooks/durabletask/instances/{rid}",
                     params={"code": host.master_key, "showInput": "true"}, timeout=10)
    assert r.status_code in (200, 202), r.text  # 202 while it runs
    return r.json()


# --- 1: authentication as v4 did it -------------------------------------------------------------

def test_1_v4_routes_take_the_allowlist_or_a_function_key(host: EmbeddedHost, dataset: Dataset,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"input_container_sas": dataset.root.as_uri(), "caller": "alice", "first_n": 2}
    # no key at all, an allowlisted caller: v4's way
    r = requests.post(url(host, "request_detections"), json=body, timeout=30)
    assert r.status_code == 200 and r.json()["request_id"], r.text
    assert requests.get(url(host, "default_model_version"), timeout=10).json() == MODEL
    # not on the allowlist, or no caller: 401, JSON
    for claimed in ({"caller": "mallory"}, {}):
        r = requests.post(url(host, "request_detections"), json={**body, "caller": None, **claimed},
                          timeout=30)
        assert r.status_code == 401 and "allowlist" in r.json()["error"], r.text
    # a wrong key is refused, with JSON
    r = requests.get(url(host, "default_model_version"), headers={"x-functions-key": "nope"}, timeout=10)
    assert r.status_code == 401 and "function key" in r.json()["error"], r.text
    # the new API stays key-protected by the host; the host's own 401 and 404 are {"error"} JSON too
    r = requests.get(f"{host.base_url}/api/detections", timeout=10)
    assert r.status_code == 401 and r.json()["error"], r.text
    r = requests.get(f"{host.base_url}/api/no-such-route", timeout=10)
    assert r.status_code == 404 and "no-such-route" in r.json()["error"], r.text
    # no allowlist configured: every v4 route refuses and names the setting ...
    monkeypatch.setenv("MDBATCH_CALLERS", "")
    for method, route, payload in (("POST", "request_detections", body), ("GET", "task/0123", None),
                                   ("POST", "cancel_request", {"request_id": "x", "caller": "alice"}),
                                   ("GET", "supported_model_versions", None),
                                   ("GET", "default_model_version", None)):
        r = requests.request(method, url(host, route), json=payload, timeout=10)
        assert r.status_code == 401 and "MDBATCH_CALLERS" in r.json()["error"], (route, r.text)
    # ... unless the caller sends a function key (header or ?code=)
    assert host.function_key
    r = requests.get(url(host, "supported_model_versions"), params={"code": host.function_key}, timeout=10)
    assert r.status_code == 200 and MODEL in r.json(), r.text
    r = requests.post(url(host, "request_detections"), json=body,
                      headers={"x-functions-key": host.function_key}, timeout=30)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    assert durable(host, rid)["input"]["caller"] == "alice"
    monkeypatch.undo()  # the allowlist is back
    assert wait_task(host, rid)["Status"]["request_status"] == "completed"


# --- 2 and 3: v4's fields and types --------------------------------------------------------------

def test_2_3_v4_fields_and_lenient_types(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    body = {"input_container_sas": dataset.root.as_uri(), "caller": "bob", "use_url": "false",
            "first_n": "5", "model_version": 5, "request_name": "", "country": "BWA",
            "organization_name": "Name of Organization"}
    strict = requests.post(f"{host.base_url}/api/detections", json=body,
                           headers={"x-functions-key": host.function_key}, timeout=30)
    assert strict.status_code == 400, strict.text  # the new API stays strict
    problems = strict.json()["error"]
    # (`country` is a field of the new API too since issue 12: the classifier's geofence)
    for field in ("organization_name", "use_url", "first_n", "model_version", "request_name"):
        assert field in problems, (field, problems)
    r = requests.post(url(host, "request_detections"), json=body, timeout=30)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    task = wait_task(host, rid)
    assert task["Status"]["request_status"] == "completed", task
    inp = durable(host, rid)["input"]
    assert inp["model"] == "5" and inp["first_n"] == 5 and inp["use_url"] is False
    assert inp["request_name"] is None
    assert inp["metadata"] == {"country": "BWA", "organization_name": "Name of Organization"}
    links = task["Status"]["message"]["output_file_urls"]
    det = fetch(links["detections"])
    assert [e["file"] for e in det["images"]] == dataset.files[:5]
    assert det["info"]["country"] == "BWA" and det["info"]["organization_name"] == "Name of Organization"
    # model_version "" is the default model; use_url "true" means true (and then needs a list)
    r = requests.post(url(host, "request_detections"), timeout=30,
                      json={**body, "model_version": "", "first_n": 1, "country": None})
    assert r.status_code == 200, r.text
    assert durable(host, r.json()["request_id"])["input"]["model"] == MODEL
    r = requests.post(url(host, "request_detections"), json={**body, "use_url": "true"}, timeout=30)
    assert r.status_code == 400 and "use_url" in r.json()["error"], r.text
    r = requests.post(url(host, "request_detections"), json={**body, "country": ["x"]}, timeout=30)
    assert r.status_code == 400 and "country" in r.json()["error"], r.text
    r = requests.post(url(host, "request_detections"), data=b"{}", timeout=30,
                      headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"], r.text


# --- 4: file names ----------------------------------------------------------------------------------

def test_4_v4_file_names() -> None:
    rid = "0123456789abcdef0123456789abcdef"
    names = output_names(rid, "site1_chunk000", "2026-12-03T11:42:50.5+00:00")
    assert names == {"detections": f"{rid}/{rid}_detections_site1_chunk000_20261203114250.json",
                     "failed_images": f"{rid}/{rid}_failed_images_site1_chunk000_20261203114250.json",
                     "images": f"{rid}/{rid}_images.json"}
    assert output_names(rid, None, "2026-12-03T11:42:50+00:00")["detections"].endswith(
        f"{rid}_detections__20261203114250.json")  # v4 with no request_name: an empty part
    assert submission_stamp("2026-12-03T12:42:50+01:00") == "20261203114250"  # UTC


# --- 6: ids, Timestamp, cancel ------------------------------------------------------------------------

def test_6_hyphenated_ids_timestamp_and_cancel_answers(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    r = requests.post(url(host, "request_detections"), timeout=30,
                      json={"input_container_sas": dataset.root.as_uri(), "caller": "alice", "first_n": 6})
    rid = r.json()["request_id"]
    hyphenated = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
    task = wait_task(host, hyphenated)
    assert task["TaskId"] == rid and task["Status"]["request_status"] == "completed", task
    d = durable(host, rid)
    updated, created = d["lastUpdatedTime"], d["createdTime"]
    assert task["Timestamp"] == updated[:19].replace("T", " ") == task["Status"]["time"]
    assert task["Timestamp"] != created[:19].replace("T", " "), (created, updated)  # not the creation time
    # cancelling a finished job: 400, as v4 (the hyphenated id names it too)
    r = requests.post(url(host, "cancel_request"), json={"request_id": hyphenated, "caller": "alice"},
                      timeout=10)
    assert r.status_code == 400 and "completed" in r.json()["error"], r.text
    # unknown tasks and missing fields: JSON errors
    r = requests.get(url(host, "task/ffffffff-ffff-ffff-ffff-ffffffffffff"), timeout=10)
    assert r.status_code == 404 and r.json()["error"], r.text
    r = requests.post(url(host, "cancel_request"), json={"caller": "alice"}, timeout=10)
    assert r.status_code == 400 and "request_id" in r.json()["error"], r.text
    r = requests.post(url(host, "cancel_request"), json={"request_id": rid, "caller": "bob"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"], r.text
    # the service's own 404s are JSON too
    r = requests.get(f"{host.base_url}/api/detections/{rid}", params={"caller": "bob"},
                     headers={"x-functions-key": host.function_key}, timeout=10)
    assert r.status_code == 404 and r.json()["error"], r.text
    r = requests.get(f"{host.base_url}/api/detections/{rid}/files/x.json", timeout=10)
    assert r.status_code == 401 and r.json()["error"], r.text
    json.dumps(task)

"""Issue 14, item 6: a bad image list is refused at the door (400 naming the problem) before
anything starts, instead of 202 and a job that fails a moment later. Only the list's head is read
there; entries beyond it are left to `plan`, as before."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from azure.storage.blob import BlobServiceClient, generate_blob_sas

from embedded import EmbeddedHost
from tests.service_fixtures import (  # noqa: F401
    APP_DIR,
    Dataset,
    dataset,
    model_dir,
    service_env,
)
from tests.test_service_e2e import follow
from triggers.list_door import HEAD_BYTES, head_problem


def test_head_problem_names_the_fault() -> None:
    ok = [b'["a.jpg", ["b.jpg", {"k": 1}]]', b"[]", b' \n["a.jpg"]\n']
    for data in ok:
        assert head_problem(data, complete=True) is None, data
    bad = {b"": "not valid JSON", b"not json": "not valid JSON", b'{"images": []}': "is a JSON object",
           b'"a.jpg"': "is a JSON string", b"[1, 2]": "entry 0 is neither", b'["a.jpg", null]': "entry 1",
           b'[["a.jpg"]]': "entry 0", b'[["a.jpg", {}, 3]]': "entry 0", b'[[1, {}]]': "entry 0",
           b"\xff\xfe[]": "not UTF-8"}
    for data, words in bad.items():
        problem = head_problem(data, complete=True)
        assert problem and problem.startswith("images_requested_json_sas: "), (data, problem)
        assert words in problem, (data, problem)
    # only the head of a long list: its entries are checked, a cut entry at the end is not an error
    head = b'[' + b'"site/img%04d.jpg", ' * 50 + b'"site/cut-in-the-mid'
    assert head_problem(head, complete=False) is None
    assert "entry 2" in (head_problem(b'["a.jpg", "b.jpg", 7, "c.jpg", "d', complete=False) or "")
    assert "JSON object" in (head_problem(b'  {"a": [1, 2, ', complete=False) or "")
    assert "not a JSON array" in (head_problem(b"a.jpg\nb.jpg\n", complete=False) or "")
    assert "not valid JSON" in (head_problem(b'["a.jpg" "b.jpg", "c', complete=False) or "")


# --- through the door of the real app -------------------------------------------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[EmbeddedHost]:  # noqa: F811
    state = tmp_path_factory.mktemp("lists-state")
    env = service_env(state, model_dir, MDBATCH_ALLOW_AZURITE="true", MDBATCH_ACTIVITY_ATTEMPTS="1")
    with EmbeddedHost(APP_DIR, state / "host", workers=4, env=env) as h:
        yield h


def _post(host: EmbeddedHost, data: Dataset, list_url: str, caller: str = "bob") -> requests.Response:
    body = {"input_container_sas": data.root.as_uri(), "images_requested_json_sas": list_url,
            "caller": caller}
    return requests.post(f"{host.base_url}/api/detections", json=body, timeout=30)


def _nothing_started(host: EmbeddedHost) -> None:
    jobs = requests.get(f"{host.base_url}/api/detections", params={"caller": "bob"}, timeout=10).json()
    assert jobs == {"jobs": []}, jobs
    secrets = Path(host.env["MDBATCH_STATE_DIR"]) / "secrets.json"
    parked = [n for n in (json.loads(secrets.read_text()) if secrets.exists() else {}) if n.endswith("-list")]
    assert parked == [], parked


def test_bad_local_lists_answer_400_before_anything_starts(host: EmbeddedHost, dataset: Dataset,  # noqa: F811
                                                         tmp_path: Path) -> None:
    files = {"not-json.json": "site0/a.png\nsite1/b.png\n", "object.json": '{"images": ["a.png"]}',
             "numbers.json": "[1, 2, 3]", "nulls.json": '["site0/a.png", null]',
             "triple.json": '[["a.png", {}, "extra"]]', "empty.json": ""}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "folder.json").mkdir()
    cases = {
        "missing.json": "the image list does not exist",
        "folder.json": "the image list does not exist",
        "not-json.json": "is not valid JSON",
        "object.json": "is a JSON object, not a JSON array",
        "numbers.json": "image list entry 0 is neither a path nor a [path, metadata] pair",
        "nulls.json": "image list entry 1 is neither",
        "triple.json": "image list entry 0 is neither",
        "empty.json": "is not valid JSON",
    }
    for name, words in cases.items():
        r = _post(host, dataset, (tmp_path / name).as_uri())
        assert r.status_code == 400, (name, r.status_code, r.text)
        error = r.json()["error"]
        assert error.startswith("invalid request: images_requested_json_sas: "), (name, error)
        assert words in error, (name, error)
    _nothing_started(host)




def test_long_list_head_checked_at_the_door_rest_in_plan(host: EmbeddedHost, dataset: Dataset,  # noqa: F811
                                                        tmp_path: Path) -> None:
    padding = [f"site9/none-{i:06d}.png" for i in range(HEAD_BYTES // 20)]
    bad_head = tmp_path / "bad-head.json"
    bad_head.write_text(json.dumps([dataset.files[0], 42, *padding]))
    r = _post(host, dataset, bad_head.as_uri())
    assert r.status_code == 400 and "image list entry 1 is neither" in r.text, r.text
    bad_tail = tmp_path / "bad-tail.json"
    bad_tail.write_text(json.dumps([dataset.files[0], *padding, 42]))
    assert bad_tail.stat().st_size > HEAD_BYTES
    r = _post(host, dataset, bad_tail.as_uri(), caller="alice")
    assert r.status_code == 202, r.text  # beyond the head: plan finds it, as before
    doc = follow(r.json()["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Failed" and "is neither a path" in json.dumps(doc["customStatus"]), doc
    good = tmp_path / "good.json"
    good.write_text(json.dumps([dataset.files[0], [dataset.files[1], {"k": 1}]]))
    r = _post(host, dataset, good.as_uri(), caller="alice")
    assert r.status_code == 202, r.text
    doc = follow(r.json()["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Completed" and doc["output"]["images"] == 2, doc


def test_blob_lists_checked_with_one_ranged_read(host: EmbeddedHost, dataset: Dataset, azurite) -> None:  # noqa: F811
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = f"lists{int(time.time() * 1000)}"
    container = service.create_container(name)
    container.upload_blob("object.json", b'{"images": ["a.png"]}')
    container.upload_blob("numbers.json", b"[1, 2]")
    container.upload_blob("good.json", json.dumps([dataset.files[0]]).encode())

    def sas_url(blob: str, key: str = azurite.account_key) -> str:
        token = generate_blob_sas(azurite.account_name, name, blob, account_key=key, permission="r",
                                  expiry=datetime.now(UTC) + timedelta(hours=1))
        return f"{azurite.blob_endpoint}/{name}/{blob}?{token}"

    wrong_key = "A" * 86 + "=="
    cases = {
        sas_url("missing.json"): "the image list does not exist",
        sas_url("object.json"): "is a JSON object",
        sas_url("numbers.json"): "image list entry 0 is neither",
        sas_url("good.json", key=wrong_key): "storage refused to read the image list",
    }
    for url, words in cases.items():
        r = _post(host, dataset, url)
        assert r.status_code == 400, (url.split("?")[0], r.status_code, r.text)
        assert words in r.json()["error"], r.text
        assert "sig=" not in r.text  # the caller's SAS is never echoed
    _nothing_started(host)
    r = _post(host, dataset, sas_url("good.json"), caller="alice")
    assert r.status_code == 202, r.text
    doc = follow(r.json()["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Completed" and doc["output"]["images"] == 1, doc
    service.delete_container(name)

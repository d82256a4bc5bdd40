"""Defects found in review of the service (triggers, orchestrations, activities, batch), each pinned
by a test that failed before its fix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from activities import services as sv
from activities import steps
from batch.signing import sign_spec
from tests.service_fixtures import Dataset, dataset, model_dir, service_env  # noqa: F401
from triggers import blobdoor
from triggers.service import ServiceError, options, validate


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path, **extra: str) -> None:  # noqa: F811
    for k, v in service_env(tmp_path / "state", model_dir, **extra).items():
        monkeypatch.setenv(k, v)


def test_use_url_list_with_sas_urls_is_not_filtered_away(tmp_path: Path, model_dir: Path,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """use_url entries are full URLs, often each with its own SAS: the extension filter must look at
    the URL's path, not at the end of its query string (before: every such entry was dropped and
    the job 'completed' with zero images)."""
    _env(monkeypatch, tmp_path, model_dir)
    svc = sv.get()
    urls = [f"https://acct.blob.core.windows.net/imgs/site/{n}?sv=2024-01-01&sr=b&sp=r&sig=abc{n[0]}"
            for n in ("b.jpg", "a.JPG", "c.png")]
    urls.append("https://acct.blob.core.windows.net/imgs/site/readme.txt?sv=1&sr=b&sp=r&sig=zz")
    listing = tmp_path / "lists" / "urls.json"
    listing.parent.mkdir()
    listing.write_text(json.dumps([urls[0], [urls[1], {"k": 1}], urls[2], urls[3]]))
    rid = "0123456789abcdef0123456789abcdea"
    job = {"request_id": rid, "source": None, "image_list": {"url": listing.as_uri(), "secret_ref": None},
           "use_url": True, "image_path_prefix": None, "first_n": None, "sample_n": None,
           "model": "test-rects", "threshold": 0.005, "options": options(svc.settings)}
    job = sign_spec(svc.service_key(), job)  # as a door signs it (issue 14)
    plan = steps.plan(svc, job)
    assert plan["images"] == 3, plan
    manifest = json.loads(svc.work.read_bytes(sv.manifest_name(rid, 0)))
    assert manifest["source"] is None
    assert manifest["images"] == sorted(urls[:3])
    assert manifest["meta"] == {urls[1]: {"k": 1}}


def test_validate_names_location_and_model_problems_with_field_problems(
        tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Issue 5: one 400 naming *each* problem. Before, a field error (first_n: 0) hid the bad URLs
    and the unknown model."""
    _env(monkeypatch, tmp_path, model_dir)
    body = json.dumps({"input_container_sas": "https://169.254.169.254/c?sv=1&sr=c&sp=rl&sig=SECRETSIG",
                       "images_requested_json_sas": "http://acct.blob.core.windows.net/c/l.json",
                       "first_n": 0, "model_version": "nope"}).encode()
    with pytest.raises(ServiceError) as e:
        validate(body, sv.settings())
    msg = e.value.message
    assert e.value.status == 400
    for part in ("first_n", "input_container_sas", "images_requested_json_sas", "'nope'"):
        assert part in msg, msg
    assert "SECRETSIG" not in msg


class _InstantClient:
    """Stands in for the durable client: the orchestration 'finishes' inside start_new, writing its
    final status file before the door's next line runs (a zero-image job on a fast host)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def get_status(self, rid: str, **_: Any) -> Any:
        return SimpleNamespace(runtime_status="Completed" if rid in self.started else None)

    async def get_status_by(self, runtime_status: Any = None) -> list[Any]:
        return []

    async def start_new(self, name: str, rid: str, job: dict[str, Any]) -> str:
        self.started.append(rid)
        blobdoor.write_status(job["status_blob"], {"request_id": rid, "state": "completed"})
        return rid


def test_blob_door_never_overwrites_a_final_status(
        tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Neither with "running" (written after a quick job finished) nor with "rejected" (the same
    blob delivered again once its input is gone or its SAS expired)."""
    _env(monkeypatch, tmp_path, model_dir)
    s = sv.settings()
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"x")
    body = json.dumps({"input_container_sas": images.as_uri(), "caller": "alice"}).encode()
    client = _InstantClient()
    blob = func.blob.InputStream(data=body, name=f"{s.requests_container}/job.json",
                                 blob_properties={"ETag": "0x8D1"})
    door = blobdoor.request_upload._function._func.__wrapped__
    asyncio.run(door(blob, client))
    assert len(client.started) == 1
    status = json.loads((tmp_path / "state" / "blob-root" / s.requests_container / "job.json.status.json")
                        .read_text())
    assert status["state"] == "completed", status
    assert status["request_id"] == client.started[0]
    (images / "a.jpg").unlink()
    images.rmdir()  # the request is no longer valid: a redelivery must still leave the outcome be
    asyncio.run(door(func.blob.InputStream(data=body, name=f"{s.requests_container}/job.json",
                                           blob_properties={"ETag": "0x8D1"}), client))
    again = json.loads((tmp_path / "state" / "blob-root" / s.requests_container / "job.json.status.json")
                       .read_text())
    assert again == status and len(client.started) == 1


def test_blob_door_checks_the_claimed_caller_against_the_allowlist(
        tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Issue 5: without authentication headers the `caller` field is checked against the allowlist.
    Before, a request blob could start a job as any caller it named."""
    _env(monkeypatch, tmp_path, model_dir)
    s = sv.settings()
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"x")
    door = blobdoor.request_upload._function._func.__wrapped__
    client = _InstantClient()
    body = json.dumps({"input_container_sas": images.as_uri(), "caller": "mallory"}).encode()
    asyncio.run(door(func.blob.InputStream(data=body, name=f"{s.requests_container}/m.json",
                                           blob_properties={"ETag": "0x1"}), client))
    status = json.loads((tmp_path / "state" / "blob-root" / s.requests_container / "m.json.status.json")
                        .read_text())
    assert client.started == [] and status["state"] == "rejected" and "allowlist" in status["error"]
    ok = json.dumps({"input_container_sas": images.as_uri(), "caller": "bob"}).encode()
    asyncio.run(door(func.blob.InputStream(data=ok, name=f"{s.requests_container}/b.json",
                                           blob_properties={"ETag": "0x2"}), client))
    assert len(client.started) == 1

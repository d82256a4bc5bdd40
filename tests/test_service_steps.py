"""The activities end to end without a host: real local folders, real local compute running the
real scorer with the rect test model, driven in the order the orchestrator uses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from activities import services as sv
from activities import steps
from batch.signing import sign_spec
from tests.service_fixtures import Dataset, check_results, dataset, model_dir, service_env  # noqa: F401
from triggers.service import ServiceError, options, validate


def _wait(svc: sv.Services, rid: str, shard: int, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = steps.poll(svc, {"request_id": rid, "shard": shard, "job_id": job_id})
        if not st["active"]:
            return st
        time.sleep(0.2)
    raise AssertionError(f"shard {shard} did not finish")


def test_steps_plan_score_aggregate_publish(tmp_path: Path, dataset: Dataset, model_dir: Path,  # noqa: F811
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in service_env(tmp_path / "state", model_dir).items():
        monkeypatch.setenv(k, v)
    svc = sv.get()
    s = svc.settings
    req = validate(json.dumps({"input_container_sas": dataset.root.as_uri(), "caller": "alice"}).encode(), s)
    rid = "0123456789abcdef0123456789abcdef"
    job = {"request_id": rid, "source": {"url": req.input_container_sas, "secret_ref": None},
           "image_list": None, "use_url": False, "image_path_prefix": None, "first_n": None,
           "sample_n": None, "model": "test-rects", "threshold": 0.005, "options": options(s)}
    job = sign_spec(svc.service_key(), job)  # as a door signs it (issue 14)
    plan = steps.plan(svc, job)
    assert plan["images"] == len(dataset.files) and plan["shards"] == -(-plan["images"] // 4)
    assert steps.plan(svc, job) == plan  # idempotent
    failed: dict[str, list[int]] = {}
    for shard in range(plan["shards"]):
        arg = {"request_id": rid, "shard": shard, "attempt": 1, "model": "test-rects", "threshold": 0.005}
        sub = steps.submit(svc, arg)
        assert steps.submit(svc, arg) == sub  # idempotent: same job
        st = _wait(svc, rid, shard, sub["job_id"])
        if st["state"] != "SUCCEEDED":
            failed.setdefault(str(st["reason"]), []).append(shard)
    assert not failed, failed
    counts = steps.aggregate(svc, {"request_id": rid, "shards": plan["shards"], "failed": failed})
    assert counts["images"] == len(dataset.files) and counts["failed_images"] == 1
    names = steps.publish(svc, {"request_id": rid})  # names in the output store, not links (issue 11)
    doc = json.loads(svc.output.read_bytes(names["detections"]))
    check_results(doc, dataset)
    failed_list = json.loads(svc.output.read_bytes(names["failed_images"]))
    assert failed_list == list(dataset.bad)
    # A cancel after the fact cancels nothing running and leaves a marker that stops new submits.
    steps.cancel_request(svc, rid)
    assert steps.submit(svc, {"request_id": rid, "shard": 0, "attempt": 2, "model": "test-rects",
                              "threshold": 0.005}) == {"canceled": True}


def test_validate_refuses_local_folder_when_not_allowed(tmp_path: Path, model_dir: Path,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in service_env(tmp_path / "state", model_dir, MDBATCH_ALLOW_LOCAL_STORAGE="false").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ServiceError) as e:
        validate(json.dumps({"input_container_sas": tmp_path.as_uri(), "model_version": "nope"}).encode(),
                 sv.settings())
    assert e.value.status == 400 and "input_container_sas" in e.value.message and "nope" in e.value.message

"""Review defect on the embedded host: a shard whose job status and cancel both fail must still
use all its attempts and end as failure entries (before: the failing `cancel_shard` escaped the
shard orchestrator, which then skipped its remaining attempts)."""

from __future__ import annotations

import requests

from activities import services as sv
from adapters.backends import compute_from_settings
from adapters.compute.base import JobStatus, ShardJob
from embedded import EmbeddedHost
from tests.service_fixtures import Dataset, dataset, model_dir  # noqa: F401
from tests.test_service_e2e import follow, result
from tests.test_service_failures import host  # noqa: F401


class StatusDown:
    """The real local backend, except that shard 0's jobs can be neither read nor cancelled."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.submits: list[tuple[int, int]] = []

    def submit(self, job: ShardJob) -> str:
        self.submits.append((job.shard, job.attempt))
        return f"unreachable-{job.name}" if job.shard == 0 else self.real.submit(job)

    def status(self, job_id: str) -> JobStatus:
        if job_id.startswith("unreachable-"):
            raise RuntimeError("compute service unavailable")
        return self.real.status(job_id)

    def cancel(self, job_id: str) -> None:
        if job_id.startswith("unreachable-"):
            raise RuntimeError("compute service unavailable")
        self.real.cancel(job_id)


def test_shard_with_unreadable_job_uses_every_attempt(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    down = StatusDown(compute_from_settings(sv.settings()))
    sv.override(compute=down)
    r = requests.post(f"{host.base_url}/api/detections", timeout=30,
                      json={"input_container_sas": dataset.root.as_uri(), "caller": "alice"})
    assert r.status_code == 202, r.text
    doc = follow(r.json()["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Completed", doc
    out = doc["output"]
    assert out["failed_shards"] == 1 and out["images"] == len(dataset.files)
    assert [a for s, a in down.submits if s == 0] == [1, 2, 3]
    det = result(host.base_url, doc)
    by = {e["file"]: e for e in det["images"]}
    for f in dataset.files[:4]:
        assert by[f]["failure"].startswith("shard failed: failed: status unavailable"), by[f]
        assert by[f]["failure"].endswith("(after 3 attempts)") and by[f].get("detections") is None

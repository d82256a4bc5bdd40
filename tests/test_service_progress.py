"""Live progress: the `progress` activity reads the shards' progress files, and on the embedded
host (local compute, the real scorer) the durable customStatus, the curated status and the v4 task
status show images scored while shards are still running, never going backwards."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from activities import services as sv
from activities import steps
from adapters.backends import compute_from_settings
from adapters.compute.base import JobState, JobStatus, ShardJob
from batch.status import progress_delay
from embedded import EmbeddedHost
from tests.service_fixtures import APP_DIR, Dataset, check_results, dataset, model_dir, service_env  # noqa: F401
from tests.test_service_e2e import result

RID = "0123456789abcdef0123456789abcdef"


def test_progress_activity_reads_results_and_progress_files(tmp_path: Path, model_dir: Path,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in service_env(tmp_path / "state", model_dir).items():
        monkeypatch.setenv(k, v)
    svc = sv.get()
    arg = {"request_id": RID, "ranges": [[0, 2], [2, 4], [4, 5]]}
    assert steps.progress(svc, arg) == {"scored": [0, 0, 0]}  # not planned yet: nothing, no error
    svc.work.write_json(sv.plan_name(RID), {"images": 18, "shards": 5, "shard_size": 4})
    svc.work.write_json(sv.result_name(RID, 0), {"images": []})  # finished: the shard's size counts
    svc.work.write_json(sv.progress_name(RID, 0), {"done": 1, "total": 4, "failed": 0})  # stale
    svc.work.write_json(sv.progress_name(RID, 1), {"done": 3, "total": 4, "failed": 1})
    svc.work.write_json(sv.progress_name(RID, 2), {"done": 99, "total": 4, "failed": 0})  # clipped
    svc.work.write_bytes(sv.progress_name(RID, 3), b"{half a file")  # unreadable: counts 0
    svc.work.write_json(sv.result_name(RID, 4), {"images": []})  # last shard: 18 - 16 = 2 images
    out = steps.progress(svc, arg)
    assert out == {"scored": [4 + 3, 4 + 0, 2]}
    assert steps.progress(svc, arg) == out  # read-only: idempotent
    assert len(json.dumps(out)) < 100  # small output
    assert steps.progress(svc, {"request_id": RID, "ranges": []}) == {"scored": []}


def test_tick_delay_grows_so_long_jobs_tick_logarithmically() -> None:
    assert progress_delay(0, 100) == 0  # disabled
    assert progress_delay(30, 0) == 30 and progress_delay(30, 240) == 30
    assert progress_delay(30, 3600) == 450

    def ticks(base: float, seconds: float) -> int:
        t, n = 0.0, 0
        while t + progress_delay(base, t) <= seconds:
            t, n = t + progress_delay(base, t), n + 1
        return n

    # a 4M-image job of ~4 h ticks a few dozen times (~8 history events each), a day not much more
    assert ticks(30, 4 * 3600) < 50 and ticks(30, 24 * 3600) < 60
    assert ticks(1, 10) >= 8  # the CLI's 1 s base: every second at first


class GatedCompute:
    """Test double around the real local backend: until `gate` opens, the last shard is not
    submitted and every real job reports RUNNING even after the real scorer finished (its result
    and progress files exist), so no shard group can complete: any images_scored above 0 seen
    before the gate opens comes from the live-progress path."""

    def __init__(self, real: Any, hold_shard: int) -> None:
        self.real, self.hold_shard = real, hold_shard
        self.gate = threading.Event()
        self.held: dict[str, ShardJob] = {}

    def submit(self, job: ShardJob) -> str:
        if job.shard == self.hold_shard and not self.gate.is_set():
            self.held[f"held-{job.name}"] = job
            return f"held-{job.name}"
        return str(self.real.submit(job))

    def status(self, job_id: str) -> JobStatus:
        if job_id in self.held:
            if not self.gate.is_set():
                return JobStatus(JobState.QUEUED)
            return self.real.status(self.real.submit(self.held[job_id]))  # idempotent per job name
        st = self.real.status(job_id)
        if st.state is JobState.SUCCEEDED and not self.gate.is_set():
            return JobStatus(JobState.RUNNING)
        return st

    def cancel(self, job_id: str) -> None:
        if job_id in self.held:
            if not self.gate.is_set():
                return
            job_id = self.real.submit(self.held[job_id])
        self.real.cancel(job_id)


@pytest.fixture()
def host(tmp_path: Path, model_dir: Path, dataset: Dataset) -> Iterator[EmbeddedHost]:  # noqa: F811
    half = -(-len(dataset.files) // 2)  # two shards: one runs, one is held back
    env = service_env(tmp_path, model_dir, MDBATCH_SHARD_SIZE=str(half), MDBATCH_PROGRESS_INTERVAL_S="0.2",
                      MDBATCH_SCORING_DELAY_MS="300")  # a slowed real scorer
    with EmbeddedHost(APP_DIR, tmp_path / "host", workers=4, env=env, fidelity_guard=True) as h:
        yield h
        assert h.engine.guard_errors == [], h.engine.guard_errors
    sv.override(compute=None)


def test_custom_status_shows_live_progress(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    gated = GatedCompute(compute_from_settings(sv.settings()), hold_shard=1)
    sv.override(compute=gated)
    r = requests.post(f"{host.base_url}/api/detections",
                      json={"input_container_sas": dataset.root.as_uri(), "caller": "alice"}, timeout=30)
    assert r.status_code == 202, r.text
    mgmt = r.json()
    rid, total = mgmt["id"], len(dataset.files)
    seen: list[int] = []

    def poll() -> dict:
        doc = requests.get(mgmt["statusQueryGetUri"], timeout=10).json()
        cs = doc.get("customStatus") or {}
        if "images_scored" in cs:
            seen.append(int(cs["images_scored"]))
        return doc

    try:
        deadline = time.monotonic() + 120
        while True:  # shard 0 runs for real; shard 1 is held, and no group can finish
            doc = poll()
            assert doc["runtimeStatus"] in ("Pending", "Running"), doc
            cs = doc.get("customStatus") or {}
            if cs.get("images_scored", 0) > 0:
                break
            assert time.monotonic() < deadline, f"no live progress: {doc}"
            time.sleep(0.05)
        assert cs["stage"] == "scoring" and cs["images_total"] == total, cs
        assert 0 < cs["images_scored"] < total and cs["shards_done"] == 0, cs
        # the curated status and the v4 task status show the same live count
        cur = requests.get(f"{host.base_url}/api/detections/{rid}", params={"caller": "alice"},
                           timeout=10).json()
        assert cur["state"] == "running" and cur["shards_done"] == 0, cur
        assert 0 < cs["images_scored"] <= cur["images_scored"] < total, (cs, cur)
        v4 = f"{host.base_url}/api/v4/camera-trap/detection-batch"
        task = requests.get(f"{v4}/task/{rid}", timeout=10).json()
        assert task["Status"]["request_status"] == "running", task
        assert f"of {total} images scored" in task["Status"]["message"], task
        scored_in_v4 = int(task["Status"]["message"].split(" of ")[-2].rsplit(" ", 1)[-1])
        assert 0 < scored_in_v4 < total, task
    finally:
        gated.gate.set()
    deadline = time.monotonic() + 180
    while (doc := poll())["runtimeStatus"] not in ("Completed", "Failed", "Terminated"):
        assert time.monotonic() < deadline, f"not finished: {doc}"
        time.sleep(0.1)
    assert doc["runtimeStatus"] == "Completed", doc
    assert doc["customStatus"]["images_scored"] == total == doc["output"]["images"]
    assert seen == sorted(seen), seen  # monotone non-decreasing over the polls
    assert any(0 < n < total for n in seen) and seen[-1] == total, seen
    check_results(result(host.base_url, doc), dataset)


def test_job_polls_stay_few_when_a_job_waits_for_hours() -> None:
    from batch.status import next_poll_delay

    def polls(hours: float) -> int:
        t, delay, n = 0.0, 15.0, 0
        while t < hours * 3600:
            t += delay
            n += 1
            delay = next_poll_delay(delay, 2.0, 120.0, t)
        return n

    assert next_poll_delay(15.0, 2.0, 120.0, 15.0) == 30.0  # normal back-off first
    assert next_poll_delay(120.0, 2.0, 120.0, 600.0) == 120.0  # a 10-minute shard: still the cap
    assert polls(12) <= 90  # the fixed cap alone would poll about 360 times
    assert polls(0.5) >= 15  # short jobs keep their responsiveness

"""Failure paths on the embedded host: retried jobs, a shard that always fails, cancel, a host
killed mid-run, and no SAS left anywhere after a job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from activities import services as sv
from adapters.backends import compute_from_settings
from adapters.compute.base import JobState, JobStatus, ShardJob
from embedded import EmbeddedHost
from tests.service_fixtures import APP_DIR, Dataset, check_results, dataset, model_dir, service_env  # noqa: F401
from tests.test_service_e2e import follow, result


class FlakyCompute:
    """Test double around the real local backend: fails or pre-empts chosen first attempts (after the
    real job started, so the resubmission resumes from a real checkpoint) and always fails one shard."""

    def __init__(self, real: object, *, fail_first: set[int], preempt_first: set[int], always: set[int]):
        self.real, self.fail_first, self.preempt_first, self.always = real, fail_first, preempt_first, always
        self.doomed: dict[str, JobState] = {}
        self.submits: list[tuple[int, int]] = []

    def submit(self, job: ShardJob) -> str:
        self.submits.append((job.shard, job.attempt))
        if job.shard in self.always:
            return f"always-fails-{job.name}"
        jid = self.real.submit(job)
        if job.attempt == 1 and job.shard in self.fail_first:
            self.doomed[jid] = JobState.FAILED
        if job.attempt == 1 and job.shard in self.preempt_first:
            self.doomed[jid] = JobState.PREEMPTED
        return jid

    def status(self, job_id: str) -> JobStatus:
        if job_id.startswith("always-fails-"):
            return JobStatus(JobState.FAILED, "injected: node lost")
        if job_id in self.doomed:
            self.real.cancel(job_id)
            return JobStatus(self.doomed[job_id], "injected")
        return self.real.status(job_id)

    def cancel(self, job_id: str) -> None:
        if not job_id.startswith("always-fails-"):
            self.real.cancel(job_id)


@pytest.fixture()
def host(tmp_path: Path, model_dir: Path) -> Iterator[EmbeddedHost]:  # noqa: F811
    with EmbeddedHost(APP_DIR, tmp_path / "host", workers=4, env=service_env(tmp_path, model_dir)) as h:
        yield h
    sv.override(compute=None)


def _submit(host: EmbeddedHost, body: dict) -> dict:
    r = requests.post(f"{host.base_url}/api/detections", json=body, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()


def test_retries_and_a_shard_that_always_fails(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    flaky = FlakyCompute(compute_from_settings(sv.settings()), fail_first={0}, preempt_first={1}, always={2})
    sv.override(compute=flaky)
    mgmt = _submit(host, {"input_container_sas": dataset.root.as_uri(), "caller": "alice"})
    doc = follow(mgmt["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Completed", doc
    out = doc["output"]
    assert out["failed_shards"] == 1 and out["images"] == len(dataset.files)
    assert (0, 2) in flaky.submits and (1, 2) in flaky.submits and (2, 3) in flaky.submits
    assert (3, 2) not in flaky.submits
    det = result(host.base_url, doc)
    failed_files = set(dataset.files[8:12])
    by = {e["file"]: e for e in det["images"]}
    for f in failed_files:
        assert by[f]["failure"].startswith("shard failed: failed: injected: node lost"), by[f]
        assert by[f].get("detections") is None
    good = [f for f in dataset.files if f not in failed_files]
    check_results({**det, "images": [by[f] for f in good]}, dataset, good)
    assert sorted(result(host.base_url, doc, "failed_images")) == sorted(failed_files | set(dataset.bad))


def _secrets(state: Path) -> dict:
    p = state / "secrets.json"
    return json.loads(p.read_text()) if p.exists() else {}


def test_cancel_mid_run_leaves_nothing_running(host: EmbeddedHost, dataset: Dataset,  # noqa: F811
                                               tmp_path: Path) -> None:
    # A SAS-shaped local URL is refused, so park a list secret via a real file list: the input is a folder.
    mgmt = _submit(host, {"input_container_sas": dataset.root.as_uri(), "caller": "bob"})
    rid = mgmt["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cs = requests.get(mgmt["statusQueryGetUri"], timeout=10).json().get("customStatus") or {}
        if cs.get("stage") == "scoring":
            break
        time.sleep(0.05)
    r = requests.post(f"{host.base_url}/api/detections/{rid}/cancel", json={"caller": "alice"}, timeout=30)
    assert r.status_code == 404  # only the owner may cancel
    r = requests.post(f"{host.base_url}/api/detections/{rid}/cancel", json={"caller": "bob"}, timeout=30)
    assert r.status_code == 202, r.text
    doc = follow(mgmt["statusQueryGetUri"], timeout=30)
    assert doc["runtimeStatus"] == "Terminated"
    st = requests.get(f"{host.base_url}/api/detections/{rid}", params={"caller": "bob"}, timeout=10).json()
    assert st["state"] == "canceled"
    real = sv.get().compute
    work = Path(tmp_path) / "work" / rid / "jobs"
    time.sleep(1.5)  # let in-flight activities and shard orchestrations see the cancel
    for receipt in work.glob("*.json") if work.exists() else []:
        job_id = json.loads(receipt.read_text())["job_id"]
        assert real.status(job_id).state not in (JobState.QUEUED, JobState.RUNNING), job_id
    assert not [k for k in _secrets(tmp_path) if rid in k]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_host(state: Path, env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedded", "--app-dir", str(APP_DIR), "--state", str(state / "host"),
         "--port", str(port), "--workers", "4"],
        env={**os.environ, **env, "PYTHONPATH": str(APP_DIR)}, cwd=APP_DIR,
        stdout=subprocess.DEVNULL, stderr=open(state / f"host-{port}.log", "ab"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/models", timeout=2)
            return proc
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("host did not start")


def test_host_killed_mid_run_then_restarted(tmp_path: Path, dataset: Dataset,  # noqa: F811
                                           model_dir: Path) -> None:  # noqa: F811
    env = service_env(tmp_path, model_dir, MDBATCH_SHARD_SIZE="2", MDBATCH_MAX_IN_FLIGHT="2")
    port = _port()
    proc = _start_host(tmp_path, env, port)
    try:
        r = requests.post(f"http://127.0.0.1:{port}/api/detections",
                          json={"input_container_sas": dataset.root.as_uri(), "caller": "alice"}, timeout=30)
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            cs = requests.get(f"http://127.0.0.1:{port}/api/detections/{rid}", params={"caller": "alice"},
                              timeout=10).json()
            if cs.get("shards_done", 0) >= 1:
                break
            time.sleep(0.1)
        assert cs["state"] == "running", cs
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        port = _port()
        proc = _start_host(tmp_path, env, port)
        doc = follow(f"http://127.0.0.1:{port}/runtime/webhooks/durabletask/instances/{rid}", timeout=180)
        assert doc["runtimeStatus"] == "Completed", doc
        det = result(f"http://127.0.0.1:{port}", doc)
        check_results(det, dataset)  # every image exactly once, boxes right
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_no_sas_left_behind(tmp_path: Path, dataset: Dataset, model_dir: Path, azurite) -> None:  # noqa: F811
    """A job read through a real SAS (Azurite): the signature is nowhere in state, status or logs."""
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = f"imgs{int(time.time() * 1000) % 10**9}"
    cc = svc.create_container(container)
    for f in dataset.files[:6]:
        cc.upload_blob(f, (dataset.root / f).read_bytes())
    from datetime import UTC, datetime, timedelta

    sas = generate_container_sas(azurite.account_name, container, account_key=azurite.account_key,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    sig = next(p for p in sas.split("&") if p.startswith("sig=")).split("=", 1)[1]
    env = service_env(tmp_path, model_dir, MDBATCH_ALLOW_AZURITE="true",
                      AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string)
    log_path = tmp_path / "app.log"
    import logging

    handler = logging.FileHandler(log_path)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    from adapters.redaction import install_redaction

    install_redaction()  # what every entry point does; again after adding a handler
    try:
        with EmbeddedHost(APP_DIR, tmp_path / "host", workers=4, env=env) as h:
            r = requests.post(f"{h.base_url}/api/detections", timeout=30, json={
                "input_container_sas": f"{azurite.blob_endpoint}/{container}?{sas}", "caller": "alice"})
            assert r.status_code == 202, r.text
            doc = follow(r.json()["statusQueryGetUri"])
            assert doc["runtimeStatus"] == "Completed", doc
            check_results(result(h.base_url, doc), dataset, dataset.files[:6])
            assert sig not in json.dumps(doc)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    from urllib.parse import unquote as uq

    for p in tmp_path.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert sig.encode() not in data and uq(sig).encode() not in data, p

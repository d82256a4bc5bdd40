"""Azure ML backend: the real MLClient over a transport that answers like ARM and records requests."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from adapters_fixtures import FakeCredential, Recorded, make_settings, recording_transport

with warnings.catch_warnings():  # azure-ai-ml's schema modules warn at import (marshmallow 4)
    warnings.simplefilter("ignore")
    from azure.ai.ml import MLClient

from adapters.compute import JobState, JobStatus, ShardJob
from adapters.compute.azureml import AzureMLComputeBackend, map_aml_status, tree_hash
from adapters.settings import REPO_ROOT

SUB = "00000000-1111-2222-3333-444444444444"
SCOPE = (f"/subscriptions/{SUB}/resourceGroups/rg-mdb/providers/Microsoft.MachineLearningServices"
         "/workspaces/ws-mdb")
ACCOUNT_KEY = "c2VjcmV0a2V5" * 8
# azure-ai-ml 1.35 uses marshmallow APIs that warn on every job (de)serialization: third-party noise.
pytestmark = [
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning"),
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.ChangedInMarshmallow4Warning"),
]
AML_STATES = ["NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running", "Finalizing",
              "CancelRequested", "Completed", "Failed", "Canceled", "NotResponding", "Paused", "Unknown"]


class FakeArm:
    """Enough of the Azure ML ARM API for jobs, environments, models and code versions."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.conflict_on_put = False

    def __call__(self, req: Recorded) -> tuple[int, dict[str, str], Any]:
        path = unquote(urlsplit(req.url).path)
        assert req.headers.get("Authorization") == "Bearer fake-token"
        assert path.startswith(SCOPE + "/"), path
        rest = path[len(SCOPE) + 1:].split("/")
        if rest[0] == "jobs":
            name = rest[1]
            if req.method == "GET":
                job = self.jobs.get(name)
                if job is None:
                    return 404, {}, {"error": {"code": "UserError", "message": f"job {name} not found"}}
                return 200, {}, job
            if req.method == "PUT":
                if self.conflict_on_put or name in self.jobs:
                    self.jobs.setdefault(name, self._job(name, json.loads(req.body)))
                    return 409, {}, {"error": {"code": "UserError", "message": "A job with this name exists"}}
                self.jobs[name] = self._job(name, json.loads(req.body))
                return 201, {}, self.jobs[name]
            if req.method == "POST" and rest[2] == "cancel":
                if name not in self.jobs:
                    return 404, {}, {"error": {"code": "UserError", "message": "not found"}}
                self.cancelled.append(name)
                self.jobs[name]["properties"]["status"] = "CancelRequested"
                return 200, {}, b""
        if rest[0] in ("environments", "models") and rest[2:] == ["versions"]:
            version = {"environments": "3", "models": "2"}[rest[0]]
            item: dict[str, Any] = {"id": f"{SCOPE}/{rest[0]}/{rest[1]}/versions/{version}", "name": version,
                                    "properties": {}}
            if rest[0] == "models":
                item["properties"] = {"flavors": {}, "modelType": "custom_model",
                                      "modelUri": f"azureml://datastores/models/paths/{rest[1]}/"}
            return 200, {}, {"value": [item]}
        if rest[0] == "codes" and req.method == "GET":
            return 200, {}, {"id": f"{SCOPE}/codes/{rest[1]}/versions/{rest[3]}", "name": rest[3],
                             "properties": {"codeUri": f"https://acct.blob.core.windows.net/code/{rest[3]}"}}
        return 400, {}, {"error": {"code": "BadRequest", "message": f"unexpected {req.method} {path}"}}

    @staticmethod
    def _job(name: str, body: dict[str, Any]) -> dict[str, Any]:
        job = json.loads(json.dumps(body))
        job.update(id=f"{SCOPE}/jobs/{name}", name=name,
                   type="Microsoft.MachineLearningServices/workspaces/jobs")
        job["properties"]["status"] = "NotStarted"
        return job


def _backend(tmp_path: Path, **overrides: Any) -> tuple[AzureMLComputeBackend, FakeArm, Any]:
    arm = FakeArm()
    transport, adapter = recording_transport(arm)
    ml = MLClient(FakeCredential(), SUB, "rg-mdb", "ws-mdb", transport=transport, retry_total=0)
    conn = (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};"
            "EndpointSuffix=core.windows.net")
    settings = make_settings(
        tmp_path, compute_backend="azureml", aml_subscription_id=SUB, aml_resource_group="rg-mdb",
        aml_workspace="ws-mdb", aml_compute="gpu-t4", key_vault_url="https://mdb-kv.vault.azure.net",
        storage_connection_string=conn, aml_identity_client_id="cid-1234", **overrides,
    )
    return AzureMLComputeBackend(settings, ml_client=ml), arm, adapter


JOB = ShardJob(request_id="3f2a00000000", shard=12, attempt=2,
               manifest_url="https://acct.blob.core.windows.net/work/3f2a00000000/shards/00012.json",
               output_url="https://acct.blob.core.windows.net/work/3f2a00000000/results/00012.json",
               model="MDV5A", threshold=0.005, checkpoint_every=200, batch_size=8)


def test_submit_builds_the_job_request(tmp_path: Path) -> None:
    backend, _, adapter = _backend(tmp_path, aml_datastore="work",
                                     aml_datastore_url="https://acct.blob.core.windows.net/work")
    assert backend.submit(JOB) == JOB.name == "mdb-3f2a00000000-s00012-a2"
    puts = [r for r in adapter.requests if r.method == "PUT"]
    assert len(puts) == 1 and urlsplit(puts[0].url).path == f"{SCOPE}/jobs/{JOB.name}"
    props = json.loads(puts[0].body)["properties"]
    assert props["jobType"] == "Command"
    assert props["command"] == (
        "python -m scoring --model ${{inputs.model}}/MDV5A.onnx --input ${{inputs.manifest}} "
        "--output ${{outputs.result}}/00012.json --threshold 0.005 --checkpoint-every 200 --batch-size 8")
    assert props["computeId"] == f"{SCOPE}/computes/gpu-t4"
    assert props["environmentId"] == f"{SCOPE}/environments/mdbatch-onnx-gpu/versions/3"
    code_version = tree_hash(REPO_ROOT / "scoring")[:16]
    assert props["codeId"] == f"{SCOPE}/codes/mdbatch-scoring/versions/{code_version}"
    assert props["inputs"]["model"] == {"uri": f"{SCOPE}/models/MDV5A/versions/2", "mode": "ReadOnlyMount",
                                        "jobInputType": "custom_model"}
    assert props["inputs"]["manifest"] == {
        "uri": "azureml://datastores/work/paths/3f2a00000000/shards/00012.json", "mode": "Download",
        "jobInputType": "uri_file"}
    assert props["outputs"]["result"] == {
        "uri": "azureml://datastores/work/paths/3f2a00000000/results/", "mode": "ReadWriteMount",
        "jobOutputType": "uri_folder"}
    assert props["tags"] == {"mdbatch": "1", "request_id": "3f2a00000000", "shard": "12", "attempt": "2",
                             "model": "MDV5A"}
    assert props["identity"] == {"identityType": "Managed"}
    assert props["environmentVariables"] == {
        "MDBATCH_KEY_VAULT_URL": "https://mdb-kv.vault.azure.net",
        "AZURE_CLIENT_ID": "cid-1234", "DEFAULT_IDENTITY_CLIENT_ID": "cid-1234"}
    assert props["experimentName"] == "mdbatch"
    _assert_no_secret(adapter.requests)


def test_submit_without_datastore_passes_blob_urls(tmp_path: Path) -> None:
    backend, _, adapter = _backend(tmp_path)
    backend.submit(JOB)
    props = json.loads(next(r for r in adapter.requests if r.method == "PUT").body)["properties"]
    assert props["inputs"]["manifest"]["uri"] == JOB.manifest_url
    assert f"--output {JOB.output_url} " in props["command"]
    assert "outputs" not in props or not props["outputs"]
    _assert_no_secret(adapter.requests)


def test_submit_is_idempotent(tmp_path: Path) -> None:
    backend, arm, adapter = _backend(tmp_path)
    assert backend.submit(JOB) == backend.submit(JOB)
    assert len([r for r in adapter.requests if r.method == "PUT"]) == 1
    # a concurrent submit that won between our GET and PUT: the conflict resolves to the same job
    other = ShardJob(**{**JOB.__dict__, "attempt": 3})
    arm.conflict_on_put = True
    assert backend.submit(other) == other.name
    assert other.name in arm.jobs


@pytest.mark.parametrize("aml_state", AML_STATES)
def test_status_for_every_aml_state(tmp_path: Path, aml_state: str) -> None:
    backend, arm, _ = _backend(tmp_path)
    backend.submit(JOB)
    arm.jobs[JOB.name]["properties"]["status"] = aml_state
    expected = {
        "NotStarted": JobState.QUEUED, "Starting": JobState.QUEUED, "Provisioning": JobState.QUEUED,
        "Preparing": JobState.QUEUED, "Queued": JobState.QUEUED, "Running": JobState.RUNNING,
        "Finalizing": JobState.RUNNING, "CancelRequested": JobState.CANCELLED,
        "Completed": JobState.SUCCEEDED,
        "Failed": JobState.FAILED, "Canceled": JobState.CANCELLED, "NotResponding": JobState.RUNNING,
        "Paused": JobState.QUEUED, "Unknown": JobState.QUEUED,
    }[aml_state]
    assert backend.status(JOB.name).state == expected


def test_preemption_and_unknown_job(tmp_path: Path) -> None:
    backend, arm, _ = _backend(tmp_path)
    backend.submit(JOB)
    job = arm.jobs[JOB.name]["properties"]
    job["status"] = "Failed"
    job["properties"] = {"azureml.failureReason": "The low priority node was preempted"}
    st = backend.status(JOB.name)
    assert st.state == JobState.PREEMPTED and "preempted" in (st.reason or "")
    job["properties"] = {"azureml.failureReason": "UserError: exit code 1"}
    assert backend.status(JOB.name) == JobStatus(JobState.FAILED,
                                                 "azureml.failureReason: UserError: exit code 1")
    assert backend.status("mdb-nope0000-s00001-a1").state == JobState.FAILED
    assert map_aml_status("failed", "node Preempted").state == JobState.PREEMPTED  # case-insensitive
    assert map_aml_status("SomethingNew").state == JobState.QUEUED


def test_cancel(tmp_path: Path) -> None:
    backend, arm, _ = _backend(tmp_path)
    backend.submit(JOB)
    backend.cancel(JOB.name)
    assert arm.cancelled == [JOB.name]
    assert backend.status(JOB.name).state == JobState.CANCELLED
    backend.cancel("mdb-nope0000-s00001-a1")  # idempotent, no error


def _assert_no_secret(requests: list[Recorded]) -> None:
    blob = "\n".join(r.url + "\n" + r.body.decode("utf-8", "replace") for r in requests)
    assert ACCOUNT_KEY not in blob and "AccountKey" not in blob
    assert not re.search(r"sig=", blob) and "fake-token" not in blob
